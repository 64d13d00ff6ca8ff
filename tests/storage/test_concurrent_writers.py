"""Two real processes save the same step at the same moment, on a local disk and on S3.

Identical content: both succeed and the step loads. Different content: one commits, the
other gets a `CheckpointError` saying another writer committed the step with different
content (not a storage failure), and the committed step verifies and holds the winner's
state. Several rounds, and writers of different sizes, so that one writer commits (and
cleans up after its commit) while the other is still writing its files: before the
post-commit cleanup spared the step it had just committed, it deleted the other writer's
staging directory mid-write, and that writer failed with a StorageError.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.storage import CheckpointStore, layout
from tests.storage.concurrent_writer import make_state
from tests.storage.conftest import S3Server

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict]:
    if request.param == "local":
        return str(tmp_path / "ckpt"), {}
    server: S3Server = request.getfixturevalue("s3_server")
    return f"s3://{server.bucket()}/run", server.options()


def start(url: str, options: dict, seed: int, megabytes: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.storage.concurrent_writer",
            url,
            json.dumps(options),
            str(seed),
            str(megabytes),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def race(writers: list[subprocess.Popen], step: int) -> list[str]:
    for proc in writers:  # released together: both are saving before either commits
        assert proc.stdin is not None
        proc.stdin.write(f"save {step}\n")
        proc.stdin.flush()
    return [proc.stdout.readline().strip() for proc in writers if proc.stdout]


def finish(writers: list[subprocess.Popen]) -> None:
    for proc in writers:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0


def same(a: dict, b: dict) -> bool:
    return a["step"] == b["step"] and all(a["model"][k].equal(b["model"][k]) for k in a["model"])


def test_identical_content_commits_for_both_writers(target) -> None:
    url, options = target
    size = 3
    writers = [start(url, options, 1, size), start(url, options, 1, size)]
    try:
        for step in range(1, ROUNDS + 1):
            assert race(writers, step) == ["committed", "committed"], step
    finally:
        finish(writers)
    store = CheckpointStore(url, storage_options=options or None, keep_last=ROUNDS)
    assert store.latest() == ROUNDS
    for step in store.steps():
        assert store.verify(step).ok
        assert same(store.load(step), make_state(step, 1, size))


@pytest.mark.parametrize("megabytes", [(2, 2), (1, 4), (4, 1)], ids=["same", "a-fast", "b-fast"])
def test_different_content_gives_the_loser_a_clear_error(target, megabytes) -> None:
    url, options = target
    writers = [start(url, options, 1, megabytes[0]), start(url, options, 2, megabytes[1])]
    try:
        for step in range(1, ROUNDS + 1):
            answers = race(writers, step)
            assert sorted(a.split()[0] for a in answers) == ["committed", "refused"], answers
            loser = answers[1 - answers.index("committed")]
            assert f"step {step} under" in loser, loser
            assert "committed by another writer" in loser and "different content" in loser
            winner = answers.index("committed")
            store = CheckpointStore(url, storage_options=options or None)
            assert store.verify(step).ok
            assert same(store.load(step), make_state(step, winner + 1, megabytes[winner]))
    finally:
        finish(writers)
    # Each loser removed its own attempt; only the winners' are left.
    store = CheckpointStore(url, storage_options=options or None)
    names = store.storage.names()
    assert not [n for n in names if ".tmp-" in n], names
    for step in store.steps():
        assert store.verify(step).ok
        directory = store.reader.step_dir(step)
        kept = [c for c in store.storage.children(directory) if c not in layout.RECORDS]
        assert len(kept) == 2  # the marker and one attempt (beside the reader's records)
