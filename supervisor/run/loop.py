"""The supervisor loop: owns the threads and the inbox, feeds events to the policy, acts.

One thread decides: the main thread, here. Signals are never handled asynchronously: the
process's receiver (`supervisor.run.signals`, installed before start-up and kept until
exit) turns each into a byte in a pipe, which this loop reads as data (the tini model, in
Python). Other threads (log pumps, watchdogs) put events in a queue and write a byte to a
second pipe. The loop sleeps in `select` on both pipes until the next deadline in the policy
state, so it costs nothing while nothing happens.

`run` must be called on the main thread (Python delivers signals only there). It returns
the exit class; it raises nothing for failures of the child, which are results, not errors.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
from collections.abc import Mapping, Sequence
from typing import Protocol

from supervisor.child_contract import ENV_RESUME_STEP
from supervisor.core import outputs as out
from supervisor.core import policy
from supervisor.core.actions import (
    Action,
    AnswerRequests,
    Decided,
    Exit,
    KillTree,
    RequestCheckpoint,
    RequestStop,
    Respawn,
    SignalChild,
)
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.errors import SpawnError
from supervisor.core.events import (
    STOP_SIGNALS,
    ChildExited,
    ChildStarted,
    Event,
    Finding,
    Found,
    SignalReceived,
    SpawnFailed,
    Tick,
    Watchdog,
    signal_name,
)
from supervisor.core.exitcodes import ExitCode
from supervisor.outputs import Outputs
from supervisor.process import children, sentinel
from supervisor.process.logpump import Activity, LogPump, Matcher, SharedStream
from supervisor.run.plan import ENV_RUN_DIR, Plan
from supervisor.run.signals import Signals, install

DRAIN_TIMEOUT = 5.0  # seconds to wait for the pipes after the tree is gone


class Edges(Protocol):
    """What the loop drives besides the child: the session (`supervisor.run.session`)."""

    watchdogs: Sequence[Watchdog]  # for the whole run (the GPU watchdog)
    matcher: Matcher  # shown every line of the child's output
    activity: Activity  # when the child last wrote; shared with watchdogs

    def start(self, outputs: Outputs) -> None:
        """Once the outputs are open, before the child starts."""

    def attempt_env(self, attempt: int) -> Mapping[str, str]:
        """What attempt `attempt` (0 first) adds to the environment."""

    def attempt_watchdogs(self) -> Sequence[Watchdog]:
        """Fresh watchdogs for one attempt of the command."""

    def request_checkpoint(self, request: RequestCheckpoint) -> None:
        """Ask the training ranks to checkpoint."""

    def request_stop(self) -> None:
        """Ask the training ranks to exit by themselves (their checkpoint is committed)."""

    def answer_requests(self, answer: AnswerRequests) -> None:
        """Tell the operators who asked for a checkpoint (`CheckpointNow`) how it ended."""

    def exit_findings(self) -> Sequence[Finding]:
        """Evidence only readable once the child is gone, weighed before its exit."""

    def decided(self, verdict: Exit) -> None:
        """A finding or signal settled the class and the child is about to be stopped."""

    def settle(self, verdict: Exit) -> Exit:
        """The verdict to exit with, once the gang has been heard (PEER_LEFT, a bound)."""

    def close(self, code: ExitCode, outputs: Outputs) -> None:
        """After the tree is gone, before the verdict is emitted."""


class _Inbox:
    """Events from other threads, plus a pipe that wakes the loop's `select`."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def put(self, event: Event) -> None:
        self.queue.put(event)
        with contextlib.suppress(BlockingIOError):  # full: the loop is already due to wake
            os.write(self.write_fd, b"\0")

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class Supervisor:
    """One supervised run of a plan. Build it, call `run()` once."""

    def __init__(
        self, plan: Plan, edges: Edges, outputs: Outputs, clock: Clock | None = None
    ) -> None:
        self.plan = plan
        self.edges = edges
        self.outputs = outputs
        self.clock = clock or SystemClock()
        self.state = policy.State()
        self._inbox = _Inbox()
        self._child: children.Spawned | None = None
        self._pumps: list[LogPump] = []
        self._attempt_watchdogs: Sequence[Watchdog] = ()
        self._relaunch: int | None = None  # attempt to start once the current event is done
        self._drained = True  # every attempt's output reached EOF
        self._exit: Exit | None = None
        self._orphans_reaped = 0

    # -------------------------------------------------------------------- the run

    def run(self) -> ExitCode:
        """Spawn, watch, decide, and clean up. Returns the class to exit with."""
        signals = install()  # a no-op where the CLI installed it first
        # Outlives a SIGKILL of supervise to take the tree down: every process of it carries
        # the run directory in its environment (attempt_env).
        guard = sentinel.start(f"{ENV_RUN_DIR}={self.plan.run_dir}")
        if guard is not None:
            children.spare(guard.pid)
        try:
            children.become_subreaper()
            for fd in (1, 2):  # where the pumps write: the container runtime's pipes
                children.widen_pipe(fd)
            self.edges.start(self.outputs)
            for watchdog in self.edges.watchdogs:
                watchdog.start(self._inbox.put, self.clock.monotonic)
            self._before_launch(signals)
            self._launch(0)
            while self._exit is None:
                self._wait_and_dispatch(signals)
                if self._relaunch is not None and self._exit is None:
                    self._launch(self._relaunch)
            code = self._finish(self._exit)
            if guard is not None:
                guard.disarm()  # the tree is gone; after an exception, the sentinel checks
            return code
        finally:  # the signal handlers stay: see `supervisor.run.signals`
            if guard is not None:
                guard.close()
            self._inbox.close()

    def _before_launch(self, signals: Signals) -> None:
        """Signals from start-up: a stop signal waits for the child (which it stops at
        once); one that would be forwarded has no child to go to, so it is ignored."""
        for signum in signals.drain():
            if signum in STOP_SIGNALS:
                signals.keep(signum)
            elif signum != signal.SIGCHLD:
                self.outputs.emit(out.SignalIgnored(signal=signal_name(signum)))

    def _launch(self, attempt: int) -> None:
        """Start attempt `attempt` of the command: spawn it and watch it."""
        self._relaunch = None
        event = self._spawn(attempt)
        self._apply(event)
        if isinstance(event, ChildStarted):
            self._start_pumps()
            self._attempt_watchdogs = self.edges.attempt_watchdogs()
            for watchdog in self._attempt_watchdogs:
                watchdog.start(self._inbox.put, self.clock.monotonic)

    def _retire_attempt(self) -> None:
        """Stop the attempt's watchdogs and drain its pumps (noting if output was cut off)."""
        for watchdog in self._attempt_watchdogs:
            watchdog.stop()
        self._attempt_watchdogs = ()
        drained = all([pump.join(DRAIN_TIMEOUT) for pump in self._pumps])
        self._pumps = []
        self._drained = self._drained and drained

    def _spawn(self, attempt: int) -> Event:
        mine = self.edges.attempt_env(attempt)
        env = {**os.environ, **mine}
        if ENV_RESUME_STEP not in mine:  # starting fresh: never an outer run's step
            env.pop(ENV_RESUME_STEP, None)
        now = self.clock.monotonic()
        try:
            self._child = children.spawn(self.plan.command, env)
        except SpawnError as err:
            return SpawnFailed(str(err), now)
        resume = mine.get(ENV_RESUME_STEP)
        self.outputs.emit(
            out.Started(
                command=self.plan.command,
                attempt=attempt + 1,
                resume_step=int(resume) if resume else None,
            )
        )
        return ChildStarted(self._child.pid, now)

    def _start_pumps(self) -> None:
        assert self._child is not None
        for name, source, sink in (
            ("stdout", self._child.stdout, 1),
            ("stderr", self._child.stderr, 2),
        ):
            pump = LogPump(
                name,
                source,
                sink,
                stream=self.outputs.stderr if sink == 2 else SharedStream(),
                activity=self.edges.activity,
                monotonic=self.clock.monotonic,
                matcher=self.edges.matcher,
                on_finding=lambda f: self._inbox.put(Found(f, self.clock.monotonic())),
                on_sink_lost=lambda n, e: self.outputs.emit(out.OutputLost(stream=n, error=str(e))),
            )
            pump.start()
            self._pumps.append(pump)

    def _wait_and_dispatch(self, signals: Signals) -> None:
        timeout = None
        if signals.pending:  # read during start-up or a restart's preparation
            timeout = 0.0
        elif self.state.deadline is not None:
            timeout = max(0.0, self.state.deadline - self.clock.monotonic())
        readable, _, _ = select.select([signals.read_fd, self._inbox.read_fd], [], [], timeout)
        now = self.clock.monotonic()
        if signals.pending or signals.read_fd in readable:
            for signum in signals.drain():
                if signum == signal.SIGCHLD:
                    self._reap(now)
                else:
                    self._apply(SignalReceived(signum, now))
        if self._inbox.read_fd in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._inbox.read_fd, 4096)
            self._dispatch_inbox()
        if self.state.deadline is not None and self.clock.monotonic() >= self.state.deadline:
            self._apply(Tick(self.clock.monotonic()))

    def _dispatch_inbox(self) -> None:
        while not self._inbox.queue.empty():
            self._apply(self._inbox.queue.get_nowait())

    def _reap(self, now: float) -> None:
        for pid, status in children.reap():
            if self._child is not None and pid == self._child.pid:
                self._child.popen.returncode = status.exit_status or -(status.signal or 0)
                children.release_terminal(self._child)
                # The child's last words decide its class ("Watchdog caught collective
                # operation timeout", then SIGABRT): take the rest of the tree down so the
                # pipes reach EOF, let the pumps finish, and weigh their findings first.
                # The attempt's watchdogs end with it (a backoff is not a silence or a hang).
                children.kill_tree()
                self._retire_attempt()
                self._dispatch_inbox()
                for finding in self.edges.exit_findings():
                    self._apply(Found(finding, now))
                self._apply(ChildExited(status, now))
            else:
                self._orphans_reaped += 1

    # ------------------------------------------------------------------ actions

    def _apply(self, event: Event) -> None:
        if self._exit is not None:
            return
        self.state, actions = policy.step(self.plan.policy, self.state, event)
        for action in actions:
            self._execute(action)

    def _execute(self, action: Action) -> None:
        match action:
            case out.Output():
                self.outputs.emit(action)
            case SignalChild(signum=signum):
                if self._child is not None and self._child.popen.returncode is None:
                    children.send(self._child.pid, signum)
            case KillTree():
                killed = children.kill_tree()
                if killed:
                    self.outputs.emit(out.TreeKilled(processes=killed))
            case RequestCheckpoint():
                self.edges.request_checkpoint(action)
            case RequestStop():
                self.edges.request_stop()
            case AnswerRequests():
                self.edges.answer_requests(action)
            case Decided(code=code, reason=reason, evidence=evidence):
                self.edges.decided(Exit(code, reason, evidence))
            case Respawn(attempt=attempt):
                self._relaunch = attempt
            case Exit():
                self._exit = action

    # ------------------------------------------------------------------- finish

    def _finish(self, verdict: Exit) -> ExitCode:
        for watchdog in self.edges.watchdogs:
            watchdog.stop()
        children.kill_tree()
        children.reap()
        children.release_terminal(self._child)
        self._retire_attempt()  # already done if the child exited; not after a spawn failure
        verdict = self.edges.settle(verdict)
        self.edges.close(verdict.code, self.outputs)
        self.outputs.emit(
            out.Exited(
                verdict.code,
                verdict.reason,
                verdict.evidence,
                orphans_reaped=self._orphans_reaped,
                output_drained=self._drained,
            )
        )
        return verdict.code
