"""Loss state in checkpoints (memory bank, ArcFace drip stage), the drip callback, optimizer groups, extra
negatives, ground-truth pairs, and a Barlow Twins backbone reused by another run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from isc_research.callbacks import ArcFaceDrip
from isc_research.cli.export_backbone import export_backbone
from isc_research.data.sampling import ClassStage, EpochSampler
from isc_research.losses import ArcFaceLoss, BarlowTwinsLoss
from isc_research.losses.build import build_loss
from isc_research.model import DescriptorModel
from isc_research.module import CopyDetectionModule, training_inputs
from isc_research.optim import parameter_groups
from isc_research.train import build_datamodule, build_module, train

# training only: no µAP evaluation (last.ckpt is still written after every epoch)
NO_EVAL = (
    "validate_before_training=false",
    "callbacks.retrieval_evaluation=null",
    "callbacks.model_checkpoint=null",
    "trainer.limit_val_batches=0",
)
FAST = (*NO_EVAL, "trainer.max_epochs=1")


def checkpoint_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_memory_bank_survives_checkpoint_and_resume(smoke_cfg):
    cfg = smoke_cfg("loss=contrastive_xbm", "loss.memory_size=500", *FAST)
    train(cfg)
    run = Path(cfg.paths.output_dir)
    first = checkpoint_state(run)
    steps = 48 // 8  # tiny mini-DISC: 48 training images, batch 8, 2 views
    assert int(first["loss.iteration"]) == steps and int(first["loss.filled"]) == steps * 16
    assert int(first["loss.pointer"]) == steps * 16 and first["loss.memory"][: steps * 16].norm(dim=1).min() > 0.99

    longer = run.parent / "longer"  # a finished run is continued in a new folder (isc_research.runs)
    train(
        smoke_cfg(
            "loss=contrastive_xbm",
            "loss.memory_size=500",
            *NO_EVAL,
            "trainer.max_epochs=2",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            f"paths.output_dir={longer}",
        )
    )
    second = checkpoint_state(longer)
    assert int(second["loss.iteration"]) == 2 * steps and int(second["loss.filled"]) == 2 * steps * 16
    # the resumed run appended after the restored rows instead of refilling from slot 0
    torch.testing.assert_close(second["loss.memory"][: steps * 16], first["loss.memory"][: steps * 16])
    assert second["loss.memory_labels"][: steps * 16].equal(first["loss.memory_labels"][: steps * 16])


def test_memory_start_as_a_fraction_is_fixed_from_the_run_length(smoke_cfg):
    cfg = smoke_cfg(
        "loss=contrastive_xbm", "loss.memory_size=500", "loss.start_iteration=0.75", *NO_EVAL, "trainer.max_epochs=2"
    )
    train(cfg)
    state = checkpoint_state(Path(cfg.paths.output_dir))
    steps = 2 * (48 // 8)  # 12 batches; the memory joins after round(0.75 × 12) = 9 of them
    assert int(state["loss.iteration"]) == steps and int(state["loss.filled"]) == (steps - 9) * 16


@pytest.mark.slow
def test_arcface_drip_grows_classes_and_checkpoints_the_stage(smoke_cfg):
    stages = "loss.callbacks.drip.stages=[{classes: 0.5},{classes: null, epoch: 1}]"
    # a data worker prefetches at iterator creation: the sampler must already see stage 0's class count
    cfg = smoke_cfg("loss=arcface", stages, *NO_EVAL, "trainer.max_epochs=2", "data.num_workers=1")
    metrics = train(cfg)
    state = checkpoint_state(Path(cfg.paths.output_dir))
    assert int(state["loss.stage"]) == 1 and int(state["loss.active_classes"]) == 48
    assert metrics["train/active_classes"] == 48


def test_drip_initialises_class_weights_from_image_embeddings(smoke_cfg):
    cfg = smoke_cfg("loss=arcface", "augmentation=none")  # no augmentation: every view is the plain image
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data(), datamodule.setup("fit")
    loss, (drip,) = build_loss(cfg.loss, num_classes=datamodule.num_train_labels)
    assert isinstance(drip, ArcFaceDrip) and [s.size for s in drip.resolve_stages(48)] == [16, 32, 48]
    module = build_module(cfg, loss).eval()
    running = {k: v.clone() for k, v in module.model.state_dict().items() if "running" in k or "num_batches" in k}
    assert running, "the test backbone must have BatchNorm layers"
    centres = drip.class_centres(datamodule, module, datamodule.data.training[3:7])
    images = torch.stack(
        [
            datamodule.plain_transform(__import__("PIL.Image").Image.open(r.path).convert("RGB"))
            for r in datamodule.data.training[3:7]
        ]
    )
    # BatchNorm on batch statistics, as the training step that the centres must match (not the running ones,
    # which at a fresh run's stage 0 are still the initial (0, 1)); the running statistics stay untouched
    for key, value in module.model.state_dict().items():
        if key in running:
            assert value.equal(running[key]), key
    assert not module.training
    with torch.no_grad():
        expected = module.model.train()(images)
        eval_mode = module.model.eval()(images)
    torch.testing.assert_close(F.normalize(centres, dim=1), expected, rtol=1e-4, atol=1e-5)
    assert (F.normalize(centres, dim=1) - eval_mode).abs().max() > 1e-2  # the old eval-mode centres differ
    for bad in (0, 49, 1.5):  # 0 is not "all classes" (null is)
        with pytest.raises(ValueError, match="drip stage 0: classes="):
            ArcFaceDrip(loss, [{"classes": bad}]).resolve_stages(48)
    loss.set_classes(0, torch.randn(3, loss.weight.shape[1]))
    loss.set_classes(3, centres)
    assert int(loss.active_classes) == 7


def test_epoch_sampler_draws_only_active_classes_and_is_rank_independent():
    limit = {"n": 5}
    a, b = (EpochSampler(12, 4, seed=3, stage=lambda: ClassStage(limit["n"])) for _ in range(2))
    first = [i for _, i, _ in a]
    assert len(first) == 12 and set(first) == set(range(5)) and first == [i for _, i, _ in b]
    limit["n"] = 12
    a.set_epoch(1)
    assert sorted(i for _, i, _ in a) == list(range(12))


def test_optimizer_reaches_loss_parameters_without_decaying_arcface_weights():
    model = {"backbone": "test_resnet", "embedding_dim": 8}
    arcface = CopyDetectionModule(model, ArcFaceLoss(10, 8), optimizer=torch.optim.SGD)
    decay, no_decay = parameter_groups(arcface)
    assert any(p is arcface.loss.weight for p in no_decay["params"])
    assert not any(p is arcface.loss.weight for p in decay["params"])
    barlow = CopyDetectionModule(model, BarlowTwinsLoss(8, [16, 16]), optimizer=torch.optim.SGD)
    decay, _ = parameter_groups(barlow)
    assert any(p is barlow.loss.projector[0].weight for p in decay["params"])


def test_extra_negatives_come_unaugmented_with_labels_no_training_image_has(smoke_cfg):
    cfg = smoke_cfg("data.extra_negatives=2")
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data(), datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["negatives"].shape == (8, 2, 3, 48, 48)
    assert (batch["negative_label"] >= len(datamodule.data.training)).all()
    images, labels = training_inputs(batch)
    assert images.shape[0] == 8 * 2 + 8 * 2 and labels.shape == (32,)
    assert labels[16:].tolist() == batch["negative_label"].flatten().tolist()
    # mixed (B, S) label sets: negatives are padded with -1
    batch["label"] = torch.stack([batch["label"], torch.full_like(batch["label"], -1)], dim=1)
    _, labels = training_inputs(batch)
    assert labels.shape == (32, 2) and (labels[16:, 1] == -1).all()


def test_ground_truth_pairs_are_held_out_of_validation(smoke_cfg):
    cfg = smoke_cfg("data.gt_pairs.enabled=true", "data.extra_negatives=3", "data.batch_size=2")
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data(), datamodule.setup("fit")
    pairs, gt = datamodule.train_pairs, datamodule.data.ground_truth
    assert pairs and all(q.id not in gt.query_ids for q, _ in pairs)
    full = build_datamodule(smoke_cfg())
    full.prepare_data(), full.setup("fit")
    assert all(full.data.ground_truth.matches[q.id] == r.id for q, r in pairs)
    assert len(gt.query_ids) + len(pairs) == len(full.data.ground_truth.query_ids)
    batch = next(iter(datamodule.train_dataloader()))
    matched = {r.id for _, r in pairs}
    pool = [r for r in datamodule.data.references if r.id not in matched]
    assert batch["views"].shape[1] == 2 and batch["negatives"].shape[1] == 3
    drawn = batch["negative_label"].flatten() - len(pairs)
    assert all(0 <= int(i) < len(pool) for i in drawn)


@pytest.mark.slow
def test_barlow_twins_backbone_initialises_another_run(smoke_cfg, tmp_path):
    cfg = smoke_cfg("loss=barlow_twins", "loss.projector_dims=[64,64]", *FAST)
    train(cfg)
    exported = export_backbone(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", tmp_path / "bt.pth")
    model = DescriptorModel("test_resnet", embedding_dim=8, weights_file=str(tmp_path / "bt.pth"))
    state = model.backbone.state_dict()
    assert exported.keys() == state.keys()
    for name, value in exported.items():
        torch.testing.assert_close(state[name], value)
    fresh = DescriptorModel("test_resnet", embedding_dim=8).backbone.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in exported.items() if v.is_floating_point())
