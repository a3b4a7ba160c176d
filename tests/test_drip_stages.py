"""S-square's drip stages (RECIPES §3.1; ensemble_training_scripts/*/README.md): each stage's classes (training
images + extra images, their ImageNet classes) and augmentation intensity, in the main process and in
persistent data workers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from isc_research.callbacks import ArcFaceDrip
from isc_research.data.disc import load_extra_classes
from isc_research.data.sampling import ClassStage
from isc_research.losses import ArcFaceLoss
from isc_research.train import build_datamodule, train

NO_EVAL = (
    "validate_before_training=false",
    "callbacks.retrieval_evaluation=null",
    "callbacks.model_checkpoint=null",
    "trainer.limit_val_batches=0",
)


def test_extra_classes_are_a_seeded_draw_of_the_folder_and_too_few_images_is_an_error(extra_class_images, tmp_path):
    records = load_extra_classes({"root": str(extra_class_images), "count": 5}, seed=0)
    every = sorted(p for p in extra_class_images.rglob("*.jpg"))
    assert len(records) == 5 and {r.path for r in records} <= set(every)  # found in the class sub-folders
    assert len({r.path for r in records}) == 5 and {r.split for r in records} == {"extra"}
    assert [r.path for r in records] == [
        r.path for r in load_extra_classes({"root": str(extra_class_images), "count": 5}, seed=0)
    ]
    assert [r.path for r in records] != every[:5]  # drawn, not ImageNet's first class folders only
    assert load_extra_classes({"root": None, "count": 0}) == [] and load_extra_classes(None) == []
    with pytest.raises(ValueError, match=r"holds 8 images, fewer than data.extra_classes.count=9"):
        load_extra_classes({"root": str(extra_class_images), "count": 9})
    with pytest.raises(ValueError, match=r"data.extra_classes.count=3 needs the folder"):
        load_extra_classes({"root": None, "count": 3})
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_extra_classes({"root": str(tmp_path / "nowhere"), "count": 3})


def test_stage_counts_fractions_and_intensity_carried_forward():
    loss = ArcFaceLoss(48 + 8, 8)
    drip = ArcFaceDrip(
        loss,
        [
            {"classes": 0.25, "intensity": 0.5},
            {"classes": 24, "extra_classes": 0.5, "loss_below": 2.0},
            {"classes": 12, "extra_classes": None, "loss_below": 1.0, "intensity": 0.75},
        ],
    )
    assert drip.resolve_stages(48, 8) == [ClassStage(12, 0, 0.5), ClassStage(24, 4, 0.5), ClassStage(12, 8, 0.75)]
    with pytest.raises(ValueError, match=r"drip stage 0: extra_classes=9 not in \[0, 8\]"):
        ArcFaceDrip(loss, [{"classes": 1, "extra_classes": 9}]).resolve_stages(48, 8)
    with pytest.raises(ValueError, match="more than loss.num_classes=56"):
        ArcFaceDrip(loss, [{"classes": None, "extra_classes": None}]).resolve_stages(60, 8)
    with pytest.raises(ValueError, match="intensity=1.5 must be in"):
        ArcFaceDrip(loss, [{"classes": 1, "intensity": 1.5}])


def test_a_stage_intensity_reaches_the_persistent_data_workers(smoke_cfg, extra_class_images):
    """The sampler hands each epoch's ClassStage to the workers with every sample: after a stage change the
    persistent worker's query views are those of the new intensity (computed here in the main process from the
    same per-sample seed) and not those of the old one; positions past the training images are extra images."""
    cfg = smoke_cfg(
        "augmentation=s_square",
        "data.num_workers=1",
        f"data.extra_classes.root={extra_class_images}",
        "data.extra_classes.count=8",
    )
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data(), datamodule.setup("fit")
    stage = {"now": ClassStage(8, 0, 0.0)}
    datamodule.class_stage = lambda: stage["now"]
    loader = datamodule.train_dataloader()
    assert loader.persistent_workers
    first = next(iter(loader))
    assert first["label"].max() < 8
    stage["now"] = ClassStage(40, 8, 1.0)  # the drip entered a stage: more classes, intensity 1.0
    loader.sampler.set_epoch(1)
    batches = list(loader)  # the same worker process (persistent)
    labels = torch.cat([b["label"] for b in batches])
    assert labels.max() >= 40 and labels.max() < 48  # extra images are classes 40…47 at this stage
    dataset, batch = loader.dataset, batches[0]
    for row, position in enumerate(batch["label"].tolist()):
        now = dataset[(1, position, ClassStage(40, 8, 1.0))]["views"]
        before = dataset[(1, position, ClassStage(40, 8, 0.0))]["views"]
        torch.testing.assert_close(batch["views"][row], now)
        torch.testing.assert_close(now[0], before[0])  # the clean reference view does not depend on the intensity
    assert any(
        (dataset[(1, p, ClassStage(40, 8, 1.0))]["views"][1] - dataset[(1, p, ClassStage(40, 8, 0.0))]["views"][1])
        .abs()
        .max()
        > 0.05
        for p in batch["label"].tolist()
    )
    extra = next(p for p in labels.tolist() if p >= 40)
    assert dataset.dataset.extra[extra - 40].split == "extra"


def test_a_drip_run_adds_the_extra_classes_at_their_stage_and_stops_after_the_last_stage(smoke_cfg, extra_class_images):
    """A tiny run: stage 0 classifies half of the 48 training images at intensity 0.5, stage 1 (from epoch 1)
    all of them plus the 8 extra images at 0.75; the ArcFace weight holds 48 + 8 rows, all 56 active; with
    final_stage_epochs=1 the run ends after epoch 1 although trainer.max_epochs is 5."""
    stages = (
        "loss.callbacks.drip.stages=[{classes: 0.5, intensity: 0.5},"
        "{classes: null, extra_classes: null, epoch: 1, intensity: 0.75}]"
    )
    cfg = smoke_cfg(
        "loss=arcface",
        "augmentation=s_square",
        stages,
        "loss.callbacks.drip.final_stage_epochs=1",
        *NO_EVAL,
        "trainer.max_epochs=5",
        "data.num_workers=1",
        f"data.extra_classes.root={extra_class_images}",
        "data.extra_classes.count=8",
    )
    metrics = train(cfg)
    checkpoint = torch.load(
        Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    state = checkpoint["state_dict"]
    assert state["loss.weight"].shape == (56, 32)
    assert int(state["loss.stage"]) == 1 and int(state["loss.active_classes"]) == 56
    assert metrics["train/active_classes"] == 56
    assert checkpoint["epoch"] == 1  # stopped after one epoch of the last stage, not at max_epochs
    assert {"final_stage_start": 1, "restart_pending": False} in checkpoint["callbacks"].values()


def test_a_recipe_with_imagenet_classes_names_the_missing_folder(smoke_cfg, extra_class_images):
    with pytest.raises(
        ValueError,
        match=r"data.extra_classes.count=800000 needs the folder of images: add "
        r"data.extra_classes.root=",
    ):
        train(smoke_cfg("experiment=s_square_sjy_test9", "trainer.max_epochs=1"))
    with pytest.raises(ValueError, match=r"holds 8 images, fewer than data.extra_classes.count=800000"):
        train(
            smoke_cfg(
                "experiment=s_square_sjy_test9", "trainer.max_epochs=1", f"data.extra_classes.root={extra_class_images}"
            )
        )


class StageProbe(L.Callback):
    """Per training epoch: the loader's batch size and length, and before the epoch's first optimiser step the
    optimiser's state size and learning rate and the plateau scheduler (object, best, bad-epoch count). In
    epoch 1 it then marks the schedule as an old run's would be (lr halved, 2 bad epochs), which a new stage
    must not inherit. Results in the class's `epochs` (instantiated by Hydra)."""

    epochs: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            StageProbe.epochs.append({"batch": len(batch["label"]), "batches": trainer.num_training_batches})

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        epoch = StageProbe.epochs[-1]
        if "adam_state" in epoch:
            return
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        epoch.update(
            adam_state=len(optimizer.state),
            lr=optimizer.param_groups[0]["lr"],
            scheduler=scheduler,
            best=scheduler.best,
            bad_epochs=scheduler.num_bad_epochs,
        )
        if len(StageProbe.epochs) == 2:
            scheduler.num_bad_epochs = 2
            for group in optimizer.param_groups:
                group["lr"] *= 0.5


