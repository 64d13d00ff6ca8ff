"""One commit strategy per kind of storage, chosen by protocol in one place; and the storage
package's import graph has no cycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.storage.backend import DEFAULT_STRATEGY, STRATEGIES, Storage
from supervisor.storage.marker_commit import (
    BucketMarkerCommit,
    InProcessMarkerCommit,
    MarkerCommit,
)
from supervisor.storage.rename_commit import RenameCommit
from tests.storage.conftest import S3Server
from tests.test_layers import MODULES, SOURCES, imports_of, known_module, module_name


@pytest.mark.parametrize(
    ("url", "strategy"),
    [
        ("{tmp}/ckpt", RenameCommit),
        ("file://{tmp}/ckpt", RenameCommit),
        ("memory://run", InProcessMarkerCommit),
        # An fsspec protocol not in the registry is an object store: single-object writes.
        # (A chained URL such as simplecache::memory:// is refused: tests/cli/test_bad_files.)
        ("webhdfs://localhost/run", DEFAULT_STRATEGY),
    ],
)
def test_the_strategy_is_chosen_by_protocol(tmp_path: Path, url: str, strategy: type) -> None:
    assert type(Storage(url.format(tmp=tmp_path)).strategy) is strategy


def test_s3_is_an_object_store_with_buckets(s3_server: S3Server) -> None:
    storage = Storage(f"s3://{s3_server.bucket()}/run", s3_server.options())
    assert type(storage.strategy) is BucketMarkerCommit
    assert issubclass(BucketMarkerCommit, MarkerCommit)
    assert {STRATEGIES[p] for p in ("s3", "s3a", "gs", "gcs")} == {BucketMarkerCommit}


def test_the_storage_package_has_no_import_cycle() -> None:
    """Every import counts, at any depth: function-level and TYPE_CHECKING ones too."""
    package = "supervisor.storage"
    graph = {
        module_name(path): {
            target
            for imported in imports_of(path)
            if (target := known_module(imported, MODULES)) and target.startswith(package)
        }
        for path in SOURCES
        if module_name(path).startswith(package)
    }
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycle = [*trail[trail.index(node) :], node]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, [*trail, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    # The package's __init__ imports its modules; none imports the package back.
    assert all(package not in targets for name, targets in graph.items() if name != package)
