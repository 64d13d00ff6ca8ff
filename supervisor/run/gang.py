"""This pod's membership of the gang: its records in the run ledger, and the peers' it reads.

The decisions are pure and live in `supervisor.gang`; this module does their I/O, each
operation bounded by `GangOptions.io_timeout` on a helper thread, so a silent object store
can delay a verdict but never hang the pod:

- `begin(attempt)`: list the ledger (what was there before this attempt joined the gang is
  an earlier incident), then write the attempt-start record.
- `decided(verdict)`: the policy stopped the run for a cause (a failed GPU, an eviction):
  write the verdict now, before the tree is stopped, so that peers read it while they are
  still failing. The node's bound on free exits applies first.
- `watchdog()`: while training runs, a thread that lists the peers' verdicts every
  `poll_interval` and reports a PEER_LEFT finding when one explains a failure of the gang.
  A peer that leaves gracefully (PREEMPTED, DEVICE_DEGRADED) checkpoints first, through the
  trainers' agreement; this pod then stops on its own, so the finding waits one grace
  period before it stops anything.
- `settle(verdict)`: at exit, turn a symptom into PEER_LEFT when a peer holds the cause
  (looking for up to `peer_wait` seconds), keep exactly one counted class per incident
  through the create-only claim, count a node's device verdict past its bound, and write
  the verdict record.

Peer attribution and the gang stop need peers: they are on where the pod has some (more
than one node, or an Indexed Job index without a count). The records and the node's bound
are kept on a single node too, where a Job can loop on a bad GPU just the same.

A failed ledger operation never changes a class on its own: the verdict stays what this
pod saw, and the failure is said once as a note. Threads: `begin`, `decided` and `settle`
run on the loop's thread; the watchdog on its own.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from supervisor.channel import Slot
from supervisor.core.actions import Exit
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.events import Finding, Found, Report, Urgency, Watchdog
from supervisor.core.exitcodes import ExitCode, JobAction
from supervisor.gang import attribution, node_history, records, roles
from supervisor.gang.options import EARLY_IO_TIMEOUT, GangOptions, Identity
from supervisor.gang.records import AttemptStart, LedgerView, PhaseTimes, Role, Verdict
from supervisor.watch.phases import StepProgress, Times

T = TypeVar("T")


class LedgerStore(Protocol):
    """The ledger's objects: names are relative (`verdicts/<id>.json`). Raises on failure."""

    url: str

    def list(self, folder: str | None = None) -> list[str]: ...

    def read(self, name: str) -> bytes | None: ...

    def create(self, name: str, data: bytes) -> bool:
        """Write `data` at `name` unless something is there; False when it was."""


class IoTimeout(Exception):
    """A ledger operation did not finish within its bound."""


