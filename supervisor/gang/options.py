"""Where the run ledger lives and how a pod listens to its gang: options and identity (L0).

Plain data, cheap to import: the command line declares its flags from these defaults
without loading the gang's machinery, which a run imports only when it has a ledger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.core.errors import ConfigError

LEDGER_PREFIX = "_ledger"  # its default home: this folder at the top of the checkpoint URL
DEFAULT_PEER_WAIT = 15.0  # how long a symptom looks for a peer's verdict before it claims
DEFAULT_POLL_INTERVAL = 5.0  # seconds between two listings of the peers' verdicts
DEFAULT_FREE_EXITS = 3  # device verdicts a node may have in a run before the next is counted
DEFAULT_IO_TIMEOUT = 10.0  # seconds one ledger operation may take
# While a decided cause holds back stopping the child: at most this long reading the node's
# history (what the prefetch did not read is left out), then this long writing the verdict.
EARLY_IO_TIMEOUT = 2.0


@dataclass(frozen=True)
class GangOptions:
    """How this pod listens to its gang. Validated by raising `ConfigError`."""

    peer_wait: float = DEFAULT_PEER_WAIT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    free_exits: int = DEFAULT_FREE_EXITS
    io_timeout: float = DEFAULT_IO_TIMEOUT

    def __post_init__(self) -> None:
        for flag, value, low, high in (
            ("--peer-wait", self.peer_wait, 0.0, 3600.0),
            ("--gang-poll-interval", self.poll_interval, 0.1, 3600.0),
        ):
            if not (math.isfinite(value) and low <= value <= high):
                raise ConfigError(f"{flag} must be seconds in [{low:g}, {high:g}], got {value}")
        if isinstance(self.free_exits, bool) or not 1 <= self.free_exits <= 1000:
            raise ConfigError(
                f"--node-free-exits must be an integer in [1, 1000], got {self.free_exits}"
            )


@dataclass(frozen=True)
class Identity:
    """Who this pod is, from the downward-API environment the rendered manifests set."""

    pod: str
    node_rank: int | None = None
    namespace: str | None = None
    node: str | None = None
    pod_uid: str | None = None
    gang: str | None = None
    incarnation: str | None = None
    nnodes: int | None = None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], node_rank: int | None = None, nnodes: int | None = None
    ) -> Identity:
        """`node_rank`/`nnodes` from the torchrun topology when known, else the Indexed Job's
        completion index. The pod name falls back to HOSTNAME outside Kubernetes."""
        if node_rank is None and env.get("JOB_COMPLETION_INDEX", "").isdigit():
            node_rank = int(env["JOB_COMPLETION_INDEX"])
        if nnodes is None and env.get("SUPERVISE_NNODES", "").isdigit():
            nnodes = int(env["SUPERVISE_NNODES"])
        jobset, attempt = env.get("JOBSET_NAME"), env.get("SUPERVISE_RESTART_ATTEMPT")
        return cls(
            pod=env.get("SUPERVISE_POD_NAME") or env.get("HOSTNAME") or "unknown",
            node_rank=node_rank,
            namespace=env.get("SUPERVISE_POD_NAMESPACE") or None,
            node=env.get("SUPERVISE_NODE_NAME") or None,
            pod_uid=env.get("SUPERVISE_POD_UID") or None,
            gang=jobset or None,
            incarnation=f"{jobset}/{attempt}" if jobset and attempt else None,
            nnodes=nnodes,
        )

    @property
    def multi_node(self) -> bool:
        """Whether this pod has peers: more than one node, or an index without a count."""
        return self.nnodes > 1 if self.nnodes is not None else self.node_rank is not None
