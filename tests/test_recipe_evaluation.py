"""Each recipe's evaluation protocol is one command: isc-eval with the experiment's `recipe.evaluate` runs on
tiny data for every recipe. Only the size is overridden (48 px instead of the recipe's 160–512, which a
2-core CPU cannot afford per test); resize, precision, TTA scales, candidates and the post-processing chain
are the recipe's, except the PCA output dims (SSCD 512, S-square 256), lowered to 16: the tiny checkpoint's
32-d descriptors cannot keep more. The tiny dataset has 150 training images, so that the push-away finds its
100 training neighbours."""

from __future__ import annotations

import math

import pytest

import torch

from isc_research.config import required_values
from isc_research.evaluate import evaluate_checkpoint
from isc_research.model import DescriptorModel
from isc_research.recipes import experiment_names
from tests.conftest import compose_config
from tests.test_evaluate import SMOKE_DATASET

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
EXPERIMENTS = experiment_names()


MODEL_ARGS = {"backbone": "test_resnet", "embedding_dim": 32, "gem_p": 3.0, "gem_learnable": False}
DATASET = [*SMOKE_DATASET, "dataset.build.n_training=150", "dataset.build.image_size=64"]
TINY_PCA_DIM = 16


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.manual_seed(0)
    model = DescriptorModel(**MODEL_ARGS)
    torch.save(
        {
            "hyper_parameters": {"model": MODEL_ARGS, "config": {"data": {"eval_size": 48}}},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    return tmp_path_factory.mktemp("eval_data")


def small(overrides) -> list[str]:
    """The recipe's overrides with the size replaced by 48 px (the only change; a list of sizes by [40,48])."""
    return [
        o if not o.startswith("eval.size=") else "eval.size=[40,48]" if "[" in o else "eval.size=48" for o in overrides
    ]


def tiny_detector(path):
    """A random overlay detector in isc-train-detector's checkpoint format (for recipes with a detector)."""
    from isc_research.detect.model import build_detector

    arguments = {
        "arch": "fasterrcnn_mobilenet_v3_small_fpn",
        "weights": None,
        "weights_backbone": None,
        "min_size": 64,
        "max_size": 128,
        "box_score_thresh": 0.01,
        "box_detections_per_img": 4,
        "representation_size": 32,
    }
    torch.manual_seed(0)
    model = build_detector(**arguments)
    torch.save(
        {
            "hyper_parameters": {"model": arguments},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return str(path)


def tiny_pca(chain) -> None:
    """PCA steps of a chain config lowered to TINY_PCA_DIM dims (the tiny checkpoint's descriptors have 32)."""
    for step in (chain.get("steps") or {}).values():
        if step is not None and step.get("_target_") == "isc_research.postprocess.PCA" and step.get("dim"):
            step.dim = TINY_PCA_DIM


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_recipe_evaluation_runs_as_one_command(name, tiny_ckpt, eval_data, tmp_path, tmp_path_factory):
    overrides = list(compose_config("train", [f"experiment={name}"]).recipe.evaluate)
    cfg = compose_config(
        "eval",
        [
            f"paths.data_dir={eval_data}",
            f"paths.output_dir={tmp_path}",
            "eval.num_workers=0",
            "torch_threads=1",
            "eval.report.enabled=false",
            f"ckpt_path={tiny_ckpt}",
            *DATASET,
            *small(overrides),
        ],
    )
    for chain in cfg.eval_grid.chains.values():
        tiny_pca(chain)
    if "eval.query_crop.detector_ckpt" in {key for key, _, _ in required_values(cfg)}:  # VisionForce (§4)
        cfg.eval.query_crop.detector_ckpt = tiny_detector(tmp_path_factory.mktemp("detector") / "det.ckpt")
    recipe_chains = set(compose_config("eval", overrides).eval_grid.chains)
    assert set(cfg.eval_grid.chains) == recipe_chains  # the recipe's chains, unchanged
    metrics = evaluate_checkpoint(cfg)
    assert set(metrics["chains"]) == recipe_chains
    for chain, result in metrics["chains"].items():
        assert 0.0 <= result["uAP"] <= 1.0 and not math.isnan(result["uAP"]), (name, chain)


MATCHING = [n for n in EXPERIMENTS if compose_config("train", [f"experiment={n}"]).recipe.get("match")]


def test_matching_recipes_found():
    assert "d2lv_desc" in MATCHING


@pytest.mark.parametrize("name", MATCHING)
def test_matching_track_protocol_runs_as_one_command(name, eval_data, tmp_path):
    """isc-match with the recipe's `recipe.match` on three tiny checkpoints (D²LV votes over 3 backbones) and,
    where the recipe's query crops include a detector, a tiny random one (isc-train-detector's format)."""
    from isc_research.match.pipeline import match

    ckpts = []
    for seed in range(3):
        path = tmp_path / f"tiny{seed}.ckpt"
        torch.manual_seed(seed)
        model = DescriptorModel(**MODEL_ARGS)
        torch.save(
            {
                "hyper_parameters": {"model": MODEL_ARGS, "config": {"data": {"eval_size": 48}}},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            },
            path,
        )
        ckpts.append(str(path))
    overrides = list(compose_config("train", [f"experiment={name}"]).recipe.match)
    cfg = compose_config(
        "match",
        [
            f"paths.data_dir={eval_data}",
            f"paths.output_dir={tmp_path / 'match'}",
            "torch_threads=1",
            f"ckpt_path=[{','.join(ckpts)}]",
            *DATASET,
            *small(overrides),
        ],
    )
    detector = (cfg.query_crops.get("providers") or {}).get("detector")
    if detector is not None:  # D²LV's YOLO sub-queries (§5.3)
        detector.ckpt_path = tiny_detector(tmp_path / "det.ckpt")
    tiny_pca(cfg.candidates.postprocess)
    metrics = match(cfg)
    assert 0.0 <= metrics["uAP"] <= 1.0
    sized = [o for o in overrides if o.startswith("eval.size=")]
    assert metrics["setup"]["sizes"] == ([40, 48] if sized and "[" in sized[0] else [48])
