"""supervise: a workload-side training supervisor for Kubernetes.

The training-side API is small and pinned (`__all__`, checked by a test):

    import supervisor
    sup = supervisor.attach()                     # a no-op outside supervise
    store = supervisor.CheckpointStore(url)       # atomic, checksummed checkpoints
    state["rng"] = supervisor.rng.capture()       # every RNG, for an exact resume

Names are resolved lazily, so `import supervisor` costs almost nothing and never imports
torch, fsspec or the supervisor's own machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CheckpointStore", "ExitCode", "__version__", "attach", "rng"]

if TYPE_CHECKING:
    from supervisor.client import attach
    from supervisor.core.exitcodes import ExitCode
    from supervisor.storage import CheckpointStore, rng

_LAZY = {
    "attach": "supervisor.client",
    "CheckpointStore": "supervisor.storage",
    "ExitCode": "supervisor.core.exitcodes",
    "rng": "supervisor.storage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
