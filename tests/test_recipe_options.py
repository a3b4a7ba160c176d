"""Options the recipes need: a fixed epoch length in steps (VisionForce's 8,000 iterations per epoch), the last
feature map of the stages (lyakaap's features_only), a ViT's CLS token (the "separate" retriever)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from isc_research.data.sampling import EpochSampler
from isc_research.model import DescriptorModel


def test_epoch_of_fixed_steps_covers_the_set_more_than_once():
    sampler = EpochSampler(10, batch_size=4, seed=1, steps=7)
    order = [i for _, i in sampler]
    assert len(sampler) == len(order) == 28  # 7 steps × 4, longer than one pass over 10 samples
    counts = Counter(order)
    assert set(counts) == set(range(10)) and max(counts.values()) - min(counts.values()) <= 1  # whole passes first
    ranks = [[i for _, i in EpochSampler(10, 2, seed=1, num_replicas=2, rank=r, steps=7)] for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(order)  # two processes split the same global batches
    with pytest.raises(ValueError, match="steps_per_epoch"):
        EpochSampler(10, 4, steps=0)


def test_last_map_pools_the_stages_output_without_the_conv_head():
    torch.manual_seed(0)
    model = DescriptorModel("efficientnet_b0", embedding_dim=16, features="last_map", neck="linear_bn").eval()
    assert model.projection[0].in_features == 320  # EfficientNet-B0's last stage, not conv_head's 1,280
    assert not any(k.startswith("backbone.conv_head") for k in model.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stages = model.backbone.forward_intermediates(images, indices=1, intermediates_only=True)[-1]
        expected = torch.nn.functional.normalize(model.projection(model.pool(stages)), dim=-1)
        assert torch.allclose(model(images), expected, atol=1e-6)
    with pytest.raises(ValueError, match="model.features"):
        DescriptorModel("efficientnet_b0", features="head")


def test_cls_pooling_takes_the_class_token():
    torch.manual_seed(0)
    model = DescriptorModel(
        "vit_tiny_patch16_224", embedding_dim=8, pooling="cls", backbone_kwargs={"img_size": 32}
    ).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.backbone.forward_features(images)
        assert torch.allclose(model(images), torch.nn.functional.normalize(model.projection(tokens[:, 0]), dim=-1))
    with pytest.raises(ValueError, match="pooling=cls"):
        DescriptorModel("resnet18", pooling="cls").eval()(torch.randn(1, 3, 32, 32))


def test_visionforce_head_feeds_each_loss_term_its_source_feature():
    """RECIPES §4: wide CE on the 8192 projector output (from GeM), the 256-d CE and distillation on the matrix
    head's BN output (from the 8192 output), the triplet on the GeM feature; D²LV's descriptor is the wide output."""
    import torch.nn.functional as F

    from isc_research.losses.visionforce import VisionForceLoss, batch_hard_soft_margin_triplet, soft_cross_entropy

    torch.manual_seed(0)
    model = DescriptorModel("test_resnet", embedding_dim=8, head="visionforce", head_hidden_dim=16, head_wide_dim=24)
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 0, 1, 1, 2, 2])
    parts = model.forward_parts(images)
    assert parts["pooled"].shape == (6, model.backbone.num_features) and parts["wide"].shape == (6, 24)
    assert torch.allclose(parts["head"], model.projection.matrix(parts["wide"]))
    assert torch.allclose(parts["descriptor"], F.normalize(parts["head"], dim=-1))
    loss = VisionForceLoss(3, 8, hidden_dim=16, wide_dim=24, model_head=True)
    assert loss.wide_head is None and loss.wants_parts
    out = loss(parts, labels)
    wide_logits, head_logits = loss.wide_classifier(parts["wide"]), loss.descriptor_classifier(parts["head"])
    expected = (
        10 * F.cross_entropy(wide_logits, labels, label_smoothing=0.1)
        + F.cross_entropy(head_logits, labels, label_smoothing=0.1)
        + 2 * soft_cross_entropy(head_logits, wide_logits, 2.0)
        + batch_hard_soft_margin_triplet(parts["pooled"], labels)
    )
    assert torch.allclose(out["loss"], expected)
    with pytest.raises(ValueError, match="model.head"):
        loss(parts["descriptor"], labels)

    d2lv = DescriptorModel("test_resnet", embedding_dim=24, head="d2lv", head_hidden_dim=16, head_wide_dim=24).eval()
    with torch.no_grad():
        assert torch.allclose(d2lv(images), F.normalize(d2lv.projection.projector(d2lv.pooled(images)), dim=-1))
    no_head = VisionForceLoss(
        3, 24, hidden_dim=16, wide_dim=24, descriptor_weight=0.0, distillation_weight=0.0, model_head=True
    )
    assert no_head.descriptor_classifier is None and set(no_head(d2lv.train().forward_parts(images), labels)) == {
        "loss",
        "ce_wide",
        "triplet",
    }
    with pytest.raises(ValueError, match="head_wide_dim"):
        DescriptorModel("test_resnet", embedding_dim=8, head="d2lv", head_hidden_dim=16, head_wide_dim=24)


def test_arcface_view_weights_train_on_the_query_view_and_mix_every_kth_epoch():
    """S-square (RECIPES §3.1): ArcFace on the query view only; sjy_test5 every 5th epoch both views at 0.5."""
    import torch.nn.functional as F

    from isc_research.losses.arcface import ArcFaceLoss, arcface_logits

    torch.manual_seed(0)
    embeddings, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])  # image by image: (reference, query)
    loss = ArcFaceLoss(3, 4, view_weights=[0.0, 1.0], mixed_every=5, mixed_weights=[0.5, 0.5])
    cosine = F.normalize(embeddings, dim=1) @ F.normalize(loss.weight, dim=1).T
    per_row = F.cross_entropy(arcface_logits(cosine, labels, 40.0, 0.4), labels, reduction="none")
    loss.set_epoch(1)
    assert torch.allclose(loss(embeddings, labels)["loss"], per_row[1::2].mean())  # query rows only
    loss.set_epoch(5)
    assert torch.allclose(loss(embeddings, labels)["loss"], 0.5 * per_row[0::2].mean() + 0.5 * per_row[1::2].mean())
    with pytest.raises(ValueError, match="sum to 1"):
        ArcFaceLoss(3, 4, view_weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="n_views"):
        ArcFaceLoss(3, 4, view_weights=[0.0, 0.0, 1.0])(embeddings[:4], labels[:4])


def test_bicubic_evaluation_resize():
    """imgFp resizes bicubically at inference (RECIPES §7): eval.interpolation=bicubic reaches the transform."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import v2 as T

    from isc_research.extract import EvalTransform

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    bicubic = EvalTransform(32, "square", [1.0], "bicubic")
    resized = T.functional.resize(image, [32, 32], T.InterpolationMode.BICUBIC, antialias=True)
    assert torch.equal(bicubic(image)[0], torch.from_numpy(np.array(resized)).permute(2, 0, 1))  # uint8 CHW
    assert not torch.equal(bicubic(image)[0], EvalTransform(32)(image)[0])
    assert (
        bicubic.fingerprint()["interpolation"] == "bicubic" and "interpolation" not in EvalTransform(32).fingerprint()
    )
    with pytest.raises(ValueError, match="eval.interpolation"):
        EvalTransform(32, interpolation="nearest")


def test_visionforce_loader_pads_10_and_crops_back():
    """VisionForce's loader (RECIPES §4): pad 10 px black, random crop to the size — some offset in [0, 20]²."""
    import numpy as np
    from PIL import Image, ImageOps

    from isc_research.augment.visionforce import pad_and_crop

    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    padded = np.asarray(ImageOps.expand(image, border=10, fill=0))
    for seed in range(5):
        out = np.asarray(pad_and_crop(image, np.random.default_rng(seed), None, size=32, pad=10))
        assert out.shape == (32, 32, 3)
        assert any(np.array_equal(out, padded[y : y + 32, x : x + 32]) for y in range(21) for x in range(21))
    assert pad_and_crop(image, np.random.default_rng(0), None, size=32, pad=0) is image
