"""Learning-rate schedules and parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from isc_research.optim import constant, linear_decay, parameter_groups, plateau, warmup_constant_cosine, warmup_cosine


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


def test_warmup_cosine_over_its_own_horizon_is_s_squares_per_epoch_schedule():
    """sjy_test5 / smp_test19 (pl_bolts LinearWarmupCosineAnnealingLR: 4 warm-up + 100 cosine epochs from
    0.01·lr down to 0.001·lr) in a run that stops at epoch 52, long before the schedule's end."""
    values = lrs(
        lambda o, total_steps: warmup_cosine(
            o, total_steps, warmup_fraction=0.0385, min_lr_ratio=0.001, start_factor=0.01, horizon=104
        ),
        52,
        lr=1e-3,
    )
    assert values[0] == pytest.approx(1e-5) and values[4] == pytest.approx(1e-3)
    for epoch in range(4, 52):  # cosine over epochs 4…104, not over the run's 52
        expected = 1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * (epoch - 4) / 100))
        assert values[epoch] == pytest.approx(expected, rel=1e-6)
    assert values[51] > 0.5e-3  # half-way down at the run's end


def test_constant_schedule():
    assert lrs(constant, 5, lr=0.3) == [0.3] * 5


def test_parameter_groups_exclude_biases_and_norms_from_decay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    decay, no_decay = parameter_groups(model)
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_linear_decay_is_lyakaaps_per_epoch_rule():
    assert lrs(linear_decay, 4, lr=0.1) == pytest.approx([0.1 * (1 - e / 4) for e in range(4)])


def test_warmup_constant_cosine_is_visionforces_schedule():
    values = lrs(lambda o, total_steps: warmup_constant_cosine(o, total_steps, 0.2, 0.2, start_factor=0.01), 25)
    assert values[0] == pytest.approx(0.01)
    for e in range(5):  # warm-up from 1 % over epochs 0–5
        assert values[e] == pytest.approx(0.01 + 0.99 * e / 5)
    assert values[5:10] == pytest.approx([1.0] * 5)  # constant over epochs 5–10
    for e in range(10, 25):  # cosine over epochs 10–25
        assert values[e] == pytest.approx(0.5 * (1 + math.cos(math.pi * (e - 10) / 15)), abs=1e-6)
    with pytest.raises(ValueError, match="sum to less than 1"):
        warmup_constant_cosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 10, 0.6, 0.5)


def test_plateau_halves_after_patience():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = plateau(optimizer, total_steps=10, factor=0.5, patience=2)
    for loss in (5.0, 4.0, 4.0, 4.0, 4.0):
        scheduler.step(loss)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_lars_from_timm_adapts_weights_not_biases():
    import timm.optim

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    groups = parameter_groups(layer)
    optimizer = timm.optim.Lars(groups, lr=1.0, momentum=0.0, weight_decay=1e-6, trust_coeff=0.001)
    layer.weight.grad, layer.bias.grad = torch.ones_like(layer.weight), torch.ones_like(layer.bias)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    optimizer.step()
    w_norm, g_norm = w0.norm(), torch.ones_like(w0).norm()
    trust = 0.001 * w_norm / (g_norm + 1e-6 * w_norm + 1e-8)  # LARS: η‖w‖ / (‖g‖ + λ‖w‖)
    assert torch.allclose(layer.weight, w0 - trust * (torch.ones_like(w0) + 1e-6 * w0), atol=1e-6)
    assert torch.allclose(layer.bias, b0 - 1.0)  # weight_decay 0 group: plain SGD step
