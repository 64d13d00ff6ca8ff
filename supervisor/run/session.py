"""A run's resources, opened from its plan: the edges the loop drives.

`Session.open(plan)` makes the shared-memory channel the training ranks beat into, the
stacks directory, the GPU watchdog (absent without NVML, said in a note), loads the hang
calibration, and resolves the step the first attempt resumes from. What the loop needs
from it is the `Edges` protocol in `supervisor.run.loop`: watchdogs for the whole run and
for each attempt, each attempt's environment, checkpoint requests, the evidence that is
only readable once the child is gone, the gang's say in the verdict (`decided`, `settle`,
through this pod's `Member` of the run ledger, when there is one), and `close`.

Operators' checkpoint requests (`supervise checkpoint-now`) arrive through the run
directory's `requests/` folder (`supervisor.run.requests`), watched for the whole run; the
session writes their answers there.

`close` persists what should outlive the run (the hang calibration) and removes the run
directory unless it holds evidence (stack dumps, Flight Recorder files): then it is kept,
said in a `run_dir_kept` event, and bounded with the others (`supervisor.run.rundir`).

Layer: L3, next to the loop; it is the one place that knows which edges a run uses.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from supervisor.channel import Channel
from supervisor.child_contract import ENV_RESTART_COUNT, ENV_RESUME_STEP
from supervisor.core import outputs as out
from supervisor.core.actions import AnswerRequests, Exit, RequestCheckpoint
from supervisor.core.classify import worker_error_finding
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.errors import SuperviseError
from supervisor.core.events import Finding, Source, Urgency, Watchdog
from supervisor.core.exitcodes import ExitCode
from supervisor.core.matchers import DEFAULT_MATCHER
from supervisor.hang import stacks
from supervisor.hang.state import load_calibration, save_calibration
from supervisor.hang.watchdog import HangWatcher, LogSilenceWatcher
from supervisor.outputs import Outputs
from supervisor.process.logpump import Activity, Matcher
from supervisor.process.torchrun_errorfile import read_error_file
from supervisor.run import requests, rundir
from supervisor.run.plan import Plan
from supervisor.watch.handshake import (
    HandshakeWatcher,
    publish_attempt,
    publish_request,
    publish_stop,
)
from supervisor.watch.live import LiveView
from supervisor.watch.phases import PhaseClock
from supervisor.watch.sample import Watcher
from supervisor.watch.sampler import Sampler
from supervisor.watch.steptime_watchdog import StepTimeWatcher

if TYPE_CHECKING:  # the gang's machinery is imported only by a run that has a ledger
    from supervisor.run.gang import Member, VerdictFacts


def make_run_dir() -> str:
    """A new 0700 directory, on memory-backed storage where there is one (the channel is
    hot), for one run's channel, stack dumps and Flight Recorder files. Old ones that were
    kept are pruned first (`supervisor.run.rundir`)."""
    return rundir.make_run_dir()


class Session:
    """The resources of one run. Build with `open`; the loop calls the rest."""

    matcher: Matcher = DEFAULT_MATCHER

    def __init__(
        self,
        plan: Plan,
        channel: Channel,
        activity: Activity,
        *,
        gpu_watchdog: Watchdog | None,
        resume: Callable[[], int | None] | None,
        notes: Sequence[str] = (),
        member: Member | None = None,
        live: LiveView | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.plan = plan
        self.clock = clock or SystemClock()
        self.live = live  # fed by every attempt's sampler, for the metrics endpoint
        self.channel = channel
        self.activity = activity
        self.watchdogs: tuple[Watchdog, ...] = (
            *((gpu_watchdog,) if gpu_watchdog else ()),
            requests.RequestWatcher(plan.run_dir),
        )
        self.member = member
        self._resume = resume
        self._notes = list(notes)
        self._outputs: Outputs | None = None
        calibration = None
        if plan.calibration_path is not None:
            calibration, note = load_calibration(plan.calibration_path, plan.hang.calibration)
            if note:
                self._notes.append(note)
        self._collect = functools.partial(
            _collect,
            stacks_dir=plan.stacks_dir,
            run_dir=plan.run_dir,
            timeout=plan.hang.stack_timeout,
        )
        self.hang = HangWatcher(plan.hang, calibration, collect_stacks=self._collect)
        self.phases = PhaseClock()  # replaced for every attempt, by `attempt_env`
        # StorageError: INFRA_FAILED before anything starts.
        self.resume_step = resume() if resume is not None else None

    @classmethod
    def open(
        cls,
        plan: Plan,
        activity: Activity,
        *,
        gpu_watchdog: Watchdog | None = None,
        resume: Callable[[], int | None] | None = None,
        notes: Sequence[str] = (),
        member: Member | None = None,
        live: LiveView | None = None,
        clock: Clock | None = None,
    ) -> Session:
        """Create the channel and the stacks directory inside `plan.run_dir`.

        Raises `ConfigError` when the channel cannot be created, and `StorageError` when
        the checkpoint storage cannot be read to find the step to resume from.
        """
        os.mkdir(plan.stacks_dir, 0o700)
        requests.make_folder(plan.run_dir)
        channel = Channel.create(plan.channel_path)
        try:
            return cls(
                plan,
                channel,
                activity,
                gpu_watchdog=gpu_watchdog,
                resume=resume,
                notes=notes,
                member=member,
                live=live,
                clock=clock,
            )
        except BaseException:
            channel.close()
            raise

    # -------------------------------------------------------------- what the loop calls

    def start(self, outputs: Outputs) -> None:
        """Say, once the outputs are open, what the session had to work around."""
        self._outputs = outputs
        for note in self._notes:
            outputs.emit(out.Note(message=note))

    def say(self, note: str) -> None:
        """A note from any thread, once the outputs are open (kept until then)."""
        if self._outputs is None:
            self._notes.append(note)
        else:
            self._outputs.emit(out.Note(message=note))

    def attempt_env(self, attempt: int) -> dict[str, str]:
        """What attempt `attempt` (0 first) adds to the environment: the plan's variables,
        its restart count and the step to resume from.

        The first attempt's step was resolved by `open`, which raised if storage could not
        be read. A restart looks again, since the failed attempt may have committed newer
        steps; if storage fails now, the previous answer stands.
        """
        if attempt > 0 and self._resume is not None:
            with contextlib.suppress(SuperviseError, OSError, ValueError):
                self.resume_step = self._resume()
        step = self.resume_step
        publish_attempt(self.channel, step, attempt)
        # The attempt's clock starts here, as its ledger record's wall time does (read next,
        # first thing in `begin`): progress offsets are measured from both alike.
        self.phases = PhaseClock(self.clock.monotonic())  # fed once the child started
        if self.member is not None:
            self.member.begin(attempt + 1, step)
        env = {**self.plan.env, ENV_RESTART_COUNT: str(attempt)}
        if step is not None:
            env[ENV_RESUME_STEP] = str(step)
        return env

    def attempt_watchdogs(self) -> list[Watchdog]:
        """Fresh watchdogs for one attempt: one sampler of the channel feeding the watchers
        (the hang watcher carries what the last attempt learnt)."""
        plan = self.plan
        self.hang = HangWatcher(plan.hang, self.hang.calibration, collect_stacks=self._collect)
        watchers: list[Watcher] = [
            self.hang,
            HandshakeWatcher(),
            StepTimeWatcher(plan.pace),
            self.phases,
        ]
        if self.live is not None:
            self.live.begin(self.phases)
            watchers.append(self.live)
        if plan.hang.log_silence_timeout is not None:
            timeout = plan.hang.log_silence_timeout
            watchers.append(LogSilenceWatcher(lambda: self.activity.last_output, timeout))
        watchdogs: list[Watchdog] = [Sampler(self.channel, watchers)]
        if self.member is not None and self.member.identity.multi_node:
            watchdogs.append(self.member.watchdog(plan.options.grace_period))
        return watchdogs

    def request_checkpoint(self, request: RequestCheckpoint) -> None:
        publish_request(self.channel, request)

    def request_stop(self) -> None:
        publish_stop(self.channel)

    def answer_requests(self, answer: AnswerRequests) -> None:
        """Tell the operators who asked for a checkpoint how it ended."""
        requests.answer(self.plan.run_dir, answer)

    def exit_findings(self) -> list[Finding]:
        """What explains the exit: ranks that said they died of a checkpoint storage
        failure, and the root cause torchrun recorded, so its "exit 1 for everything" is
        never the class."""
        return [*self._storage_failures(), *self._torchrun_error()]

    def _storage_failures(self) -> list[Finding]:
        return [
            Finding(
                Source.CHECKPOINT,
                "storage_failed",
                f"Rank {slot.rank} died of a checkpoint storage failure (StorageError; its "
                "traceback is on stderr).",
                ExitCode.INFRA_FAILED,
                Urgency.ON_EXIT,
                {"rank": slot.rank},
            )
            for slot in self.channel.read_slots()
            if slot.storage_failed
        ]

    def _torchrun_error(self) -> list[Finding]:
        if self.plan.error_file is None:
            return []
        try:
            with open(self.plan.error_file, encoding="utf-8") as f:
                text = f.read()
            os.unlink(self.plan.error_file)  # the next attempt must not read it again
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

    def decided(self, verdict: Exit) -> None:
        """A cause stopped the run: the gang hears it before the child is stopped."""
        if self.member is not None:
            self.member.decided(verdict, self._facts())

    def settle(self, verdict: Exit) -> Exit:
        """The verdict after the gang was heard (PEER_LEFT, the node's bound); recorded."""
        if self.member is None:
            return verdict
        return self.member.settle(verdict, self._facts())

    def _facts(self) -> VerdictFacts:
        from supervisor.run.gang import facts

        phases = self.phases  # `current`: a restart in place leaves the last attempt's slots
        return facts(phases.current(self.channel.read_slots()), phases.times(), phases.progress())

    def close(self, code: ExitCode, outputs: Outputs) -> None:
        """Persist the calibration, release the channel, tidy the run directory."""
        path = self.plan.calibration_path
        if path is not None and self.hang.calibration.intervals:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                save_calibration(path, self.hang.calibration)
            except OSError as err:
                outputs.emit(out.CalibrationNotSaved(path=path, error=str(err)))
        self.channel.close()
        evidence = rundir.holds_evidence(self.plan.run_dir)
        rundir.release(self.plan.run_dir, remove=not evidence)
        if evidence:
            outputs.emit(out.RunDirKept(path=self.plan.run_dir, holds=tuple(evidence)))


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
