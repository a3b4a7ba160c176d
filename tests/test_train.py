"""End to end on a tiny mini-DISC: train → checkpoint → isc-eval → isc-score, plus bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from isc_research.cli.score import main as score_main
from isc_research.data.disc import load_disc
from isc_research.evaluate import evaluate_checkpoint
from isc_research.images import ImageLoadError
from isc_research.train import train
from tests.conftest import compose_config

pytestmark = pytest.mark.slow
EVAL_KEYS = ("uAP", "recall_at_p90", "recall_at_rank1", "recall_at_rank10")


def test_smoke_training_end_to_end(smoke_cfg, tmp_path, capsys):
    cfg = smoke_cfg()
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)

    for prefix in ("init", "val"):
        for key in EVAL_KEYS:
            assert f"{prefix}/{key}" in metrics
    assert metrics["train/skipped_images"] == 0
    assert json.loads((run / "metrics.json").read_text())["val/uAP"] == pytest.approx(metrics["val/uAP"])
    assert OmegaConf.load(run / "config.yaml").backbone.name == "test_resnet"
    assert (run / "csv" / "metrics.csv").is_file()

    # The last checkpoint, evaluated by isc-eval, gives the µAP that validation logged after the last epoch.
    last = run / "checkpoints" / "last.ckpt"
    eval_cfg = compose_config(
        "eval",
        [
            f"ckpt_path={last}",
            f"paths.output_dir={tmp_path / 'eval'}",
            f"paths.data_dir={cfg.paths.data_dir}",
            *_smoke_dataset(),
        ],
    )
    scores = evaluate_checkpoint(eval_cfg)
    assert scores["uAP"] == pytest.approx(metrics["val/uAP"], abs=1e-6)
    assert scores["recall_at_rank10"] == pytest.approx(metrics["val/recall_at_rank10"], abs=1e-6)

    # Its files are valid ISC2021 files: isc-score reproduces the numbers from them.
    gt = Path(load_disc(eval_cfg.dataset).root) / "ground_truth.csv"
    for flag, name in (("--predictions", "predictions.csv"), ("--descriptors", "descriptors.h5")):
        capsys.readouterr()
        assert score_main(["--gt", str(gt), flag, str(tmp_path / "eval" / name)]) == 0
        assert json.loads(capsys.readouterr().out)["uAP"] == pytest.approx(scores["uAP"], abs=1e-5)


def _smoke_dataset() -> list[str]:
    smoke = OmegaConf.load(Path(__file__).parents[1] / "conf" / "debug" / "smoke.yaml")
    return [f"dataset.build.{k}={v}" for k, v in smoke.dataset.build.items()]


def test_training_reduces_the_loss(smoke_cfg):
    """Ten epochs on the tiny set: the optimiser must drive NT-Xent clearly down. With identical views
    (augmentation=none) this is possible in 30 steps; a broken gradient path or optimiser fails it."""
    cfg = smoke_cfg(
        "augmentation=none",
        "trainer.max_epochs=10",
        "data.batch_size=16",
        "validate_before_training=false",
        "trainer.check_val_every_n_epoch=10",
    )
    train(cfg)
    rows = pd.read_csv(Path(cfg.paths.output_dir) / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    per_epoch = rows.groupby("epoch")["train/loss"].mean()
    assert len(per_epoch) == 10
    assert per_epoch.iloc[-3:].mean() < 0.7 * per_epoch.iloc[:2].mean()


def _copy_with_bad_images(smoke_cfg, tmp_path) -> Path:
    """A DISC21-layout copy of the tiny mini-DISC with one corrupt training image and one truncated query."""
    source = load_disc(smoke_cfg().dataset).root
    root = tmp_path / "disc"
    shutil.copytree(source, root)
    (root / "training" / "T000003.jpg").write_bytes(b"not a jpeg at all")
    query = root / "query" / "Q00002.jpg"
    query.write_bytes(query.read_bytes()[:200])
    return root


def _disc21(root: Path) -> list[str]:
    return [
        "dataset=disc21",
        f"dataset.root={root}",
        "dataset.query_dir=query",
        "dataset.reference_dir=reference",
        "dataset.training_dir=training",
        "dataset.ground_truth=ground_truth.csv",
    ]


def test_bad_images_are_skipped_in_training_and_named_in_evaluation(smoke_cfg, tmp_path):
    root = _copy_with_bad_images(smoke_cfg, tmp_path)
    with pytest.raises(ImageLoadError, match="Q00002.jpg"):
        train(smoke_cfg(*_disc21(root), "trainer.max_epochs=1"))
    metrics = train(
        smoke_cfg(
            *_disc21(root), "trainer.max_epochs=1", "data.skip_bad_eval_images=true", "validate_before_training=false"
        )
    )
    assert metrics["train/skipped_images"] == 1  # the corrupt training image, counted once in the epoch
    assert "val/uAP" in metrics


def test_missing_dataset_folder_shows_the_expected_layout(smoke_cfg, tmp_path):
    cfg = smoke_cfg(*_disc21(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"(?s)is not a folder.*Q00000\.jpg.*R000000\.jpg"):
        load_disc(cfg.dataset)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="ground_truth.csv"):
        load_disc(smoke_cfg(*_disc21(tmp_path / "empty")).dataset)


def test_cli_returns_the_optimized_metric_and_rejects_unknown_names(data_dir, tmp_path):
    base = [sys.executable, "-m", "isc_research.cli.train", "debug=smoke", f"paths.data_dir={data_dir}"]
    bad = subprocess.run(
        [*base, f"paths.output_dir={tmp_path / 'a'}", "optimized_metric=val/mAP"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "val/mAP" in bad.stderr and "val/uAP" in bad.stderr
    ok = subprocess.run(
        [*base, f"paths.output_dir={tmp_path / 'b'}", "trainer.max_epochs=1"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "at initialisation" in ok.stderr + ok.stdout
    assert "vs hashes    PDQ " in ok.stdout and "pHash " in ok.stdout  # compare_hashes: the hashes next to the model


def test_a_stage_starts_from_the_previous_stages_weights(smoke_cfg, tmp_path):
    import torch

    from isc_research.losses.build import build_loss
    from isc_research.train import build_module, initialise_from

    first = smoke_cfg("trainer.max_epochs=1", "validate_before_training=false")
    stage1 = train(first)
    ckpt = tmp_path / "stage1.ckpt"
    shutil.copy(Path(first.paths.output_dir) / "checkpoints" / "last.ckpt", ckpt)
    # the next stage, at a larger training resolution, loads exactly those weights ...
    second = smoke_cfg("data.train_size=64", f"init_from={ckpt}", f"paths.output_dir={tmp_path / 'stage2'}")
    module = build_module(second, build_loss(second.loss, num_classes=48)[0])
    initialise_from(module, ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    for key, value in module.model.state_dict().items():
        assert torch.equal(value, saved[f"model.{key}"]), key
    # ... so it starts where stage 1 ended (same evaluation set and size)
    assert train(second)["init/uAP"] == pytest.approx(stage1["val/uAP"])
    with pytest.raises(ValueError, match="does not fit"):
        initialise_from(
            build_module(smoke_cfg("model.embedding_dim=16"), build_loss(second.loss, num_classes=48)[0]), ckpt
        )
    with pytest.raises(FileNotFoundError, match="previous stage"):
        initialise_from(module, tmp_path / "nope.ckpt")


def test_training_step_makes_no_host_sync_and_checks_the_loss_one_step_late():
    """No .item()/bool()/float() of a tensor in a training step (each one drains a GPU's queue); a non-finite loss
    is still caught, at the next step, with the step it happened at."""
    import warnings

    import torch
    from torch.overrides import TorchFunctionMode

    from isc_research.module import CopyDetectionModule

    class SquareLoss(torch.nn.Module):  # a loss without syncs of its own
        def forward(self, embeddings, labels):
            return {"loss": embeddings.pow(2).mean() * self.scale}

    class NoSyncs(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("item", "__bool__", "__float__", "__int__", "tolist"):
                raise AssertionError(f"host sync: Tensor.{func.__name__}")
            return func(*args, **(kwargs or {}))

    loss = SquareLoss()
    loss.scale = 1.0
    module = CopyDetectionModule(
        {"backbone": "test_resnet", "embedding_dim": 8}, loss, optimizer=lambda p: torch.optim.SGD(p, lr=0.1)
    )
    batch = {"views": torch.rand(2, 2, 3, 32, 32), "label": torch.arange(2), "skipped": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        with NoSyncs():
            module.training_step(batch, 0)
        loss.scale = float("nan")
        with NoSyncs():
            with pytest.raises(AssertionError, match="host sync"):  # the check of the previous (finite) step
                module.training_step(batch, 1)
        module._unchecked_loss = None
        module.training_step(batch, 2)  # non-finite, not yet seen
        with pytest.raises(FloatingPointError, match="loss is nan at global step 0"):
            module.training_step(batch, 3)
    assert module._skipped == 2  # counted on the host by the steps that ran (0 and 2), logged per epoch
