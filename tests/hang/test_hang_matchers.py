"""Log rules on realistic excerpts (lines quoted in shared reference torch_k8s.md, B)."""

from __future__ import annotations

import pytest

from supervisor.core.events import Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.core.matchers import DEFAULT_MATCHER, RULES

NCCL_TIMEOUT = (
    "[rank3]:[E1029 10:11:12.123456 4242 ProcessGroupNCCL.cpp:632] [Rank 3] Watchdog caught "
    "collective operation timeout: WorkNCCL(SeqNum=120049, OpType=_ALLGATHER_BASE, "
    "NumelIn=1024, NumelOut=8192, Timeout(ms)=600000) ran for 600065 milliseconds before "
    "timing out."
)
SAMPLES: list[tuple[str, str, ExitCode]] = [
    (NCCL_TIMEOUT, "nccl_collective_timeout", ExitCode.HANG),
    (
        "[E ProcessGroupNCCL.cpp:475] [Rank 0] Watchdog caught collective operation timeout: "
        "WorkNCCL(SeqNum=5, OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 1800348 ms",
        "nccl_collective_timeout",
        ExitCode.HANG,
    ),
    (
        "[rank0]:[E ProcessGroupNCCL.cpp:1423] [PG ID 0 PG GUID 0(default_pg) Rank 0] "
        "ProcessGroupNCCL's watchdog got stuck for 480 seconds without making progress in "
        "monitoring enqueued collectives.",
        "nccl_watchdog_hang",
        ExitCode.HANG,
    ),
    (
        "[rank1]:[F ProcessGroupNCCL.cpp:1560] [PG ID 0 Rank 1] Terminating the process after "
        "attempting to dump debug info, due to ProcessGroupNCCL watchdog hang.",
        "nccl_watchdog_hang",
        ExitCode.HANG,
    ),
    (
        "[E ProcessGroupNCCL.cpp:1182] [Rank 2] Heartbeat monitor timed out! Process will be "
        "terminated after dumping debug info. workMetaList_.size()=0",
        "nccl_watchdog_hang",
        ExitCode.HANG,
    ),
    (
        "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/"
        "NCCLUtils.hpp:275, remote process exited or there was a network error, NCCL version "
        "2.21.5",
        "",
        ExitCode.SUCCEEDED,  # not a rule: the interpretation line below carries the class
    ),
    (
        "ncclRemoteError: A call failed possibly due to a network error or a remote process "
        "exiting prematurely.",
        "nccl_remote_error",
        ExitCode.INFRA_FAILED,
    ),
    (
        "ncclSystemError: System call (e.g. socket, malloc) or external library call failed "
        "or device error.",
        "nccl_system_error",
        ExitCode.INFRA_FAILED,
    ),
    (
        "RuntimeError: NCCL communicator was aborted on rank 5.",
        "nccl_comm_aborted",
        ExitCode.INFRA_FAILED,
    ),
    (
        # what a gloo rank raised when its peer node was stopped mid all_reduce
        # (tests/k8s/test_k8s_launch.py::test_real_peer_loss_reaches_node_zero_...)
        "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed "
        "by peer [127.0.0.1]:38427",
        "peer_connection_lost",
        ExitCode.INFRA_FAILED,
    ),
    (
        "torch.distributed.DistNetworkError: The client socket has timed out after 60000ms "
        "while trying to connect to (trainer-0.trainer, 29500).",
        "dist_network_error",
        ExitCode.INFRA_FAILED,
    ),
    (
        "RuntimeError: CUDA error: uncorrectable ECC error encountered",
        "cuda_uncorrectable_ecc",
        ExitCode.DEVICE_FAILED,
    ),
    (
        "torch.AcceleratorError: CUDA error: uncorrectable NVLink error detected during the "
        "execution",
        "cuda_uncorrectable_nvlink",
        ExitCode.DEVICE_FAILED,
    ),
    (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
        "total capacity of 79.15 GiB of which 1.02 GiB is free.",
        "cuda_out_of_memory",
        ExitCode.TRAINING_FAILED,
    ),
    (
        "RuntimeError: CUDA error: device-side assert triggered",
        "cuda_device_assert",
        ExitCode.TRAINING_FAILED,
    ),
]


@pytest.mark.parametrize("line, kind, code", SAMPLES, ids=[s[1] or "no-rule" for s in SAMPLES])
def test_each_rule_classifies_its_line(line: str, kind: str, code: ExitCode) -> None:
    finding = DEFAULT_MATCHER.match(line)
    if not kind:
        assert finding is None
        return
    assert finding is not None
    assert (finding.source, finding.kind, finding.exit_code) == ("log", kind, code)
    assert finding.urgency is Urgency.ON_EXIT
    assert finding.detail["line"] == line.strip()
    assert finding.detail["rule_source"]
    assert finding.summary  # the reason, stated


@pytest.mark.parametrize("line, kind, code", SAMPLES, ids=[s[1] or "no-rule" for s in SAMPLES])
def test_the_prefilter_hits_every_line_a_rule_matches(line: str, kind: str, code) -> None:
    hit = DEFAULT_MATCHER.prefilter.search(line.encode()) is not None
    assert hit == (DEFAULT_MATCHER.match(line) is not None)


def test_every_rule_has_a_sample_and_a_source() -> None:
    covered = {kind for _, kind, _ in SAMPLES}
    assert {rule.kind for rule in RULES} <= covered
    assert all(rule.source and rule.reason for rule in RULES)


def test_the_timeout_rule_extracts_rank_sequence_and_op() -> None:
    finding = DEFAULT_MATCHER.match(NCCL_TIMEOUT)
    assert finding is not None
    assert (finding.detail["rank"], finding.detail["seq"], finding.detail["op"]) == (
        3,
        120049,
        "_ALLGATHER_BASE",
    )


def test_ordinary_training_output_matches_nothing() -> None:
    chunk = (
        b"step 100 loss 2.31\n"
        b"[rank0]: saving checkpoint to /ckpt/step_100\n"
        b"NCCL INFO Channel 00/02 : 0 1\n"
        b"cuda memory allocated: 10 GiB\n"
    )
    assert DEFAULT_MATCHER.prefilter.search(chunk) is None
    assert all(DEFAULT_MATCHER.match(line) is None for line in chunk.decode().splitlines())


def test_the_prefilter_finds_a_rule_line_inside_a_large_chunk() -> None:
    chunk = b"step 1 loss 1.0\n" * 5000 + NCCL_TIMEOUT.encode() + b"\n" + b"x\n" * 100
    assert DEFAULT_MATCHER.prefilter.search(chunk) is not None
