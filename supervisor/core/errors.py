"""Every exception supervise raises on purpose, in one hierarchy.

Each message says what went wrong and what to do next, because it reaches a person through a
pod log or a termination message. `SuperviseError.exit_code` is the class the CLI exits with
when the error ends a run.
"""

from __future__ import annotations

from supervisor.core.exitcodes import ExitCode


class SuperviseError(Exception):
    """Base class. `str(err)` is one line a user can act on."""

    exit_code: ExitCode = ExitCode.TRAINING_FAILED


class ConfigError(SuperviseError, ValueError):
    """A flag, environment variable, file or URL is invalid. Nothing was started."""

    exit_code = ExitCode.CONFIG_ERROR


class SpawnError(ConfigError):
    """The training command could not be executed (not found, not executable)."""


class DeviceError(SuperviseError):
    """A GPU could not be queried in a way that itself indicates a failed device."""

    exit_code = ExitCode.DEVICE_FAILED


class StorageError(SuperviseError):
    """Checkpoint storage failed or is unreachable. Committed steps are left intact."""

    exit_code = ExitCode.INFRA_FAILED


class CheckpointError(SuperviseError):
    """A checkpoint is missing, corrupt, or would overwrite a different committed step."""

    exit_code = ExitCode.TRAINING_FAILED


class Interrupted(SuperviseError):
    """A stop signal (SIGTERM, SIGINT) arrived before the command started: the pod was told
    to leave, which is PREEMPTED, not a failure of anything."""

    exit_code = ExitCode.PREEMPTED

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum} arrived before the command started")
        self.signum = signum
