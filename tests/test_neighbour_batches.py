"""Batches of mutually similar training images (data.neighbour_batches; the "separate" retriever, RECIPES §6):
neighbour lists from descriptors, each global batch one anchor's neighbour group, deterministic per (seed,
epoch), resumable, and sharded over DDP ranks like every other batch (isc_research.data.sampling.EpochSampler)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
from isc_research.data.neighbours import (
    compute_neighbour_lists,
    load_neighbour_lists,
    neighbour_lists,
    save_neighbour_lists,
)
from isc_research.data.sampling import ClassStage, EpochSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def clustered(n_clusters: int = 4, size: int = 5, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised descriptors in tight, well separated clusters (rows shuffled) and each row's cluster."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:n_clusters]  # orthonormal: far apart
    cluster = rng.permutation(np.repeat(np.arange(n_clusters), size))
    x = centres[cluster] + 0.05 * rng.normal(size=(len(cluster), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), cluster


def random_groups(n: int = 20, k: int = 6, seed: int = 0) -> np.ndarray:
    """Neighbour lists of n samples: each row itself first, then k − 1 other distinct samples."""
    rng = np.random.default_rng(seed)
    return np.stack([[i, *rng.choice(np.delete(np.arange(n), i), k - 1, replace=False)] for i in range(n)])


def global_batches(sampler: EpochSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    indices = [i for _, i in sampler]
    g = sampler.global_batch
    return [indices[s : s + g] for s in range(0, len(indices), g)]


def test_neighbour_lists_are_each_images_cluster_itself_first():
    x, cluster = clustered()
    lists = neighbour_lists(x, k=5)
    assert lists.shape == (20, 5) and lists.dtype == np.int32
    assert (lists[:, 0] == np.arange(20)).all()  # cosine 1 with itself
    for i, row in enumerate(lists):
        assert set(row) == set(np.flatnonzero(cluster == cluster[i]))
    sims = np.einsum("ij,ikj->ik", x, x[lists])
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # nearest first


def test_every_global_batch_is_one_anchors_group_and_an_epoch_visits_distinct_anchors():
    groups = random_groups()
    batches = global_batches(EpochSampler(20, batch_size=4, seed=3, groups=groups), epoch=0)
    assert len(batches) == 5  # one pass: 20 // 4 global batches
    anchors = [b[0] for b in batches]  # row i starts with i
    assert [list(groups[a, :4]) for a in anchors] == batches
    assert len(set(anchors)) == 5


def test_same_seed_same_batches_other_seed_or_epoch_other_batches():
    groups = random_groups()
    first = global_batches(EpochSampler(20, 4, seed=3, groups=groups), 1)
    assert global_batches(EpochSampler(20, 4, seed=3, groups=groups), 1) == first
    assert global_batches(EpochSampler(20, 4, seed=4, groups=groups), 1) != first
    assert global_batches(EpochSampler(20, 4, seed=3, groups=groups), 2) != first


def test_first_anchor_walks_the_images_in_order_across_epochs():
    """The source's sim_pt_start: step t of the run trains on the group of image sim_pt_start + t (wrapping)."""
    groups = random_groups()
    sampler = EpochSampler(20, 4, seed=3, groups=groups, first_anchor=13)
    anchors = [b[0] for e in range(3) for b in global_batches(sampler, e)]
    assert anchors == [(13 + t) % 20 for t in range(15)]
    steps = EpochSampler(20, 4, groups=groups, first_anchor=13, steps=7)  # fixed-length epochs continue too
    assert [b[0] for e in range(2) for b in global_batches(steps, e)] == [(13 + t) % 20 for t in range(14)]


def test_a_resumed_run_gets_the_same_remaining_batches():
    """After a restart the sampler is a new object; the trainer's epoch (current_epoch) fixes its order, so
    the batches after a mid-epoch point are those the interrupted run would have drawn."""
    groups = random_groups(n=30)
    before = EpochSampler(30, 2, seed=5, groups=groups, steps=9, current_epoch=lambda: 4)
    seen = list(before)
    restarted = EpochSampler(30, 2, seed=5, groups=groups, steps=9, current_epoch=lambda: 4)
    assert list(restarted)[10:] == seen[10:] and seen[0][0] == 4  # (epoch, index) pairs: augmentations follow too


