"""Crash consistency: SIGKILL a writer at random moments, hundreds of times.

After every kill, `latest()` must name a step that verifies and loads bit for bit, no
partial step may be listed, and no committed step may be lost except by retention. The
kill lands anywhere: inside a data file, between files, around the manifest, the marker,
the rename, or in the middle of retention deleting an old step.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from supervisor.storage import CheckpointStore, layout
from tests.storage.crash_writer import make_state
from tests.storage.test_contract import assert_same

WRITER = Path(__file__).with_name("crash_writer.py")
ROOT = Path(__file__).resolve().parents[2]


def run_trials(url: str, options: dict | None, trials: int, seed: int) -> tuple[int, int]:
    """Returns (trials in which the child committed at least one step, highest step)."""
    rng = random.Random(seed)
    proc = subprocess.Popen(
        [sys.executable, str(WRITER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdin and proc.stdout
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write(f"calibrate {url}-calibration {json.dumps(options)}\n")
        proc.stdin.flush()
        calibrated = proc.stdout.readline().split()
        assert calibrated and calibrated[0] == "calibrated", calibrated
        first, per_save = float(calibrated[1]), float(calibrated[2])
        store = CheckpointStore(url, keep_last=2, storage_options=options)
        productive, highest = 0, 0
        for trial in range(trials):
            # Mostly within the first save; sometimes after several, so retention runs too.
            span = first + per_save * (1 if trial % 4 else 6)
            proc.stdin.write(f"trial {rng.uniform(0, span):.6f} {url} {json.dumps(options)}\n")
            proc.stdin.flush()
            answer = proc.stdout.readline().split()
            assert answer and answer[0] == "killed", answer
            reported = [] if answer[1] == "-" else [int(s) for s in answer[1].split(",")]
            productive += bool(reported)
            steps = store.steps()
            latest = store.latest()
            if reported:
                # Every step the child saw committed is durable; retention keeps 2 newest.
                assert latest is not None and latest >= reported[-1], (trial, steps, reported)
            if latest is None:
                assert highest == 0, f"trial {trial}: committed steps vanished"
                continue
            assert latest >= highest, f"trial {trial}: latest went back {highest}->{latest}"
            assert steps[-1] == latest, (trial, steps)
            for step in steps:  # nothing partial is listed
                result = store.verify(step)
                assert result.ok, (trial, step, result.problems)
            assert_same(make_state(latest), store.load())
            highest = latest
        return productive, highest
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_at_random_moments_on_local_disk(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    productive, highest = run_trials(str(tmp_path / "ckpt"), None, trials=300, seed=1)
    # The trials really interleaved kills with commits, not only before the first one.
    assert productive > 100 and highest > 100, (productive, highest)
    # Kills leave staging directories behind; cleanup (after every commit, or called) removes
    # every one that can no longer commit, and never a step that is committed.
    store = CheckpointStore(str(tmp_path / "ckpt"), keep_last=2)
    before = store.steps()
    store.cleanup()
    assert store.steps() == before
    latest = store.latest()
    for entry in (tmp_path / "ckpt").iterdir():
        staged = layout.parse_staging_dirname(entry.name)
        assert staged is None or (staged[0] > latest and not staged[1].startswith("deleted-"))


@pytest.mark.slow
def test_sigkill_at_random_moments_on_s3(s3_server) -> None:
    url = f"s3://{s3_server.bucket()}/run"
    productive, highest = run_trials(url, s3_server.options(), trials=25, seed=2)
    assert productive >= 3 and highest >= 5, (productive, highest)
