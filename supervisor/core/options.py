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


def _check_seconds(name: str, value: float, *, allow_zero: bool = True) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number of seconds {bound}, got {value}")


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

    def __post_init__(self) -> None:
        if not self.command:
            raise ConfigError(
                "no training command given: put it after `--`, e.g. `supervise -- python train.py`"
            )
        if not self.command[0]:
            raise ConfigError("the training command is an empty string")
        _check_seconds("--grace-period", self.grace_period)
        _check_seconds("--failure-grace-period", self.failure_grace)
        _check_seconds("--shutdown-timeout", self.shutdown_timeout)
        _check_seconds("--degraded-deadline", self.degraded_deadline)
        if isinstance(self.max_restarts, bool) or self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be an integer ≥ 0, got {self.max_restarts}")
