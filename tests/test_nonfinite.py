"""Non-finite descriptors stop every entry point with the same precision message before any search (issue 15):
the evaluation callback of isc-train (which then stops like a non-finite loss, keeping the last good
checkpoint), isc-eval, isc-match and isc-search."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from isc_research.cli.search import main as search_main
from isc_research.evaluate import evaluate_checkpoint
from isc_research.finite import NonFiniteDescriptors
from isc_research.index.embed import Embedder
from isc_research.match.pipeline import match
from isc_research.module import CopyDetectionModule
from isc_research.train import train
from tests.conftest import compose_config
from tests.test_evaluate import SMOKE_DATASET, eval_cfg, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def nan_ckpt(tmp_path) -> Path:
    """A checkpoint whose neck holds a NaN, as one trained in 16-mixed that overflowed."""
    path = save_checkpoint(tmp_path / "nan.ckpt")
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["state_dict"]["model.projection.weight"][0, 0] = float("nan")
    torch.save(checkpoint, path)
    return path


def test_isc_eval_names_the_split_and_the_precision_fix(nan_ckpt, tmp_path, data_dir):
    cfg = eval_cfg(data_dir, tmp_path / "out", f"ckpt_path={nan_ckpt}", "eval_grid=raw")
    with pytest.raises(
        NonFiniteDescriptors,
        match=r"descriptors \(model0 query\) are not finite.*float16 "
        r"overflow.*eval\.precision=32",
    ):
        evaluate_checkpoint(cfg)


def test_isc_match_names_the_split(nan_ckpt, tmp_path, data_dir):
    cfg = compose_config(
        "match",
        [
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path / 'out'}",
            "torch_threads=1",
            f"ckpt_path={nan_ckpt}",
            "eval.num_workers=0",
            *SMOKE_DATASET,
        ],
    )
    with pytest.raises(NonFiniteDescriptors, match=r"\(model 0 query views\) are not finite"):
        match(cfg)


def test_isc_search_says_it_in_one_line(nan_ckpt, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (60 * i, 90, 200)).save(images / f"{i}.png")
    with pytest.raises(NonFiniteDescriptors, match=r"3 of 3 descriptors \(queries\).*ran in float32 here"):
        Embedder(nan_ckpt, size=32).embed_files(sorted(images.iterdir()), progress=False, desc="queries")
    status = search_main(
        [
            "build",
            str(tmp_path / "index"),
            str(images),
            "--checkpoint",
            str(nan_ckpt),
            "--size",
            "32",
            "--threshold",
            "0.5",
            "--workers",
            "0",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "are not finite" in err and "float16 overflow" in err, err


@pytest.mark.slow
def test_training_stops_at_a_non_finite_validation_keeping_the_last_good_checkpoint(smoke_cfg, monkeypatch):
    """The policy: a non-finite validation stops the run like a non-finite loss; the run's last.ckpt is the
    last epoch whose descriptors were finite, and the message names the split, the fix and that checkpoint."""
    original = CopyDetectionModule.validation_step

    def overflowing_from_epoch_1(self, batch, batch_idx):
        out = original(self, batch, batch_idx)
        if self.current_epoch >= 1:
            out["embeddings"] = out["embeddings"].clone().fill_(float("nan"))
        return out

    monkeypatch.setattr(CopyDetectionModule, "validation_step", overflowing_from_epoch_1)
    cfg = smoke_cfg("trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "validate_before_training=false")
    with pytest.raises(FloatingPointError) as error:
        train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    message = str(error.value)
    assert "descriptors (validation queries) are not finite" in message
    assert "trainer.precision=bf16-mixed" in message and f"ckpt_path={last}" in message
    assert torch.load(last, weights_only=False)["epoch"] == 0  # epoch 1's weights were not kept as "good"