def bounded(call: Callable[[], T], timeout: float) -> T:
    """`call()` on a daemon thread; its result, its exception, or `IoTimeout`."""
    box: list[object] = []

    def run() -> None:
        try:
            box.append((True, call()))
        except BaseException as err:  # handed to the caller
            box.append((False, err))

    thread = threading.Thread(target=run, name="ledger-io", daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        raise IoTimeout(f"the ledger did not answer within {timeout:g} s")
    ok, value = box[0]  # type: ignore[misc]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


class Member:
    """This pod in the gang. Build one per run; `begin` once per attempt."""

    def __init__(
        self,
        ledger: LedgerStore,
        identity: Identity,
        options: GangOptions | None = None,
        *,
        clock: Clock | None = None,
        note: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.ledger = ledger
        self.identity = identity
        self.options = options or GangOptions()
        self.clock = clock or SystemClock()
        self.note = note  # where a failed ledger operation is said, once per kind
        self._noted: set[str] = set()
        self._cache: dict[str, bytes | None] = {}
        self.me: AttemptStart | None = None
        self.seen_at_start: frozenset[str] | None = None
        self._written: Verdict | None = None  # this attempt's verdict, once written
        self._counted: Finding | None = None  # the bound that counted an early verdict
        self._deadline: float | None = None  # monotonic: no ledger operation after it

    # ---------------------------------------------------------------------- the attempt

    def begin(self, attempt: int, resume_step: int | None) -> None:
        """Join the gang for attempt `attempt` (1 first): list, then write the start.

        The start's wall time is read first, before the ledger is listed: a verdict's
        progress offsets are measured from about then (`Session.attempt_env`)."""
        wall = self.clock.wall()
        ident = self.identity
        names = self._io("list the ledger", lambda: self.ledger.list())
        self.seen_at_start = frozenset(names) if names is not None else None
        # A Job's pod never restarts its container (restartPolicy: Never), and the downward
        # API does not expose the count where it does: the nonce keeps ids unique anyway.
        restart_count = 0
        self.me = AttemptStart(
            id=records.attempt_id(ident.pod, restart_count, attempt, records.new_nonce()),
            pod=ident.pod,
            wall=wall,
            node_rank=ident.node_rank,
            namespace=ident.namespace,
            node=ident.node,
            pod_uid=ident.pod_uid,
            restart_count=restart_count,
            attempt=attempt,
            resume_step=resume_step,
            gang=ident.gang,
            incarnation=ident.incarnation,
            nnodes=ident.nnodes,
        )
        self._written = self._counted = None
        me = self.me
        self._io(
            "write the attempt's start",
            lambda: self.ledger.create(records.attempt_name(me.id), records.encode(me)),
        )
        if ident.node is not None:
            # The node's history is read now, off the critical path, so that the bound a
            # failing GPU consults later fetches only what is new (records never change).
            prefetch = functools.partial(self.read, records.VERDICTS)
            threading.Thread(target=prefetch, name="ledger-prefetch", daemon=True).start()

    def watchdog(self, grace: float = 0.0) -> Watchdog:
        """The gang stop, for this attempt; a graceful peer's verdict waits `grace` seconds
        (see the module docstring)."""
        return _GangStop(self, grace)

    def history_refusal(self) -> Finding | None:
        """For `--preflight`: a finding when this node has used up its free exits."""
        if self.identity.node is None:
            return None
        view = self.read(records.VERDICTS)
        if view is None:
            return None
        history = node_history.node_history((v for _, v in view.verdicts()), self.identity.node)
        return node_history.preflight_refusal(history, self.options.free_exits)

    # ----------------------------------------------------------------------- verdicts

    def decided(self, verdict: Exit, report: VerdictFacts) -> Exit:
        """A cause stopped the run: write its verdict before the tree is stopped.

        Returns the verdict the pod will exit with (the node's bound may count it)."""
        role = _role(verdict)
        if self.me is None or self._written is not None or role is not Role.CAUSE:
            return verdict
        if verdict.code.action is JobAction.COUNT:
            return verdict  # a counted cause claims its incident at exit, with the rest
        # The child is stopped only after this: a silent or slow object store may delay
        # it by two short budgets, one to read and one to write, never by the history's size.
        early = min(self.options.io_timeout, EARLY_IO_TIMEOUT)
        self._deadline = self.clock.monotonic() + early
        try:
            counted, bounded_from = self._bound(verdict)
            self._deadline = self.clock.monotonic() + early
            self._write(counted, role, report, bounded_from=bounded_from)
        finally:
            self._deadline = None
        if bounded_from is not None:
            self._counted = counted.evidence[0]
        return counted

    def settle(self, verdict: Exit, report: VerdictFacts) -> Exit:
        """The verdict to exit with, after the gang has been consulted; writes it.

        A cause written when it stopped the run is not written again: the exit keeps the
        node's bound, if it counted the verdict then. (A more severe local cause found after
        that, a fatal Xid during a degraded GPU's checkpoint, still decides the exit code;
        the ledger keeps the first, both uncounted device classes.)"""
        if self.me is None:
            return verdict
        if self._written is not None:
            self._write_ended(self._written, report)
            if self._counted is None:
                return verdict
            counted = self._counted
            return Exit(ExitCode.INFRA_FAILED, counted.summary, (counted, *verdict.evidence))
        role = _role(verdict)
        bounded_from = None
        if verdict.code in node_history.DEVICE_CLASSES:
            verdict, bounded_from = self._bound(verdict)
        # A pod the gang watchdog stopped is PEER_LEFT already; its finding names the peer.
        peer = attribution.peer_named(verdict.evidence)
        needs_peers = verdict.code not in (ExitCode.SUCCEEDED, ExitCode.PEER_LEFT)
        if bounded_from is None and needs_peers and self.identity.multi_node:
            decision = self._attribute(verdict, role)
            if isinstance(decision, attribution.PeerLeft):
                peer = decision.peer
                code, reason, evidence = attribution.attributed(
                    decision, verdict.code, verdict.reason, verdict.evidence
                )
                verdict = Exit(code, reason, evidence)
                role = Role.SYMPTOM
        self._write(verdict, role, report, bounded_from=bounded_from, peer=peer)
        return verdict

    def _attribute(self, verdict: Exit, role: Role | None) -> attribution.Decision:
        assert self.me is not None
        started = self.clock.monotonic()
        while True:
            view = self.read(records.VERDICTS, records.CLAIMS, skip=self.seen_at_start)
            if view is None:  # the ledger is unreadable: keep what this pod saw
                return attribution.Keep("the ledger could not be read")
            decision = attribution.decide(
                verdict.code,
                role,
                self.me,
                view,
                seen_at_start=self.seen_at_start,
                waited=self.clock.monotonic() - started,
                wait_limit=self.options.peer_wait,
                now_wall=self.clock.wall(),
            )
            if isinstance(decision, attribution.Wait):
                time.sleep(min(0.25, self.options.peer_wait))
                continue
            if isinstance(decision, attribution.TryClaim):
                claim = decision

                def create(claim: attribution.TryClaim = claim) -> bool:
                    return self.ledger.create(claim.name, records.encode(claim.claim))

                created = self._io("claim the incident", create)
                if created is None:
                    return attribution.Keep("the claim could not be written")
                if created:
                    return attribution.won_claim(decision.name)
                continue  # taken: the new claim names the holder
            return decision

    def _bound(self, verdict: Exit) -> tuple[Exit, str | None]:
        """The node's bound on free exits: past it, a device verdict is counted."""
        node = self.identity.node
        if node is None or self.me is None:
            return verdict, None
        view = self.read(records.VERDICTS)
        if view is None:
            return verdict, None
        history = node_history.node_history(
            (v for _, v in view.verdicts()), node, exclude=self.me.id
        )
        finding = node_history.bounded(verdict.code, history, self.options.free_exits)
        if finding is None:
            return verdict, None
        code, reason, evidence = node_history.counted_verdict(finding, verdict.evidence)
        return Exit(code, reason, evidence), verdict.code.name

    def _write(
        self,
        verdict: Exit,
        role: Role | None,
        report: VerdictFacts,
        *,
        bounded_from: str | None = None,
        peer: records.PeerRef | None = None,
    ) -> None:
        me = self.me
        assert me is not None
        record = Verdict(
            id=me.id,
            pod=me.pod,
            wall=self.clock.wall(),
            name=verdict.code.name,
            code=verdict.code.code,
            role=role,
            reason=verdict.reason,
            evidence=records.compact_evidence(f.as_dict() for f in verdict.evidence),
            node_rank=me.node_rank,
            namespace=me.namespace,
            node=me.node,
            gang=me.gang,
            incarnation=me.incarnation,
            started_wall=me.wall,
            last_steps=dict(report.last_steps),
            last_committed_step=report.last_committed_step,
            times=report.times,
            peer=peer,
            bounded_from=bounded_from,
            progress=report.progress,
        )
        self._written = record
        self._io(
            "write the verdict",
            lambda: self.ledger.create(records.verdict_name(me.id), records.encode(record)),
        )

    def _write_ended(self, early: Verdict, report: VerdictFacts) -> None:
        """The early verdict again, as of the exit: the report's end of the attempt."""
        record = records.Ended.of(
            early,
            wall=self.clock.wall(),
            last_steps=dict(report.last_steps),
            last_committed_step=report.last_committed_step,
            times=report.times,
            progress=report.progress,
        )
        self._io(
            "write the attempt's end",
            lambda: self.ledger.create(records.ended_name(record.id), records.encode(record)),
        )

    # -------------------------------------------------------------------------- reading

    def read(self, *folders: str, skip: frozenset[str] | None = None) -> LedgerView | None:
        """One read of the ledger's `folders` (all of them when none is named). Objects
        already read are not fetched again (they never change), nor those in `skip` (the
        names listed when this attempt began: an earlier incident's, never a peer's now).
        None when the ledger could not be listed within the bound."""
        names: list[str] = []
        for folder in folders or (None,):
            listed = self._io("list the ledger", lambda f=folder: self.ledger.list(f))
            if listed is None:
                return None
            names.extend(listed)
        skip = skip or frozenset()
        for name in names:
            if name not in self._cache and name not in skip:
                self._cache[name] = self._io("read a record", lambda n=name: self.ledger.read(n))
        return LedgerView.read({n: self._cache.get(n) for n in names})

    def _io(self, what: str, call: Callable[[], T]) -> T | None:
        timeout = self.options.io_timeout
        if self._deadline is not None:
            timeout = min(timeout, self._deadline - self.clock.monotonic())
            if timeout <= 0:
                return None  # out of time: the caller goes on with what it has
        try:
            return bounded(call, timeout)
        except Exception as err:
            if what not in self._noted:
                self._noted.add(what)
                self.note(f"run ledger at {self.ledger.url}: could not {what}: {err}")
            return None


@dataclass(frozen=True)
class VerdictFacts:
    """What a verdict records besides its class: progress and where the time went."""

    last_steps: Mapping[int, int]
    last_committed_step: int | None
    times: PhaseTimes = field(default_factory=PhaseTimes)
    progress: records.Progress | None = None  # None: not measured (a failed preflight)


def _role(verdict: Exit) -> Role | None:
    return roles.role_of(verdict.code, roles.deciding_finding(verdict.code, verdict.evidence))


class _GangStop:
    """A daemon thread that lists the peers' verdicts every `poll_interval` and reports
    PEER_LEFT, once, when one explains a failure of the gang. `stop` returns within a
    ledger operation's bound; a broken read is retried at the next poll."""

    name = "gang"

    def __init__(self, member: Member, grace: float) -> None:
        self._member = member
        self._grace = grace
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first_seen: dict[str, float] = {}

    def start(self, report: Report, clock_monotonic: Callable[[], float]) -> None:
        if self._thread is None:
            target = functools.partial(self._run, report, clock_monotonic)
            self._thread = threading.Thread(target=target, name="gang-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _run(self, report: Report, now: Callable[[], float]) -> None:
        while not self._stop.wait(self._member.options.poll_interval):
            try:
                found = self.poll(now())
            except Exception as err:  # a watchdog must say it broke, not vanish
                summary = f"the gang watchdog stopped: {err!r}"
                found = Finding("gang", "watchdog_error", summary, urgency=Urgency.NOTE)
            if found is not None:
                report(Found(found, now()))
                return

    def poll(self, now: float) -> Finding | None:
        """One look at the peers' verdicts: the PEER_LEFT finding when the gang must stop."""
        member = self._member
        if member.me is None:
            return None
        view = member.read(records.VERDICTS, skip=member.seen_at_start)
        if view is None:
            return None
        left = attribution.gang_stop(member.me, view, seen_at_start=member.seen_at_start)
        if left is None:
            return None
        first = self._first_seen.setdefault(left.peer.id or "", now)
        if now - first < attribution.stop_delay(left, self._grace):
            return None  # the trainers save together first; see the module docstring
        return left.finding


def facts(
    slots: Sequence[Slot], times: Times | None = None, progress: StepProgress | None = None
) -> VerdictFacts:
    """`VerdictFacts` from the channel's slots (each rank's last step, the newest commit;
    pass only the attempt's own, `PhaseClock.current`) and the attempt's `PhaseClock`
    totals and progress."""
    steps = {slot.rank: slot.step for slot in slots if slot.step >= 0}
    commits = [slot.ckpt_step for slot in slots if slot.ckpt_step >= 0]
    spent = PhaseTimes(*times) if times is not None else PhaseTimes()
    made = _progress(progress) if progress is not None else None
    return VerdictFacts(steps, max(commits) if commits else None, spent, made)


def _progress(seen: StepProgress) -> records.Progress:
    """The ledger's form of what the phase clock saw: at most MAX_COMMIT_MARKS, the newest."""
    marks = seen.commits[-records.MAX_COMMIT_MARKS :]
    return records.Progress(
        **{**seen._asdict(), "commits": tuple(records.CommitMark(*mark) for mark in marks)}
    )
