"""Log rules: lines in the child's output that say which failure class a death belongs to.

Pure (L1). The log pump searches `DEFAULT_MATCHER.prefilter` over whole chunks of output
(one compiled alternation of literal keywords, so a chunk without any costs one regex scan)
and calls `match(line)` only on lines that hit it. Every rule's pattern contains one of the
prefilter's keywords, so the prefilter never hides a line a rule would match (a test checks
this on every sample line).

All findings are `Urgency.ON_EXIT`: a matched line does not stop anything by itself; it
explains the child's death if the child then dies. The first rule that matches wins, so
more specific rules come first. Each rule names its source: the log text of PyTorch's
`torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp` (watchdog and heartbeat monitor) and
`NCCLUtils.hpp` (the NCCL error format), gloo's transport errors, and the CUDA driver's
`cuGetErrorString` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode

_MAX_LINE = 500  # characters of the matched line kept as evidence


@dataclass(frozen=True)
class Rule:
    kind: str
    pattern: re.Pattern[str]
    exit_code: ExitCode
    reason: str  # why this line means this class, for the termination message
    source: str  # where the text comes from

    def finding(self, line: str, found: re.Match[str]) -> Finding:
        detail: dict[str, object] = {"line": line.strip()[:_MAX_LINE], "rule_source": self.source}
        for key, value in found.groupdict().items():
            if value is not None:
                detail[key] = int(value) if value.isdigit() else value
        return Finding(
            source="log",
            kind=self.kind,
            summary=self.reason,
            exit_code=self.exit_code,
            urgency=Urgency.ON_EXIT,
            detail=detail,
        )


def _rule(kind: str, regex: str, code: ExitCode, reason: str, source: str) -> Rule:
    return Rule(kind, re.compile(regex), code, reason, source)


_RANK = r"(?:\[Rank (?P<rank>\d+)\]\s*)?"

RULES: tuple[Rule, ...] = (
    # --- HANG: the NCCL watchdog gave up on a collective. The process aborts (SIGABRT)
    # after these lines, which alone would look like a crash.
    _rule(
        "nccl_collective_timeout",
        _RANK + r"Watchdog caught collective operation timeout: WorkNCCL\("
        r"SeqNum=(?P<seq>\d+), OpType=(?P<op>\w+)",
        ExitCode.HANG,
        "NCCL watchdog: a collective timed out, so a rank stopped participating (a hang)",
        "ProcessGroupNCCL.cpp watchdog",
    ),
    _rule(
        "nccl_collective_timeout",
        r"Watchdog caught collective operation timeout",
        ExitCode.HANG,
        "NCCL watchdog: a collective timed out, so a rank stopped participating (a hang)",
        "ProcessGroupNCCL.cpp watchdog",
    ),
    _rule(
        "nccl_watchdog_hang",
        r"ProcessGroupNCCL's watchdog got stuck for (?P<stuck_s>\d+) seconds without making "
        r"progress",
        ExitCode.HANG,
        "NCCL heartbeat monitor: the watchdog thread itself stopped making progress (a hang)",
        "ProcessGroupNCCL.cpp heartbeat monitor",
    ),
    _rule(
        "nccl_watchdog_hang",
        r"due to ProcessGroupNCCL watchdog hang|Heartbeat monitor timed out!",
        ExitCode.HANG,
        "NCCL heartbeat monitor: the watchdog thread itself stopped making progress (a hang)",
        "ProcessGroupNCCL.cpp heartbeat monitor (current and older text)",
    ),
    # --- INFRA_FAILED: the transport or a peer failed, not this rank's code.
    _rule(
        "nccl_remote_error",
        r"ncclRemoteError",
        ExitCode.INFRA_FAILED,
        "NCCL remote error: a network failure or a peer process exited early",
        "NCCLUtils.hpp error interpretation",
    ),
    _rule(
        "nccl_system_error",
        r"ncclSystemError",
        ExitCode.INFRA_FAILED,
        "NCCL system error: a socket, memory or external library call failed",
        "NCCLUtils.hpp error interpretation",
    ),
    _rule(
        "nccl_comm_aborted",
        r"NCCL communicator was aborted(?: on rank (?P<rank>\d+))?",
        ExitCode.INFRA_FAILED,
        "the NCCL communicator was aborted, usually after another rank or link failed",
        "ProcessGroupNCCL.cpp",
    ),
    _rule(
        "peer_connection_lost",
        r"Connection (?:closed|reset) by peer",
        ExitCode.INFRA_FAILED,
        "a peer's connection dropped: another rank or node went away mid-collective",
        "gloo transport/tcp/pair.cc error text; measured in "
        "tests/k8s/test_k8s_launch.py::test_real_peer_loss_reaches_node_zero_as_a_gloo_connection_error",
    ),
    _rule(
        "dist_network_error",
        r"DistNetworkError",
        ExitCode.INFRA_FAILED,
        "torch.distributed could not reach the rendezvous store or a peer",
        "torch.distributed.DistNetworkError (c10d TCPStore)",
    ),
    # --- DEVICE_FAILED: CUDA strings that name hardware faults.
    _rule(
        "cuda_uncorrectable_ecc",
        r"uncorrectable ECC error encountered",
        ExitCode.DEVICE_FAILED,
        "CUDA reported an uncorrectable ECC error: GPU memory is faulty",
        "cuGetErrorString CUDA_ERROR_ECC_UNCORRECTABLE (214)",
    ),
    _rule(
        "cuda_uncorrectable_nvlink",
        r"uncorrectable NVLink error",
        ExitCode.DEVICE_FAILED,
        "CUDA reported an uncorrectable NVLink error: the GPU interconnect is faulty",
        "cuGetErrorString CUDA_ERROR_NVLINK_UNCORRECTABLE (220)",
    ),
    # --- TRAINING_FAILED, with the reason named: the program's own fault.
    _rule(
        "cuda_out_of_memory",
        r"CUDA out of memory",
        ExitCode.TRAINING_FAILED,
        "CUDA out of memory: the model, batch or activations do not fit on the GPU",
        "PyTorch caching allocator OutOfMemoryError text",
    ),
    _rule(
        "cuda_device_assert",
        r"device-side assert triggered",
        ExitCode.TRAINING_FAILED,
        "a CUDA device-side assert fired: usually an index out of range in the program",
        "cuGetErrorString CUDA_ERROR_ASSERT (710)",
    ),
)

# One literal keyword per rule family, each a substring that every line its rules match
# must contain. Kept literal so the chunk scan stays a fast alternation.
# Few and short, because each is one pass of `bytes.__contains__` (memchr-fast) over every
# chunk of output; a regex alternation of the same words scanned 3-4x slower.
PREFILTER_KEYWORDS: tuple[bytes, ...] = (
    b"atchdog",  # "Watchdog caught ...", "watchdog got stuck", "... watchdog hang"
    b"Heartbeat monitor timed out",
    b"nccl",  # ncclRemoteError, ncclSystemError
    b"NCCL communicator was aborted",
    b"by peer",
    b"DistNetworkError",
    b"uncorrectable",  # ECC, NVLink
    b"CUDA out of memory",
    b"device-side assert",
)


class Keywords:
    """A prefilter: does the data contain any of the keywords? `search` mirrors `re`."""

    def __init__(self, keywords: tuple[bytes, ...]) -> None:
        self.keywords = keywords

    def search(self, data: bytes) -> bytes | None:
        """The first keyword found in `data`, or None."""
        for keyword in self.keywords:
            if keyword in data:
                return keyword
        return None


class LogMatcher:
    """Rules plus their prefilter; stateless, so one instance serves every log pump."""

    def __init__(self, rules: tuple[Rule, ...], keywords: tuple[bytes, ...]) -> None:
        self.rules = rules
        self.prefilter = Keywords(keywords)

    def match(self, line: str) -> Finding | None:
        """The finding of the first rule that matches `line`, or None."""
        for rule in self.rules:
            found = rule.pattern.search(line)
            if found is not None:
                return rule.finding(line, found)
        return None


DEFAULT_MATCHER = LogMatcher(RULES, PREFILTER_KEYWORDS)
