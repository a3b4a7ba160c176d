"""Every experiment (winning recipe) runs end to end in smoke mode; its evaluation overrides compose; the cards
are regenerated (the source tables are checked in tests/test_recipe_sources.py)."""

from __future__ import annotations

import math

import pytest
import torch

from isc_research.config import required_values
from isc_research.recipes import experiment_names
from isc_research.model import DescriptorModel
from isc_research.train import model_arguments, train
from tests.conftest import compose_config

EXPERIMENTS = experiment_names()
# the smoke mini-DISC holds only ~3 training ground-truth pairs; VisionForce's 4096/8192-wide heads are
# recipe-sized (their shapes are checked by the run all the same, at a width a smoke run can afford)
_NARROW_HEADS = ["loss.hidden_dim=64", "loss.wide_dim=128"]
# the smoke backbone is a small CNN: the retriever's CLS-token pooling needs a ViT, so its smoke run pools GeM
SMOKE_EXTRA = {
    "lyakaap_stage4": ["data.batch_size=2"],
    "separate_retriever": ["model.pooling=gem"],
    "separate_retriever_stage2": ["model.pooling=gem"],
    "visionforce_desc": _NARROW_HEADS,
    "d2lv_desc": [*_NARROW_HEADS, "model.embedding_dim=128"],  # D²LV's descriptor is the wide output
    "s_square_sjy_test5_stage2": ["trainer.max_epochs=2"],  # resumes a 1-epoch stage 1 for one more epoch
    **{
        name: [f"loss.callbacks.drip.stages.{i}.batch_size=null" for i in range(stages)]
        for name, stages in (("s_square_sjy_test9", 3), ("s_square_sjy_test10", 3), ("s_square_smp_test26", 2))
    },
}
# (the S-square members' first drip stages batch 50 / 25 per GPU, more than the 48 tiny training images hold:
# those stages use data.batch_size here)


def test_experiments_found():
    assert {
        "lyakaap_stage1",
        "lyakaap_stage4",
        "sscd_disc_mixup",
        "visionforce_desc",
        "s_square_smp_test25",
        "d2lv_desc",
        "separate_retriever",
        "imgfp_global",
    } <= set(EXPERIMENTS)


@pytest.fixture(scope="session")
def smoke_required_values(data_dir, tmp_path_factory) -> dict[str, str]:
    """Tiny real values for the keys experiments require (issue 15): the checkpoint of a smoke lyakaap_stage1
    run (init_from of stages 2–4) and its exported backbone (backbone.weights_file of VisionForce / D²LV)."""
    from isc_research.cli.export_backbone import export_backbone

    out = tmp_path_factory.mktemp("stage1")
    cfg = compose_config(
        "train",
        [
            "debug=smoke",
            "experiment=lyakaap_stage1",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={out}",
            "trainer.max_epochs=1",
            "validate_before_training=false",
        ],
    )
    train(cfg)
    checkpoint = out / "checkpoints" / "last.ckpt"
    export_backbone(checkpoint, out / "backbone.pth")
    # the "separate" retriever's stage 2 starts from its stage 1, whose model is not lyakaap's
    retriever = DescriptorModel(
        **model_arguments(compose_config("train", ["debug=smoke", "experiment=separate_retriever"]))
    )
    torch.save({"state_dict": {f"model.{k}": v for k, v in retriever.state_dict().items()}}, out / "retriever.ckpt")
    # S-square sjy_test5's second stage resumes its first (ckpt_path): a smoke run of stage 1 with the settings
    # the smoke test gives every experiment
    first = tmp_path_factory.mktemp("sjy_test5")
    train(
        compose_config(
            "train",
            [
                "debug=smoke",
                "experiment=s_square_sjy_test5",
                f"paths.data_dir={data_dir}",
                f"paths.output_dir={first}",
                "trainer.max_epochs=1",
                "validate_before_training=false",
            ],
        )
    )
    # the retriever's stage 2 reads stage 1's neighbour lists (one row per training image of the tiny mini-DISC)
    return {
        "init_from": str(checkpoint),
        "backbone.weights_file": str(out / "backbone.pth"),
        "separate_retriever_stage2:init_from": str(out / "retriever.ckpt"),
        "data.neighbour_batches.neighbours": str(tiny_neighbour_lists(out / "neighbours.npy")),
        "s_square_sjy_test5_stage2:ckpt_path": str(first / "checkpoints" / "last.ckpt"),
    }


def tiny_neighbour_lists(path, n_images: int = 48, k: int = 10):
    """Neighbour lists of random descriptors for the 48 training images of the tiny mini-DISC."""
    import numpy as np

    from isc_research.data.neighbours import neighbour_lists, save_neighbour_lists

    x = np.random.default_rng(0).normal(size=(n_images, 8)).astype(np.float32)
    return save_neighbour_lists(neighbour_lists(x / np.linalg.norm(x, axis=1, keepdims=True), k), path)


def required_overrides(name: str, values: dict[str, str]) -> list[str]:
    """`key=value` for every key the experiment requires; a new required key needs a smoke value here."""
    keys = [key for key, _, _ in required_values(compose_config("train", [f"experiment={name}"]))]
    assert all(key in values or f"{name}:{key}" in values for key in keys), (
        f"{name} requires {keys}: give the smoke test a tiny real value"
    )
    return [f"{key}={values[f'{name}:{key}'] if f'{name}:{key}' in values else values[key]}" for key in keys]


def extra_class_overrides(name: str, folder) -> list[str]:
    """A recipe with ImageNet classes (data.extra_classes, S-square) gets the 8 packaged images instead."""
    count = compose_config("train", [f"experiment={name}"]).data.extra_classes.count
    return [f"data.extra_classes.root={folder}", "data.extra_classes.count=8"] if count else []


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke_run(name, smoke_cfg, smoke_required_values, extra_class_images):
    metrics = train(
        smoke_cfg(
            f"experiment={name}",
            "trainer.max_epochs=1",
            "validate_before_training=false",
            *SMOKE_EXTRA.get(name, []),
            *required_overrides(name, smoke_required_values),
            *extra_class_overrides(name, extra_class_images),
        )
    )
    assert math.isfinite(metrics["train/loss"])
    assert "val/uAP" in metrics  # the evaluation callback ran on the experiment's model


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_recipe_evaluation_overrides_compose(name, tmp_path):
    overrides = list(compose_config("train", [f"experiment={name}"]).recipe.evaluate)
    cfg = compose_config("eval", [*overrides, f"paths.output_dir={tmp_path}"])
    assert cfg.eval_grid.chains, name


def test_recipe_cards_page_is_regenerated():
    from pathlib import Path

    from isc_research.recipes import render_cards

    page = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
    assert page.read_text() == render_cards(), "docs/recipes.md is stale: run `isc-recipe-cards --out docs/recipes.md`"
