"""Everything one supervised run needs, assembled from its options.

`open_session` builds, in order: a private run directory, the shared-memory channel the
training ranks beat into, the watchdogs (heartbeat hang detection, the optional log-silence
fallback, the GPU watchdog), the log matcher, and the child's environment. `Session.close`
persists what should outlive the run (the hang calibration) and removes the run directory
unless the run failed, when its stack dumps and Flight Recorder files are evidence.

Layer: L3, next to the loop; it is the one place that knows which edges a run uses.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from supervisor.channel import Channel
from supervisor.child_contract import (
    ENV_CHANNEL,
    ENV_RESTART_COUNT,
    ENV_RESUME_STEP,
    ENV_STACKS_DIR,
)
from supervisor.core.classify import worker_error_finding
from supervisor.core.errors import SuperviseError
from supervisor.core.events import Finding, Watchdog
from supervisor.core.exitcodes import ExitCode
from supervisor.core.matchers import DEFAULT_MATCHER
from supervisor.hang import stacks
from supervisor.hang.options import HangOptions
from supervisor.hang.state import load_calibration, save_calibration
from supervisor.hang.watchdog import HangWatcher, LogSilenceWatcher
from supervisor.k8s.launch import LaunchOverrides, torchrun_command
from supervisor.process.logpump import Activity
from supervisor.process.torchrun_errorfile import read_error_file
from supervisor.run.loop import Hooks
from supervisor.watch import steptime
from supervisor.watch.handshake import HandshakeWatcher, publish_attempt, publish_request
from supervisor.watch.sample import Watcher
from supervisor.watch.sampler import Sampler
from supervisor.watch.steptime_watchdog import StepTimeWatcher

ENV_RUN_DIR = "SUPERVISE_RUN_DIR"
CALIBRATION_FILE = "supervise-hang-calibration.json"

Emit = Callable[[str, Mapping[str, object]], None]


@dataclass
class Session:
    run_dir: str
    channel: Channel
    hooks: Hooks
    hang: HangWatcher
    calibration_path: str | None
    notes: list[str] = field(default_factory=list)
    resume: Callable[[], int | None] | None = None  # the latest committed step, if any
    error_file: str | None = None  # torchrun's root-cause error file, when launching it
    resume_step: int | None = None  # what the current attempt resumes from

    def launch_torchrun(
        self,
        nproc_per_node: int,
        command: Sequence[str],
        overrides: LaunchOverrides,
        grace_period: float,
    ) -> list[str]:
        """The torchrun argv for `command`; its env additions join the child's environment.

        Raises `ConfigError` when the topology cannot be derived from the environment.
        """
        env = dict(os.environ)
        env.setdefault("HOSTNAME", socket.gethostname())  # the Indexed Job derivation reads it
        self.error_file = os.path.join(self.run_dir, "torchrun-error.json")
        argv, additions = torchrun_command(
            nproc_per_node, command, env, overrides, self.error_file, grace_period=grace_period
        )
        self.hooks.extra_env = {**self.hooks.extra_env, **additions}
        return argv

    def exit_findings(self) -> list[Finding]:
        """The root cause torchrun recorded, so its "exit 1 for everything" is never the class."""
        if self.error_file is None:
            return []
        try:
            with open(self.error_file, encoding="utf-8") as f:
                text = f.read()
            os.unlink(self.error_file)  # the next attempt must not read it again
        except OSError:
            return []
        error = read_error_file(text)
        if error is None or error.torchrun_signalled:  # the echo of our own SIGTERM
            return []
        first_line = error.message.splitlines()[0] if error.message else ""
        return [
            worker_error_finding(
                error.message, error.as_evidence(), DEFAULT_MATCHER.match(first_line)
            )
        ]

    def attempt_env(self, attempt: int) -> dict[str, str]:
        """What attempt `attempt` (0 first) is told: its restart count and where to resume.

        The first attempt's step was resolved by `open_session`, which raised if storage
        could not be read. A restart looks again, since the failed attempt may have
        committed newer steps; if storage fails now, the previous answer stands.
        """
        if attempt > 0 and self.resume is not None:
            with contextlib.suppress(SuperviseError, OSError, ValueError):
                self.resume_step = self.resume()
        step = self.resume_step
        publish_attempt(self.channel, step, attempt)
        env = {ENV_RESTART_COUNT: str(attempt)}
        if step is not None:
            env[ENV_RESUME_STEP] = str(step)
        return env

    def start(self, emit: Emit) -> None:
        """Say, once the event log is open, what the session had to work around."""
        for note in self.notes:
            emit("note", {"message": note})

    def close(self, code: ExitCode, emit: Emit) -> None:
        """Persist the calibration, release the channel, tidy the run directory."""
        if self.calibration_path is not None and self.hang.calibration.intervals:
            try:
                os.makedirs(os.path.dirname(self.calibration_path), exist_ok=True)
                save_calibration(self.calibration_path, self.hang.calibration)
            except OSError as err:
                emit("calibration_not_saved", {"path": self.calibration_path, "error": str(err)})
        self.channel.close()
        if code is ExitCode.SUCCEEDED:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        else:
            emit("run_dir_kept", {"path": self.run_dir})


def _private_dir() -> str:
    """A 0700 directory on memory-backed storage where there is one (the channel is hot)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="supervise-", dir=base)