PROBE = "+callbacks.probe._target_=tests.test_drip_stages.StageProbe"


def test_restart_each_stage_gives_the_stage_its_batch_epoch_length_and_a_fresh_optimiser(smoke_cfg):
    """S-square ran each drip stage as a new trainer.py run with its own --batch-size: stage 0 (12 of the 48
    training images, batch 4) has 12 // 4 = 3 steps per epoch, stage 1 (all 48, batch 6, from epoch 2) 48 // 6 = 8;
    at stage 1's first step Adam's state is empty and the plateau scheduler a new one (best = inf, no bad
    epochs, lr back to optimizer.lr), where in stage 0 they went on from epoch to epoch."""
    StageProbe.epochs = []
    stages = "loss.callbacks.drip.stages=[{classes: 12, batch_size: 4},{classes: null, epoch: 2, batch_size: 6}]"
    train(
        smoke_cfg(
            "loss=arcface",
            stages,
            "loss.callbacks.drip.restart_each_stage=true",
            "scheduler=plateau",
            "scheduler.patience=100",
            "optimizer.lr=0.001",
            *NO_EVAL,
            "trainer.max_epochs=3",
            "data.batch_size=2",
            PROBE,
        )
    )
    e0, e1, e2 = StageProbe.epochs
    assert [(e["batch"], e["batches"]) for e in (e0, e1, e2)] == [(4, 3), (4, 3), (6, 8)]
    assert e1["adam_state"] > 0 and e1["scheduler"] is e0["scheduler"] and e1["best"] < float("inf")
    assert e2["adam_state"] == 0 and e2["scheduler"] is not e1["scheduler"]
    assert (e2["lr"], e2["best"], e2["bad_epochs"]) == (pytest.approx(0.001), float("inf"), 0)


