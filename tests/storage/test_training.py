"""Round trip for real training: model + AdamW + scheduler + every RNG continue identically.

Also: the torch-free reading path really stays torch-free, which the supervisor relies on
at start-up to find the step to resume from.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from supervisor.storage import CheckpointStore

ROOT = Path(__file__).resolve().parents[2]


def build(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(32, 4),
    )
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=3, gamma=0.5)
    return model, optim, sched


def train(model, optim, sched, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        # Data drawn from every RNG a training loop typically uses.
        x = torch.randn(8, 16) + float(np.random.rand()) + random.random()
        loss = model(x).pow(2).mean()  # dropout draws from torch's RNG too
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        losses.append(loss.item())
    return losses


def snapshot(model, optim, sched, step: int) -> dict:
    return {
        "model": model.state_dict(),
        "optim": optim.state_dict(),
        "sched": sched.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
        "step": step,
    }


def restore(model, optim, sched, state: dict) -> int:
    model.load_state_dict(state["model"])
    optim.load_state_dict(state["optim"])
    sched.load_state_dict(state["sched"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return state["step"]


def test_resumed_training_is_bitwise_identical(tmp_path: Path) -> None:
    np.random.seed(1)
    random.seed(1)
    model, optim, sched = build(1)
    train(model, optim, sched, 5)
    store = CheckpointStore(tmp_path / "ckpt")
    store.save(5, snapshot(model, optim, sched, 5))
    expected = train(model, optim, sched, 7)
    expected_params = [p.detach().clone() for p in model.parameters()]

    # Another model, other seeds, RNGs advanced: only the checkpoint can make it match.
    np.random.seed(99)
    random.seed(99)
    model2, optim2, sched2 = build(2)
    train(model2, optim2, sched2, 2)
    assert restore(model2, optim2, sched2, store.load()) == 5
    assert train(model2, optim2, sched2, 7) == expected
    for got, want in zip(model2.parameters(), expected_params, strict=True):
        assert torch.equal(got, want)


def test_async_saves_resume_identically_too(tmp_path: Path) -> None:
    model, optim, sched = build(3)
    store = CheckpointStore(tmp_path / "ckpt")
    store.save_async(0, snapshot(model, optim, sched, 0))
    train(model, optim, sched, 3)  # mutates the state while the write may still run
    store.close()
    model2, optim2, sched2 = build(3)
    restore(model2, optim2, sched2, store.load(0))
    for got, want in zip(
        model2.state_dict().values(), build(3)[0].state_dict().values(), strict=True
    ):
        assert torch.equal(got, want)


def test_reading_never_imports_torch(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    store.save(3, {"w": torch.ones(4)}, metadata={"loss": 0.5}, reason="final")
    code = (
        "import json, sys\n"
        "import supervisor.storage as storage\n"
        f"url = {str(tmp_path / 'ckpt')!r}\n"
        "out = {'steps': storage.steps(url), 'latest': storage.latest(url),\n"
        "       'ok': storage.verify(url, 3).ok,\n"
        "       'reason': storage.CheckpointStore(url).manifest(3).reason,\n"
        "       'torch': sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy'))}\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    out = json.loads(result.stdout)
    assert out == {"steps": [3], "latest": 3, "ok": True, "reason": "final", "torch": []}
