"""GeM pooling, the descriptor model, and loading backbone weights from a local file."""

from __future__ import annotations

import pytest
import torch

from isc_research.model import DescriptorModel, GeM, create_backbone


def naive_gem(x: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    b, c, h, w = x.shape
    out = torch.empty(b, c, dtype=x.dtype)
    for i in range(b):
        for j in range(c):
            values = [max(float(v), eps) ** p for v in x[i, j].flatten()]
            out[i, j] = (sum(values) / (h * w)) ** (1.0 / p)
    return out


@pytest.mark.parametrize("p", [1.0, 3.0, 7.5])
def test_gem_matches_naive_formula(p):
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64) * 2 - 0.2  # some negatives are clamped to eps
    assert torch.allclose(GeM(p).double()(x), naive_gem(x, p), atol=1e-10)


def test_gem_limits_and_learnable_p():
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64) + 0.1
    assert torch.allclose(GeM(1.0).double()(x), x.mean(dim=(2, 3)))
    assert torch.allclose(GeM(200.0).double()(x), x.amax(dim=(2, 3)), rtol=2e-2)
    gem = GeM(3.0, learnable=True)
    gem(torch.rand(1, 2, 3, 3)).sum().backward()
    assert gem.p.grad is not None and gem.p.requires_grad
    assert not GeM(3.0).p.requires_grad
    with pytest.raises(ValueError, match="p must be > 0"):
        GeM(0.0)


def test_descriptor_model_outputs_unit_vectors():
    model = DescriptorModel("test_resnet", embedding_dim=24).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 48, 48))
    assert out.shape == (3, 24)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_backbone_weights_from_local_file(tmp_path):
    torch.manual_seed(1)
    source = create_backbone("test_resnet")
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    loaded = create_backbone("test_resnet", weights_file=str(path))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_backbone_errors_are_actionable(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights_file"):
        create_backbone("test_resnet", weights_file=str(tmp_path / "missing.pth"))
    with pytest.raises((ValueError, RuntimeError), match="not_a_model"):
        create_backbone("not_a_model")


def test_last_stride_one_doubles_the_final_feature_map():
    x = torch.randn(1, 3, 64, 64)
    plain = DescriptorModel("test_resnet", 8).backbone.forward_features(x)
    stride1 = DescriptorModel("test_resnet", 8, last_stride=1).backbone.forward_features(x)
    assert stride1.shape[-1] == 2 * plain.shape[-1] and stride1.shape[1] == plain.shape[1]
    with pytest.raises(ValueError, match="layer4"):
        DescriptorModel("mobilenetv3_small_050", 8, last_stride=1)


def test_wave_block_scales_all_but_one_band_in_training_only():
    from isc_research.model import WaveBlock

    block = WaveBlock(band=0.3, factor=1.5)
    x = torch.ones(2, 4, 10, 6)
    torch.manual_seed(0)
    out = block.train()(x)
    rows = out[0, 0, :, 0]
    assert (rows == 1.0).sum() == 3 and (rows == 1.5).sum() == 7
    ones = torch.nonzero(rows == 1.0).flatten()
    assert (ones.diff() == 1).all()  # one contiguous band
    assert torch.equal(block.eval()(x), x)
    model = DescriptorModel("test_resnet", 8, wave_block=True)
    assert isinstance(model.backbone.layer2[1], WaveBlock) and isinstance(model.backbone.layer3[1], WaveBlock)


def test_necks_and_evaluation_gem_p():
    x = torch.randn(4, 3, 32, 32)
    bn = DescriptorModel("test_resnet", 8, neck="linear_bn")
    assert isinstance(bn.projection[1], torch.nn.BatchNorm1d) and bn.projection[0].bias is None
    assert DescriptorModel("test_resnet", 8, neck="linear_nobias").projection.bias is None
    with pytest.raises(ValueError, match="neck"):
        DescriptorModel("test_resnet", 8, neck="mlp")
    model = DescriptorModel("test_resnet", 8, gem_p=3.0, gem_eval_p=1.0).eval()
    features = model.backbone.forward_features(x)
    expected = torch.nn.functional.normalize(model.projection(features.clamp(min=1e-6).mean(dim=(-2, -1))), dim=-1)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize(
    "flip_average, flips",
    [("horizontal", [(-1,)]), ("horizontal_vertical", [(-1,), (-2,), (-2, -1)])],
)
def test_flip_average_is_the_flip_tta_descriptor_and_flip_invariant(flip_average, flips):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 40)
    model = DescriptorModel("test_resnet", 16, flip_average=flip_average).eval()
    with torch.no_grad():
        views = [model.descriptor(x)] + [model.descriptor(x.flip(dims)) for dims in flips]
        for view in views[1:]:  # the backbone itself is not flip-invariant
            assert not torch.allclose(views[0], view, atol=1e-3)
        expected = torch.nn.functional.normalize(sum(views), dim=-1)
        assert torch.allclose(model(x), expected, atol=1e-6)
        for dims in flips:
            assert torch.allclose(model(x), model(x.flip(dims)), atol=1e-6)
        if flip_average == "horizontal":  # the left-right mirror only: an upside-down image is another one
            assert not torch.allclose(model(x), model(x.flip(-2)), atol=1e-3)
    model.train()  # training scores the views as they are: the loss sees the flips of the augmentation
    torch.manual_seed(1)
    a = model(x)
    model.flip_average = "none"
    torch.manual_seed(1)
    assert torch.allclose(a, model(x))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model.descriptor(x))
    with pytest.raises(ValueError, match="model.flip_average='vertical' is unknown"):
        DescriptorModel("test_resnet", 16, flip_average="vertical")


def test_grayscale_input_greys_normalised_images():
    from isc_research.model import to_grayscale
    from isc_research.augment.policies import ToNormalisedTensor
    from PIL import Image
    import numpy as np

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    got = to_grayscale(ToNormalisedTensor()(rgb)[None])[0]
    expected = ToNormalisedTensor()(rgb.convert("L").convert("RGB"))
    assert torch.allclose(got, expected, atol=0.02)  # PIL rounds the luma to integers
