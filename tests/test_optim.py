"""Learning-rate schedules and parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from isc.optim import constant, parameter_groups, warmup_cosine


def lrs(make, steps: int, lr: float = 1.0) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make(optimizer, total_steps=steps)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_then_cosine():
    values = lrs(lambda o, total_steps: warmup_cosine(o, total_steps, warmup_fraction=0.1), 100)
    assert values[0] < 0.01  # starts near zero
    assert max(values) == max(values[8:12])  # peak right after the 10 warm-up steps
    for step in range(10, 100):  # cosine from 1 to 0 over the remaining 90 steps
        assert values[step] == pytest.approx(0.5 * (1 + math.cos(math.pi * (step - 10) / 90)), abs=1e-6)


def test_constant_schedule():
    assert lrs(constant, 5, lr=0.3) == [0.3] * 5


def test_parameter_groups_exclude_biases_and_norms_from_decay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    decay, no_decay = parameter_groups(model)
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0