def test_ddp_ranks_take_disjoint_slices_of_the_same_groups():
    groups = random_groups(n=24, k=8)
    single = global_batches(EpochSampler(24, 6, seed=2, groups=groups), 3)
    # each rank yields batch_size=3 indices per global batch of 6: regroup each rank's stream per global batch
    streams = []
    for r in (0, 1):
        sampler = EpochSampler(24, 3, seed=2, groups=groups, num_replicas=2, rank=r)
        sampler.set_epoch(3)
        idx = [i for _, i in sampler]
        streams.append([idx[s : s + 3] for s in range(0, len(idx), 3)])
    for b, whole in enumerate(single):
        assert not set(streams[0][b]) & set(streams[1][b])
        assert streams[0][b] + streams[1][b] == whole


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"groups": random_groups(k=3)}, "do not fit"),
        ({"groups": random_groups(n=19)}, "do not fit"),
        ({"groups": random_groups(), "stage": lambda: ClassStage(10)}, "ArcFace drip"),
        ({"groups": random_groups(), "first_anchor": 20}, "first_anchor=20"),
    ],
)
def test_sampler_rejects_groups_that_cannot_make_its_batches(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpochSampler(20, 4, **kwargs)


def test_loading_lists_checks_them_against_the_training_set(tmp_path):
    path = save_neighbour_lists(random_groups(), tmp_path / "neighbours.npy")
    assert (load_neighbour_lists(path, 20, 6) == random_groups()).all()
    with pytest.raises(ValueError, match=r"neighbours.npy: 20 rows, but the training set has 21"):
        load_neighbour_lists(path, 21, 6)
    with pytest.raises(ValueError, match=r"6 neighbours per image cannot fill a batch of 8"):
        load_neighbour_lists(path, 20, 8)
    with pytest.raises(FileNotFoundError, match="neighbour_batches.neighbours='nope.npy'"):
        load_neighbour_lists("nope.npy", 20, 6)


def test_a_run_resumed_from_another_folders_checkpoint_reads_that_runs_lists(tmp_path):
    """ckpt_path=<earlier run>/checkpoints/last.ckpt into a new folder: the earlier run's lists (not new ones
    from a model that is about to be replaced by the checkpoint's), copied into the new folder for its next resume."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from isc_research.train import neighbour_batches

    earlier, new = tmp_path / "earlier", tmp_path / "new"
    (earlier / "checkpoints").mkdir(parents=True)
    new.mkdir()
    save_neighbour_lists(random_groups(), earlier / "neighbours.npy")
    cfg = OmegaConf.create(
        {
            "data": {"batch_size": 4, "neighbour_batches": {"enabled": True, "neighbours": None, "k": 6}},
            "trainer": {"devices": 1, "num_nodes": 1},
        }
    )
    datamodule = SimpleNamespace(data=SimpleNamespace(training=list(range(20))))
    lists = neighbour_batches(cfg, None, datamodule, new, earlier / "checkpoints" / "last.ckpt")
    assert (lists == random_groups()).all() and (np.load(new / "neighbours.npy") == lists).all()


class Labels(L.Callback):
    """Test helper: the training labels (= training image indices) of every batch."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch["label"].tolist())


@pytest.mark.slow
def test_a_training_run_computes_the_lists_from_its_initial_model_and_trains_on_their_groups(
    smoke_cfg, monkeypatch, tmp_path
):
    from isc_research import train as train_module

    recorder = Labels()
    build = train_module.build_trainer
    monkeypatch.setattr(
        train_module, "build_trainer", lambda cfg, out, callbacks: build(cfg, out, [*callbacks, recorder])
    )
    cfg = smoke_cfg(
        "data.neighbour_batches.enabled=true",
        "data.neighbour_batches.k=10",
        "data.neighbour_batches.first_anchor=40",
        "trainer.max_epochs=1",
        "validate_before_training=false",
    )
    train_module.train(cfg)
    lists = np.load(Path(cfg.paths.output_dir) / "neighbours.npy")
    assert lists.shape == (48, 10)
    assert recorder.batches == [list(lists[(40 + t) % 48, :8]) for t in range(6)]
    # the lists are the initial model's: the same seed and build order give the same model before training
    L.seed_everything(cfg.seed, workers=True)
    datamodule = train_module.build_datamodule(cfg)
    datamodule.setup("fit")
    loss, _ = train_module.build_loss(cfg.loss, num_classes=datamodule.num_train_labels)
    initial = train_module.build_module(cfg, loss).model
    again = compute_neighbour_lists(initial, datamodule.data.training, cfg.data.eval_size, 10, tmp_path)
    assert (again == lists).all()
    assert initial.training  # extraction leaves the model in training mode
