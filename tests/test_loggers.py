"""Experiment tracking: CSV, TensorBoard and W&B (offline) get the metrics, the resolved config, the PR curve
and example matches; and trainer=gpu's speed settings keep checkpoints plain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from isc_research.callbacks import ModelAcceleration
from isc_research.callbacks.figures import HardPair, hardest_pairs, hardest_pairs_image, pr_curve_image
from isc_research.metric import GroundTruth, Predictions, evaluate
from isc_research.module import CopyDetectionModule
from isc_research.train import train


@pytest.mark.slow
def test_every_logger_gets_metrics_config_and_figures(smoke_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = smoke_cfg("logger=[csv,tensorboard,wandb]", "trainer.max_epochs=1")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert events.Scalars("val/uAP")[-1].value == pytest.approx(metrics["val/uAP"], abs=1e-6)
    assert {"val/pr_curve", "val/hardest_pairs"} <= set(events.Tags()["images"])
    assert len(events.Images("val/pr_curve")) == 2  # before training and after the epoch
    for hparams in (run / "tensorboard" / "hparams.yaml", run / "csv" / "hparams.yaml"):
        assert yaml.safe_load(hparams.read_text())["config"]["backbone"]["name"] == "test_resnet"

    (wandb_run,) = (run / "wandb").glob("offline-run-*")  # offline: nothing was sent anywhere
    assert list(wandb_run.glob("*.wandb"))
    # named by epoch, as the checkpoints: before training, and after epoch 0 (the run's only epoch)
    assert sorted(p.name for p in (run / "figures").iterdir()) == [
        "val_hardest_pairs_epoch000.png",
        "val_hardest_pairs_init.png",
        "val_pr_curve_epoch000.png",
        "val_pr_curve_init.png",
    ]


def test_pr_curve_and_hardest_pairs_images(tmp_path):
    from PIL import Image

    gt = GroundTruth.from_pairs(["q1", "q2", "q3", "q4"], {"q1": "r1", "q2": "r2", "q4": "r1"})
    # −squared L2 scores, as the in-loop evaluation's: similarity = 1 + score / 2
    predictions = Predictions.from_rows(
        [("q1", "r1", -0.1), ("q3", "r2", -0.2), ("q2", "r1", -0.3), ("q2", "r2", -0.5), ("q1", "r2", -1.0)]
    )
    pairs = hardest_pairs(gt, predictions, n=4)
    # the 2 most confident false positives (pooled rank), then the missed matches: q4's absent pair first,
    # then q2's true pair (outranked by r1 in its query)
    assert pairs == [
        HardPair("false positive", "q3", "r2", 0.9, 2),
        HardPair("false positive", "q2", "r1", 0.85, 3),
        HardPair("missed", "q4", "r1", None, None),
        HardPair("missed", "q2", "r2", 0.75, 2),
    ]
    colours = {
        "q1": (255, 0, 0),
        "q2": (0, 255, 0),
        "q3": (0, 0, 255),
        "q4": (9, 9, 9),
        "r1": (255, 255, 0),
        "r2": (0, 255, 255),
    }
    paths = {}
    for name, colour in colours.items():
        paths[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (30, 20), colour).save(paths[name])
    strip = hardest_pairs_image(pairs, paths, size=16)
    assert strip.shape == (4 * 24, 2 * 16 + 12 + 150, 3)
    # framed red for a false positive, orange for a miss; query left, reference middle, caption text right
    assert [tuple(strip[24 * i, 0]) for i in range(4)] == [(210, 40, 40)] * 2 + [(230, 140, 20)] * 2
    assert tuple(strip[4 + 8, 4 + 8]) == colours["q3"] and tuple(strip[24 + 12, 20 + 8]) == colours["r1"]
    caption = strip[4:20, 2 * 16 + 12 :]
    assert (caption < 100).any() and (caption == 255).mean() > 0.5  # dark text on white
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a library function must leave the caller's (e.g. a notebook's) backend alone
    try:
        curve = pr_curve_image(gt, predictions, evaluate(gt, predictions).uAP)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert curve.shape == (350, 400, 3) and curve.std() > 0  # 4 × 3.5 in at 100 dpi


def test_gpu_speed_settings_keep_checkpoint_keys():
    module = CopyDetectionModule(
        {"backbone": "test_resnet", "embedding_dim": 8}, torch.nn.Identity(), optimizer=torch.optim.SGD
    )
    keys = list(module.state_dict())
    ModelAcceleration(channels_last=True, compile={"dynamic": False}).setup(None, module, "fit")
    conv = next(m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(module.state_dict()) == keys  # compiled in place: no "_orig_mod." prefixes in checkpoints
    assert module.model.backbone._compiled_call_impl is not None
    assert np.isfinite(module.model.projection.weight.detach().numpy()).all()
