"""`--metrics-port`: the run's live state as Prometheus metrics on `http://0.0.0.0:PORT/metrics`.

Two sources, both read only when Prometheus scrapes:

- **Outputs** (this module's `Metrics` is a sink of the router, `supervisor.outputs`): the
  typed records tell it of attempts, restarts, findings and their class, checkpoint
  requests and commits, and the GPUs a device finding named. `write` only counts, under a
  lock; it never blocks on the network.
- **The channel**, through the sampler's `LiveView` (`supervisor.watch.live`): each rank's
  step, heartbeat age and steady step time, the attempt's time per phase, and the same
  time split by whether its steps are committed yet (`PhaseClock`'s `Account.buckets`).

`METRICS` is the one list of what is exposed; the README's table is generated from it
(`markdown_table`) and a test keeps them equal. The HTTP server is `prometheus_client`'s
WSGI app on a daemon thread, listening on every interface because a pod is scraped from
outside its container. `prometheus_client` is imported by `open_metrics` only, so a run
without `--metrics-port` (and the trainer, which never imports this module) never loads it.

Guarantees: `open_metrics` raises `ConfigError` when the port cannot be bound (in use,
not permitted), before the command starts. `write` may be called from any thread and
raises nothing. `close` stops the server within about `POLL_INTERVAL` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from supervisor.core import outputs as out
from supervisor.core.errors import ConfigError
from supervisor.core.exitcodes import ExitCode
from supervisor.core.outputs import Output
from supervisor.watch.live import LiveView

ADDRESS = "0.0.0.0"  # a pod is scraped from outside its container
POLL_INTERVAL = 0.1  # seconds the server's loop waits between looks at `close`


class Metric(NamedTuple):
    """One exposed metric family: its name as scraped, type, labels and meaning."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


METRICS = (
    Metric("supervise_attempt", "gauge", (), "The running attempt of the command; 1 is the first."),
    Metric(
        "supervise_restarts_total",
        "counter",
        (),
        "Restarts in place scheduled by `--max-restarts`.",
    ),
    Metric(
        "supervise_findings_total",
        "counter",
        ("class",),
        "Findings reported, by the exit class each argues for (`none`: it only informs).",
    ),
    Metric(
        "supervise_gpu_healthy",
        "gauge",
        ("gpu", "uuid"),
        "1 for each watched GPU until the GPU watchdog reports a finding that argues "
        "DEVICE_FAILED or DEVICE_DEGRADED for it; then 0.",
    ),
    Metric(
        "supervise_checkpoint_requests_total",
        "counter",
        ("reason",),
        "Checkpoints supervise asked the training for, by reason.",
    ),
    Metric(
        "supervise_checkpoint_commits_total",
        "counter",
        (),
        "Checkpoint commits the ranks reported, asked for or not.",
    ),
    Metric(
        "supervise_checkpoint_last_step",
        "gauge",
        (),
        "The step of the last committed checkpoint (absent before the first).",
    ),
    Metric(
        "supervise_checkpoint_request_to_commit_seconds",
        "gauge",
        (),
        "Seconds from supervise's last answered checkpoint request to its commit, as "
        "supervise saw them (to within the 0.1 s channel sampling).",
    ),
    Metric(
        "supervise_rank_step",
        "gauge",
        ("rank",),
        "The last step the rank reported (`sup.step`) in this attempt; -1 before its first.",
    ),
    Metric(
        "supervise_rank_heartbeat_age_seconds",
        "gauge",
        ("rank",),
        "Seconds since the rank's last heartbeat, at scrape time; ranks still running.",
    ),
    Metric(
        "supervise_rank_step_time_seconds",
        "gauge",
        ("rank",),
        "The rank's latest steady seconds per step (outside named phases).",
    ),
    Metric(
        "supervise_phase_seconds_total",
        "counter",
        ("phase",),
        "Seconds of the running attempt in `init` (before the first step), in steady "
        "steps (`steps`), or in a named phase (`with sup.phase(NAME)`); restarts at 0 "
        "with each attempt.",
    ),
    Metric(
        "supervise_attempt_seconds",
        "gauge",
        ("bucket",),
        "The running attempt's seconds so far by bucket, adding up to the time charged: "
        "`init` and each named phase (by its name, `phase:NAME` for one named like a "
        "bucket) as in `supervise_phase_seconds_total`, and its steady steps split in "
        "three: `committed` (up to the newest checkpoint commit), `uncommitted` (after it, "
        "to the last step: lost if the attempt failed now) and `stalled` (after the last "
        "step any rank took).",
    ),
    Metric(
        "supervise_attempt_goodput_ratio",
        "gauge",
        (),
        "The running attempt's `committed` seconds over the seconds since it started: "
        "its goodput so far, as `supervise report` would count it if it failed now.",
    ),
)
_BY_NAME = {metric.name: metric for metric in METRICS}
_SICK = (ExitCode.DEVICE_FAILED, ExitCode.DEVICE_DEGRADED)


