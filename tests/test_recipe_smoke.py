"""Recipe-true smoke runs (issue 15): every experiment with its own backbone (random init), neck, pooling,
loss and augmentation policy, in bf16-mixed on the CPU, 2 steps at 64 px on the tiny mini-DISC, then an
evaluation (`debug=recipe_smoke`). debug=smoke (tests/test_experiments.py) swaps every backbone for
test_resnet; these run EffNetV2-M with GeM p=1 and linear_bn, ViT-L/16 and Swin-B token pooling, NFNet,
ResNet-50 with last stride 1 and WaveBlock, as the recipes do."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf

from isc_research.config import required_values
from isc_research.model import DescriptorModel
from isc_research.recipes import experiment_names
from isc_research.train import model_arguments, train
from tests.conftest import compose_config
from tests.test_experiments import SMOKE_EXTRA, tiny_neighbour_lists

EXTRA = {
    "lyakaap_stage4": ["data.batch_size=1"],  # the recipe's 1 per GPU: the tiny mini-DISC has 3 GT pairs
    # sjy_test5's 512-px stage resumes stage 1 (ckpt_path); a resumable EffNetV2-L checkpoint (with its Adam
    # state, ~1.4 GB) is too big for a smoke run, so here it runs fresh: its model, loss and augmentation are
    # stage 1's; the resume itself is tested at smoke scale in tests/test_s_square_sjy_test5_stages.py
    "s_square_sjy_test5_stage2": ["required.ckpt_path=null"],
    # the first drip stages' batches (50 / 25 per GPU) exceed the tiny training set: data.batch_size there;
    # each stage's epoch is one pass over its classes (restart_each_stage), 2 of the 48 tiny images at
    # stage 0: one step per epoch, so two epochs make the two steps
    **{
        name: [*SMOKE_EXTRA.get(name, []), "trainer.max_epochs=2"]
        for name in ("s_square_sjy_test9", "s_square_sjy_test10", "s_square_smp_test25", "s_square_smp_test26")
    },
}


@pytest.fixture(scope="session")
def recipe_required_values(tmp_path_factory) -> dict[str, str]:
    """Real values of the recipes' required keys, as small as they come: a checkpoint of lyakaap_stage1's own
    model in isc-train's layout (stages 2–4 load it with init_from, so its shapes must fit theirs), and a
    ResNet-50 backbone state dict as isc-export-backbone writes it (VisionForce / D²LV's weights_file)."""
    folder = tmp_path_factory.mktemp("recipe_required")
    torch.manual_seed(0)
    stage1 = DescriptorModel(
        **model_arguments(compose_config("train", ["experiment=lyakaap_stage1", "debug=recipe_smoke"]))
    )
    checkpoint = folder / "lyakaap_stage1.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in stage1.state_dict().items()}}, checkpoint)
    weights = folder / "resnet50_backbone.pth"
    torch.save(timm.create_model("resnet50", num_classes=0, global_pool="").state_dict(), weights)
    # the "separate" retriever's stage 2 starts from its stage 1 (a ViT-L), not from lyakaap's model
    retriever = DescriptorModel(
        **model_arguments(compose_config("train", ["experiment=separate_retriever", "debug=recipe_smoke"]))
    )
    torch.save({"state_dict": {f"model.{k}": v for k, v in retriever.state_dict().items()}}, folder / "retriever.ckpt")
    return {
        "init_from": str(checkpoint),
        "backbone.weights_file": str(weights),
        "separate_retriever_stage2:init_from": str(folder / "retriever.ckpt"),
        "data.neighbour_batches.neighbours": str(tiny_neighbour_lists(folder / "neighbours.npy")),
        "s_square_sjy_test5_stage2:ckpt_path": "null",
    }  # see EXTRA


@pytest.mark.slow
@pytest.mark.parametrize("name", experiment_names())
def test_recipe_true_smoke_run(name, data_dir, tmp_path, recipe_required_values, extra_class_images):
    recipe = compose_config("train", [f"experiment={name}"])
    required = [key for key, _, _ in required_values(recipe)]
    cfg = compose_config(
        "train",
        [
            f"experiment={name}",
            "debug=recipe_smoke",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path / 'run'}",
            *EXTRA.get(name, []),
            *(f"{key}={_required_value(recipe_required_values, name, key)}" for key in required),
            *_extra_classes(recipe, extra_class_images),
        ],
    )
    # what must stay the recipe's: backbone, neck, pooling, loss, augmentation, batch mixing
    for key in (
        "backbone.name",
        "backbone.kwargs",
        "model.neck",
        "model.gem_p",
        "model.gem_eval_p",
        "model.last_stride",
        "model.wave_block",
        "model.grayscale_input",
        "model.flip_average",
        "model.embedding_dim",
        "loss",
        "augmentation",
        "batch_mix",
    ):
        assert _unresolved(cfg, key) == _unresolved(recipe, key), key
    assert cfg.trainer.precision == "bf16-mixed" and cfg.backbone.pretrained is False
    OmegaConf.resolve(cfg)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/epoch_loss"])
    assert 0.0 <= metrics["val/uAP"] <= 1.0
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2


def _required_value(values: dict[str, str], name: str, key: str) -> str:
    return values[f"{name}:{key}"] if f"{name}:{key}" in values else values[key]


def _extra_classes(recipe, folder) -> list[str]:
    """S-square's ImageNet classes (data.extra_classes): the 8 packaged images instead."""
    return (
        [f"data.extra_classes.root={folder}", "data.extra_classes.count=8"] if recipe.data.extra_classes.count else []
    )


def _unresolved(cfg, key: str):
    value = OmegaConf.select(cfg, key)
    value = OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value
    if key == "loss" and (value.get("callbacks") or {}).get("drip"):  # a stage's batch size is the data's (EXTRA)
        value["callbacks"]["drip"]["stages"] = [
            {k: v for k, v in stage.items() if k != "batch_size"} for stage in value["callbacks"]["drip"]["stages"]
        ]
    return value