def test_without_restart_the_stages_share_one_epoch_length_and_optimiser(smoke_cfg):
    """cpu_arcface's drip: one epoch length (all 48 samples, the stage's 12 classes repeated), one optimiser."""
    StageProbe.epochs = []
    stages = "loss.callbacks.drip.stages=[{classes: 12},{classes: null, epoch: 1}]"
    train(
        smoke_cfg(
            "loss=arcface", stages, "scheduler=plateau", *NO_EVAL, "trainer.max_epochs=2", "data.batch_size=4", PROBE
        )
    )
    assert [e["batches"] for e in StageProbe.epochs] == [12, 12]
    assert (
        StageProbe.epochs[1]["adam_state"] > 0
        and StageProbe.epochs[1]["scheduler"] is StageProbe.epochs[0]["scheduler"]
    )


@pytest.mark.slow
def test_a_run_resumed_at_a_stage_change_ends_as_the_uninterrupted_one(data_dir, tmp_path):
    """The checkpoint written at the end of the epoch that entered stage 1 holds the new stage and the pending
    restart: resumed from it, the run rebuilds the loader at the stage's batch and the optimiser afresh, and
    ends with the weights of the run that was never stopped."""
    from tests.conftest import compose_config

    def run(out, *overrides):
        cfg = compose_config(
            "train",
            [
                "debug=smoke",
                f"paths.data_dir={data_dir}",
                f"paths.output_dir={out}",
                "loss=arcface",
                "loss.callbacks.drip.restart_each_stage=true",
                "loss.callbacks.drip.stages=[{classes: 12, batch_size: 4},{classes: null, epoch: 1, batch_size: 6}]",
                "scheduler=plateau",
                *NO_EVAL,
                "data.batch_size=2",
                *overrides,
            ],
        )
        OmegaConf.resolve(cfg)
        train(cfg)
        return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)

    stopped = run(tmp_path / "stopped", "trainer.max_epochs=1")
    assert (
        int(stopped["state_dict"]["loss.stage"]) == 1
        and {"final_stage_start": 1, "restart_pending": True} in stopped["callbacks"].values()
    )
    resumed = run(
        tmp_path / "resumed", "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'stopped' / 'checkpoints' / 'last.ckpt'}"
    )
    uninterrupted = run(tmp_path / "uninterrupted", "trainer.max_epochs=2")
    assert resumed["global_step"] == uninterrupted["global_step"] == 3 + 8
    for key, value in uninterrupted["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