def markdown_table() -> str:
    """`METRICS` as the Markdown table the README embeds (a test keeps them equal)."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for m in METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "-"
        lines.append(f"| `{m.name}` | {m.type} | {labels} | {m.help} |")
    return "\n".join(lines)


class Counts:
    """What the outputs said, counted. Any thread may `record`; `snapshot` copies it whole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempt = 0
        self.restarts = 0
        self.findings: dict[str, int] = {}
        self.sick_gpus: dict[tuple[int, str], bool] = {}  # named by a finding: sick or not
        self.requests: dict[str, int] = {}
        self.commits = 0
        self.last_step: int | None = None
        self.commit_s: float | None = None
        self._requested: dict[int, float] = {}  # generation -> when it was asked (mono)

    def record(self, output: Output, mono: float) -> None:
        with self._lock:
            self._record(output, mono)

    def _record(self, output: Output, mono: float) -> None:
        if isinstance(output, out.Started):
            self.attempt = output.attempt
        elif isinstance(output, out.RestartScheduled):
            self.restarts += 1
        elif isinstance(output, out.FindingReported):
            finding = output.finding
            klass = finding.exit_code.name if finding.exit_code is not None else "none"
            self.findings[klass] = self.findings.get(klass, 0) + 1
            gpu = _gpu_of(finding.detail)
            if gpu is not None:
                sick = finding.exit_code in _SICK
                self.sick_gpus[gpu] = self.sick_gpus.get(gpu, False) or sick
        elif isinstance(output, out.CheckpointRequested):
            self.requests[output.reason] = self.requests.get(output.reason, 0) + 1
            self._requested[output.generation] = mono
        elif isinstance(output, out.CheckpointCommitted):
            self.commits += 1
            self.last_step = output.step
            asked = self._requested.pop(output.generation, None)
            if asked is not None:
                self.commit_s = max(0.0, mono - asked)

    def snapshot(self) -> Counts:
        copy = Counts()
        with self._lock:
            for key, value in vars(self).items():
                if not key.startswith("_"):
                    setattr(copy, key, value.copy() if isinstance(value, dict) else value)
        return copy


def _gpu_of(detail: Any) -> tuple[int, str] | None:
    index, uuid = detail.get("gpu_index"), detail.get("gpu_uuid")
    if isinstance(index, int) and isinstance(uuid, str):
        return index, uuid
    return None


