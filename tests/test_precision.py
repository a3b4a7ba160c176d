"""Mixed precision holds on every device (issue 15): the losses and the descriptor head compute in float32
whatever autocast does, and non-finite descriptors are a precision error with a message.

The dtype tests do not rely on the CPU's autocast rules: embeddings are fed as fp16/bf16 next to float32
parameters, under `cuda_autocast` (CPU autocast plus CUDA's float32 op list, tests/cuda_autocast.py)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isc_research.finite import NonFiniteDescriptors, check_finite
from isc_research.losses import (
    ArcFaceLoss,
    BarlowTwinsLoss,
    ContrastiveXBMLoss,
    InfoNCEEntropyLoss,
    NTXentLoss,
    VisionForceLoss,
)
from isc_research.losses.arcface import arcface_logits
from isc_research.model import DescriptorModel
from tests.cuda_autocast import cuda_autocast

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIM, IMAGES = 16, 6
LOSSES = {
    "arcface": lambda: ArcFaceLoss(num_classes=IMAGES, embedding_dim=DIM, scale=40.0, margin=0.4),
    "barlow_twins": lambda: BarlowTwinsLoss(embedding_dim=DIM, projector_dims=[32, 32]),
    "contrastive_xbm": lambda: ContrastiveXBMLoss(embedding_dim=DIM, memory_size=64),
    "infonce_entropy": lambda: InfoNCEEntropyLoss(temperature=0.05, entropy_weight=30.0),
    "ntxent": lambda: NTXentLoss(temperature=0.1),
    "visionforce": lambda: VisionForceLoss(num_classes=IMAGES, embedding_dim=DIM, hidden_dim=32, wide_dim=64),
}
# The low-precision embeddings are rounded once; the loss on them must then be the float32 loss of the same
# rounded values up to float32 summation order: relative 1e-5 (fp16's own resolution is 1e-3, bf16's 8e-3).
RELATIVE_TOLERANCE = 1e-5


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(2 * IMAGES, DIM, generator=generator), dim=1)
    return embeddings, torch.arange(IMAGES).repeat_interleave(2)  # two views of each image


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_of_half_embeddings_is_the_float32_loss(name, dtype):
    torch.manual_seed(0)
    loss = LOSSES[name]()
    reference_loss = copy.deepcopy(loss)  # same parameters, same (empty) memory
    embeddings, labels = _batch()
    rounded = embeddings.to(dtype)
    expected = reference_loss(rounded.float(), labels)["loss"]
    low = rounded.clone().requires_grad_(True)
    with cuda_autocast(dtype):
        out = loss(low, labels)
    assert out["loss"].dtype == torch.float32
    assert math.isfinite(out["loss"].item())
    assert out["loss"].item() == pytest.approx(expected.item(), rel=RELATIVE_TOLERANCE)
    out["loss"].backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad).all()


def test_xbm_memory_stays_float32_under_half_embeddings():
    loss = ContrastiveXBMLoss(embedding_dim=DIM, memory_size=64)
    embeddings, labels = _batch()
    with cuda_autocast(torch.float16):
        loss(embeddings.half(), labels)
        loss(embeddings.half(), labels)
    assert loss.memory.dtype == torch.float32 and int(loss.filled) == 2 * len(labels)
    assert torch.equal(loss.memory[: len(labels)], embeddings.half().float())


def test_arcface_logits_of_a_half_cosine_next_to_a_float32_margin_term():
    """The GPU combination of issue 15: CUDA autocast runs `pow` in float32, so with a half `cosine` the margin
    term is float32 and met the half cosine in `scatter` ("Expected self.dtype to be equal to src.dtype")."""
    torch.manual_seed(0)
    cosine = torch.empty(8, 5).uniform_(-1, 1)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    with pytest.raises(RuntimeError, match="dtype"):  # the combination itself is what crashed
        cosine.half().scatter(1, labels[:, None], cosine[:, :1].float())
    expected = arcface_logits(cosine.half().float(), labels, scale=40.0, margin=0.4)
    with cuda_autocast(torch.float16):
        logits = arcface_logits(cosine.half(), labels, scale=40.0, margin=0.4)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-5)
    # the margin is applied to the true class only: s·cos(θ + m)
    theta = torch.acos(cosine.half().float()[0, 0])
    assert logits[0, 0].item() == pytest.approx(40.0 * math.cos(theta.item() + 0.4), rel=1e-5)
    assert logits[0, 1].item() == pytest.approx(40.0 * cosine.half().float()[0, 1].item(), rel=1e-5)


def test_descriptor_head_runs_in_float32_under_fp16_autocast():
    torch.manual_seed(0)
    model = DescriptorModel("test_resnet", embedding_dim=8, gem_p=3.0, neck="linear_bn").eval()
    images = torch.randn(2, 3, 32, 32)
    with cuda_autocast(torch.float16):
        descriptors = model(images)
        half_features = model.backbone.forward_features(images)
    assert half_features.dtype == torch.float16  # the backbone does run in half …
    assert descriptors.dtype == torch.float32  # … the head does not
    # the head of the half features, computed in float32 by hand: GeM p=3, Linear → BN, L2
    pooled = half_features.float().clamp(min=1e-6).pow(3).mean(dim=(-2, -1)).pow(1 / 3)
    torch.testing.assert_close(descriptors, F.normalize(model.projection(pooled), dim=-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(descriptors, model(images), rtol=0, atol=2e-2)  # fp16 backbone vs fp32: close


def _overflowing_effnet() -> tuple[DescriptorModel, torch.Tensor]:
    """Issue 15's reproduction at the smallest size that still overflows: a random-init EfficientNetV2-M
    (lyakaap's head: GeM p=1, linear_bn) in eval mode at 64 px (seed 0) has feature maps above float16's
    65,504 (at 48 px its maximum was ~3e4, at 512 px ~3e7)."""
    torch.manual_seed(0)
    model = DescriptorModel(
        "tf_efficientnetv2_m", pretrained=False, embedding_dim=256, gem_p=1.0, neck="linear_bn"
    ).eval()
    return model, torch.randn(2, 3, 64, 64)


@pytest.mark.slow
def test_effnetv2_fp16_overflow_is_a_precision_error_and_bf16_is_finite():
    model, images = _overflowing_effnet()
    with torch.no_grad():
        assert model.backbone.forward_features(images).abs().max() > torch.finfo(torch.float16).max
        with torch.autocast("cpu", dtype=torch.float16):
            fp16 = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(images)
    assert torch.isfinite(bf16).all()
    check_finite(bf16, "bf16 descriptors")
    with pytest.raises(
        NonFiniteDescriptors,
        match=r"2 of 2 descriptors \(validation queries\) are not finite"
        r".*float16 overflow.*trainer\.precision=bf16-mixed",
    ):
        from isc_research.finite import TRAINING_FIX

        check_finite(fp16, "validation queries", TRAINING_FIX)


def test_check_finite_counts_the_bad_rows_and_names_the_fix():
    vectors = np.ones((5, 3), np.float32)
    check_finite(vectors, "queries")
    vectors[1, 2], vectors[3, 0] = np.nan, np.inf
    with pytest.raises(
        NonFiniteDescriptors,
        match=r"2 of 5 descriptors \(model0 reference\) are not finite "
        r"\(NaN or inf; the first is row 1\).*eval\.precision=32",
    ):
        check_finite(vectors, "model0 reference")
    assert issubclass(NonFiniteDescriptors, FloatingPointError)  # stops training like a non-finite loss