def open_session(
    hang_options: HangOptions,
    activity: Activity,
    *,
    state_dir: str | None = None,
    gpu_watchdog: Watchdog | None = None,
    resume: Callable[[], int | None] | None = None,
    pace: steptime.Config | None = None,
) -> Session:
    """Build the run's edges. Raises `ConfigError` when the channel cannot be created."""
    pace = pace or steptime.Config()
    run_dir = _private_dir()
    stacks_dir = os.path.join(run_dir, "stacks")
    os.mkdir(stacks_dir, 0o700)
    channel = Channel.create(os.path.join(run_dir, "channel"))

    calibration_path = os.path.join(state_dir, CALIBRATION_FILE) if state_dir else None
    notes: list[str] = []
    calibration = None
    if calibration_path is not None:
        calibration, note = load_calibration(calibration_path, hang_options.calibration)
        if note:
            notes.append(note)

    collect = functools.partial(
        _collect, stacks_dir=stacks_dir, run_dir=run_dir, timeout=hang_options.stack_timeout
    )
    hang = HangWatcher(hang_options, calibration, collect_stacks=collect)
    session = Session(run_dir, channel, Hooks(), hang, calibration_path, notes, resume)
    if resume is not None:
        session.resume_step = resume()  # StorageError: INFRA_FAILED before anything starts

    def attempt_watchdogs() -> list[Watchdog]:
        # One sampler per attempt feeds fresh watchers; the hang watcher carries what the
        # last attempt's learnt.
        session.hang = HangWatcher(hang_options, session.hang.calibration, collect_stacks=collect)
        watchers: list[Watcher] = [session.hang, HandshakeWatcher(), StepTimeWatcher(pace)]
        if hang_options.log_silence_timeout is not None:
            timeout = hang_options.log_silence_timeout
            watchers.append(LogSilenceWatcher(lambda: activity.last_output, timeout))
        return [Sampler(channel, watchers)]

    env = {
        ENV_CHANNEL: channel.path,
        ENV_STACKS_DIR: stacks_dir,
        ENV_RUN_DIR: run_dir,
        **stacks.child_env_defaults(run_dir),
    }
    session.hooks = Hooks(
        watchdogs=[gpu_watchdog] if gpu_watchdog is not None else [],
        attempt_watchdogs=attempt_watchdogs,
        matcher=DEFAULT_MATCHER,
        extra_env=env,
        attempt_env=session.attempt_env,
        request_checkpoint=lambda request: publish_request(channel, request),
        exit_findings=session.exit_findings,
        activity=activity,
        on_start=session.start,
        on_exit=session.close,
    )
    return session


def _collect(
    pids_by_rank: Mapping[int, int],
    stalled: list[int],
    *,
    stacks_dir: str,
    run_dir: str,
    timeout: float,
) -> dict[str, object]:
    with contextlib.suppress(OSError):
        return stacks.hang_evidence(pids_by_rank, stalled, stacks_dir, run_dir, timeout)
    return {}