def families(counts: Counts, live: LiveView, now_ns: int) -> Iterator[tuple[Metric, list]]:
    """Each metric with its samples `[(label values, value)]`, as one scrape sees them.

    Pure given its arguments; `now_ns` is CLOCK_MONOTONIC, the clock of the beats.
    """
    c = counts.snapshot()
    m = _BY_NAME
    yield m["supervise_attempt"], [((), c.attempt)]
    yield m["supervise_restarts_total"], [((), c.restarts)]
    yield m["supervise_findings_total"], [((k,), v) for k, v in sorted(c.findings.items())]
    gpus = dict.fromkeys(live.gpus, False)
    gpus.update(c.sick_gpus)
    yield (
        m["supervise_gpu_healthy"],
        [((str(i), uuid), 0 if sick else 1) for (i, uuid), sick in sorted(gpus.items())],
    )
    yield m["supervise_checkpoint_requests_total"], [((k,), v) for k, v in c.requests.items()]
    yield m["supervise_checkpoint_commits_total"], [((), c.commits)]
    last = [] if c.last_step is None else [((), c.last_step)]
    yield m["supervise_checkpoint_last_step"], last
    took = [] if c.commit_s is None else [((), round(c.commit_s, 3))]
    yield m["supervise_checkpoint_request_to_commit_seconds"], took
    ranks = live.ranks()
    yield m["supervise_rank_step"], [((str(r.rank),), r.step) for r in ranks]
    ages = [((str(r.rank),), max(0, now_ns - r.beat_ns) / 1e9) for r in ranks if r.running]
    yield m["supervise_rank_heartbeat_age_seconds"], ages
    steps = [((str(r.rank),), r.step_s) for r in ranks if r.step_s is not None]
    yield m["supervise_rank_step_time_seconds"], steps
    times = live.times()
    phases: dict[str, float] = {}
    if times is not None:
        for name, seconds in (("init", times.init_s), ("steps", times.steady_s)):
            phases[name] = seconds
        for name, seconds in times.phases_s.items():  # a phase named "init" adds up
            phases[name] = phases.get(name, 0.0) + seconds
    yield m["supervise_phase_seconds_total"], [((k,), v) for k, v in sorted(phases.items())]
    account = live.account()
    buckets = account.buckets() if account is not None else {}
    yield m["supervise_attempt_seconds"], [((k,), v) for k, v in buckets.items()]
    goodput = account.goodput if account is not None else None
    ratio = [] if goodput is None else [((), round(goodput, 4))]
    yield m["supervise_attempt_goodput_ratio"], ratio


class Metrics:
    """The sink: counts the outputs; the server thread turns them into metrics per scrape."""

    name = "--metrics-port"

    def __init__(self, port: int, server: Any, counts: Counts) -> None:
        self.path = f"{ADDRESS}:{port}"
        self._server = server
        self._counts = counts

    def write(self, output: Output, wall: float, mono: float) -> None:
        self._counts.record(output, mono)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # returns once the loop saw it: within POLL_INTERVAL
            server.server_close()


def open_metrics(
    port: int, live: LiveView, *, monotonic_ns: Callable[[], int] = time.monotonic_ns
) -> Metrics:
    """Listen on `0.0.0.0:port` and serve `/metrics` from a daemon thread.

    Raises `ConfigError` (one line, naming the flag and the port) when it cannot listen.
    """
    try:
        from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
        from prometheus_client.registry import CollectorRegistry
    except ImportError as err:  # a core dependency; only a broken install lacks it
        raise ConfigError(f"--metrics-port needs the prometheus_client package: {err}") from None
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    counts = Counts()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(counts, live, monotonic_ns))

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no line per scrape
            pass

    try:
        server = make_server(ADDRESS, port, make_wsgi_app(registry), ThreadingWSGIServer, Quiet)
    except OSError as err:
        raise ConfigError(
            f"--metrics-port {port}: cannot listen on {ADDRESS}:{port}: {err.strerror or err}"
        ) from None
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": POLL_INTERVAL},
        name="supervise-metrics",
        daemon=True,
    )
    thread.start()
    return Metrics(port, server, counts)


class _Collector:
    """prometheus_client's custom-collector protocol: `collect` runs on the server thread."""

    def __init__(self, counts: Counts, live: LiveView, monotonic_ns: Callable[[], int]) -> None:
        self._counts = counts
        self._live = live
        self._now = monotonic_ns

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for metric, samples in families(self._counts, self._live, self._now()):
            kind = CounterMetricFamily if metric.type == "counter" else GaugeMetricFamily
            name = metric.name.removesuffix("_total") if metric.type == "counter" else metric.name
            family = kind(name, metric.help, labels=list(metric.labels))
            for labels, value in samples:
                family.add_metric(list(labels), value)
            yield family
