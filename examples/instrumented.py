"""The three lines a training script adds for supervise's hang detection (marked "+").

Runs as is with or without supervise; outside it, `attach()` returns a no-op handle:

    python examples/instrumented.py
    supervise --hang-timeout 60 -- python examples/instrumented.py
    supervise -- torchrun --nproc-per-node 2 examples/instrumented.py   # one slot per rank
"""

import torch

import supervisor  # +1

model = torch.nn.Linear(32, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
sup = supervisor.attach()  # +2: a no-op outside supervise

for step in range(200):
    x = torch.randn(64, 32)
    loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    sup.step(step)  # +3: this rank made progress
print(f"done, loss {loss.item():.4f}")
