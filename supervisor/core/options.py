"""Run options: frozen, validated by raising, never silently rewritten.

Every field has a command-line flag and a `SUPERVISE_*` environment twin (declared in
`supervisor.cli`), because Kubernetes users configure through `env:`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from supervisor.core.errors import ConfigError

DEFAULT_TERMINATION_LOG = "/dev/termination-log"

# Kubernetes gives a pod 30 s between SIGTERM and SIGKILL by default
# (terminationGracePeriodSeconds). 25 s for the child leaves supervise 5 s to kill the
# tree, drain the pipes and write the termination message before the kubelet's SIGKILL.
DEFAULT_GRACE_PERIOD = 25.0
# When supervise stops a run itself (a hang, a failed GPU), the processes are stuck or
# broken: they rarely act on SIGTERM, and each second of waiting idles every GPU in the job.
DEFAULT_FAILURE_GRACE = 3.0
# Of the grace period after SIGTERM, what the trainer keeps for exiting once its checkpoint
# is committed; the checkpoint gets the rest (20 s of the default 25 s).
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
# A degraded GPU has no kubelet deadline, but a checkpoint that never comes must not keep a
# sick device busy forever.
DEFAULT_DEGRADED_DEADLINE = 120.0


# The longest wait a run takes: a day. Larger values mean nothing to a pod, and some (1e10 s)
# overflow the timeouts of `select` and `threading`.
MAX_SECONDS = 86_400.0
MAX_RESTARTS = 1000


def _check_seconds(name: str, value: float, high: float = MAX_SECONDS) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and 0 <= value <= high):
        raise ConfigError(f"{name} must be seconds in [0, {high:g}], got {value}")


@dataclass(frozen=True)
class Options:
    """What one `supervise -- CMD` run needs to know.

    `command` is the training command, argv-style. `event_log` of None means stderr.
    """

    command: tuple[str, ...]
    grace_period: float = DEFAULT_GRACE_PERIOD
    termination_log: str = DEFAULT_TERMINATION_LOG
    event_log: str | None = None
    failure_grace: float = DEFAULT_FAILURE_GRACE
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    degraded_deadline: float = DEFAULT_DEGRADED_DEADLINE
    max_restarts: int = 0
    restart_on_training_failure: bool = False
    degrade_on_step_time: bool = False
    metrics_port: int | None = None  # None: no /metrics endpoint

    def __post_init__(self) -> None:
        if not self.command:
            raise ConfigError(
                "no training command given: put it after `--`, e.g. `supervise -- python train.py`"
            )
        if not self.command[0]:
            raise ConfigError("the training command is an empty string")
        _check_seconds("--grace-period", self.grace_period)
        _check_seconds("--failure-grace-period", self.failure_grace, 3600.0)
        _check_seconds("--shutdown-timeout", self.shutdown_timeout)
        _check_seconds("--degraded-deadline", self.degraded_deadline)
        if isinstance(self.max_restarts, bool) or not 0 <= self.max_restarts <= MAX_RESTARTS:
            raise ConfigError(
                f"--max-restarts must be an integer in [0, {MAX_RESTARTS}], got {self.max_restarts}"
            )
        if self.metrics_port is not None and (
            isinstance(self.metrics_port, bool) or not 1 <= self.metrics_port <= 65_535
        ):
            raise ConfigError(f"--metrics-port must be in [1, 65535], got {self.metrics_port}")
        if self.event_log is not None and not self.event_log.strip():
            raise ConfigError("--event-log is empty: give a file path, or `-` for stderr")
