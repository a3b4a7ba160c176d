"""isc-train-verifier end to end on the tiny mini-DISC: checkpoint → PairwiseVerifier, hard negatives, learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from isc_research.data.disc import load_disc
from isc_research.images import load_image
from isc_research.model import DescriptorModel
from isc_research.verifier import PairwiseVerifier
from isc_research.verifier.train import build_anchors, train_verifier
from tests.conftest import compose_config

TINY = [
    "dataset.build.n_references=24",
    "dataset.build.n_training=48",
    "dataset.build.n_queries=16",
    "dataset.build.image_size=96",
]  # the tiny mini-DISC of debug=smoke, shared with the other tests


@pytest.fixture
def verifier_cfg(data_dir, tmp_path):
    def make(*overrides: str):
        cfg = compose_config(
            "train_verifier",
            [
                f"paths.data_dir={data_dir}",
                f"paths.output_dir={tmp_path / 'run'}",
                *TINY,
                "backbone=test_resnet",
                "data.pair_size=32",
                "data.batch_size=8",
                "data.num_workers=0",
                "torch_threads=1",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
                "trainer.log_every_n_steps=1",
                "verifier_device=cpu",
                "mining.device=cpu",
                *overrides,
            ],
        )
        OmegaConf.resolve(cfg)
        return cfg

    return make


def _descriptor_checkpoint(path: Path) -> Path:
    """An isc-train-style checkpoint of an untrained test_resnet descriptor model (hard-negative mining)."""
    torch.manual_seed(0)
    model = DescriptorModel("test_resnet", embedding_dim=16)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {
                "model": {"backbone": "test_resnet", "embedding_dim": 16},
                "config": {"data": {"eval_size": 32}},
            },
        },
        path,
    )
    return path


def _images(records):
    return [load_image(r.path) for r in records]


def test_smoke_training_writes_a_checkpoint_that_from_checkpoint_scores(verifier_cfg, tmp_path):
    mining = _descriptor_checkpoint(tmp_path / "descriptor.ckpt")
    cfg = verifier_cfg(
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        f"mining.ckpt_path={mining}",
        "mining.k=3",
        "pairs.gt_pairs.enabled=true",
    )
    metrics = train_verifier(cfg)
    assert metrics["negatives"].startswith("hard: 3 nearest")
    assert {"init/uAP", "descriptor/uAP"} <= set(metrics)
    # one epoch, one checkpoint: reloaded by PairwiseVerifier, it scores the validation pairs as the loop did
    assert metrics["best/uAP"] == pytest.approx(metrics["val/uAP"], abs=1e-6)
    # 16 queries, 35 % matched → 6 true pairs; half of them became training pairs and left validation
    assert metrics["val/positives"] == 3
    assert metrics["val/pairs"] == 3 + 3 * (16 - 3)
    assert metrics["best/pairs_per_s"] > 0
    assert (Path(cfg.paths.output_dir) / "metrics.json").is_file()

    verifier = PairwiseVerifier.from_checkpoint(metrics["best/checkpoint"], device="cpu", batch_size=5)
    assert isinstance(verifier.name, str) and verifier.name
    data = load_disc(cfg.dataset)
    queries, references = _images(data.queries[:7]), _images(data.references[:7])
    scores = verifier.score_pairs(queries, references)
    assert scores.shape == (7,) and scores.dtype == np.float64
    assert ((scores >= 0) & (scores <= 1)).all()
    np.testing.assert_array_equal(scores, verifier.score_pairs(queries, references))
    np.testing.assert_allclose(scores[2:4], verifier.score_pairs(queries[2:4], references[2:4]), atol=1e-6)
    assert verifier.score_pairs([], []).shape == (0,)
    with pytest.raises(ValueError, match="as many references"):
        verifier.score_pairs(queries, references[:2])

    # isc-match instantiates the `verifier` group
    group = OmegaConf.load(Path(__file__).parents[1] / "conf" / "verifier" / "pairwise.yaml")
    group.ckpt_path, group.device = metrics["best/checkpoint"], "cpu"
    from_config = instantiate(group)
    np.testing.assert_array_equal(from_config.score_pairs(queries, references), scores)
    with pytest.raises(ValueError, match="not an isc-train-verifier checkpoint"):
        PairwiseVerifier.from_checkpoint(mining)


def test_hard_negatives_are_the_nearest_images_except_the_true_ones(verifier_cfg):
    data = load_disc(verifier_cfg().dataset)
    pool = data.training + data.references

    class Index:  # unit vectors at angle ∝ pool position (the query: 5.4): similarity falls with distance
        def matrix(self, records):
            order = {r.id: float(i) for i, r in enumerate(pool)}
            angles = np.array([order.get(r.id, 5.4) for r in records]) * np.pi / (2 * len(pool))
            return np.stack([np.cos(angles), np.sin(angles)], axis=1)

    gt_pair = (data.queries[0], data.references[0])
    anchors = build_anchors(data, [gt_pair], Index(), k=2)
    assert len(anchors) == len(data.training) + 1
    first = anchors[0]  # training image 0: itself excluded → the next two training images
    assert first.augment and first.query == first.reference == data.training[0]
    assert [r.id for r in first.negatives] == [data.training[1].id, data.training[2].id]
    last = anchors[-1]  # the query sits at 5.4: pool images 5 then 6 (its true reference is far away anyway)
    assert not last.augment and last.reference == data.references[0]
    assert [r.id for r in last.negatives] == [pool[5].id, pool[6].id]
    near_reference = build_anchors(data, [(data.queries[0], pool[6])], Index(), k=2)[-1]
    assert [r.id for r in near_reference.negatives] == [pool[5].id, pool[4].id]  # its true reference 6 is skipped
    assert all(a.negatives == () for a in build_anchors(data, [], None, k=2))


@pytest.mark.slow
def test_short_training_separates_copies_from_other_images(verifier_cfg):
    """Eight epochs on 48 training images with identical halves as positives (augmentation=none) and random
    other images as negatives: the last checkpoint must rank (image, itself) above (image, another image)."""
    cfg = verifier_cfg(
        "augmentation=none",
        "trainer.max_epochs=8",
        "optimizer.lr=0.003",
        "validate_before_training=false",
        "trainer.check_val_every_n_epoch=8",
    )
    train_verifier(cfg)
    verifier = PairwiseVerifier.from_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", device="cpu")
    images = _images(load_disc(cfg.dataset).training)
    same = verifier.score_pairs(images, images)
    other = verifier.score_pairs(images, images[1:] + images[:1])
    auc = roc_auc_score([1] * len(images) + [0] * len(images), np.concatenate([same, other]))
    assert auc > 0.7  # chance: 0.5
