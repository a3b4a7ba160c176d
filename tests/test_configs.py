"""Every option of every config group composes and instantiates into a working object."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from isc_research.config import check_optimized_metric
from isc_research.losses.build import build_loss
from isc_research.model import DescriptorModel
from isc_research.postprocess import build_chain, build_chains
from tests.conftest import CONF, compose_config

SMALL_BACKBONES = {"test_resnet", "mobilenetv3_small_050"}
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))  # _shared: parts
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def test_groups_found():
    assert {
        "augmentation",
        "backbone",
        "callbacks",
        "dataset",
        "debug",
        "hparams_search",
        "logger",
        "loss",
        "optimizer",
        "paths",
        "scheduler",
        "trainer",
    } <= set(GROUPS)


EVAL_GROUPS = {"eval_grid": "eval_grid={}", "postprocess": "+postprocess={}"}  # isc-eval's groups
MATCH_GROUPS = ("verifier", "query_crops")  # isc-match's groups (instantiated in tests/test_match.py)


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option, tmp_path):
    choice = EVAL_GROUPS.get(group, "{}={}".replace("{}", group, 1)).format(option)
    cfg = compose_config(
        "eval" if group in EVAL_GROUPS else "match" if group in MATCH_GROUPS else "train",
        [choice, f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path}"],
    )
    if group not in ("experiment", "debug", "hparams_search"):  # these are @package _global_ overlays
        assert cfg[group] is not None
    if group == "eval_grid":
        assert [chain.name for chain in build_chains(cfg.eval_grid.chains)] == list(cfg.eval_grid.chains)
    elif group == "query_crops" and OmegaConf.is_missing(cfg.query_crops, "ckpt_path"):
        assert (
            cfg.query_crops._target_
        )  # a trained detector: instantiated from a checkpoint in tests/test_detect_train.py
    elif group == "postprocess":
        chain = build_chain(option, cfg.postprocess)
        assert chain.metric in ("l2", "ip") and len(chain.steps) == len(cfg.postprocess.steps)
    elif group == "augmentation":
        policy = instantiate(cfg.augmentation)
        views = policy if isinstance(policy, tuple) else (policy,)
        image, other = Image.new("RGB", (120, 80), (200, 30, 30)), Image.new("RGB", (90, 90), (0, 0, 255))
        for view in views:
            out = view(image, other=lambda: other) if getattr(view, "needs_other_images", False) else view(image)
            assert out.shape == (3, cfg.data.train_size, cfg.data.train_size) and out.dtype == torch.float32
    elif group == "batch_mix":
        torch.manual_seed(0)
        images, labels = torch.randn(8, 3, 16, 16), torch.arange(4).repeat_interleave(2)
        mixed, pairs = instantiate(cfg.batch_mix)(images, labels)
        assert mixed.shape == images.shape and pairs.shape == (8, 2) and torch.equal(pairs[:, 0], labels)
    elif group == "loss":
        loss, _ = build_loss(cfg.loss, num_classes=4)  # as isc_research.train does: num_classes null = training images
        embeddings = torch.nn.functional.normalize(torch.randn(8, cfg.model.embedding_dim, requires_grad=True), dim=1)
        out = loss(embeddings, torch.arange(4).repeat_interleave(2))
        assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    elif group in ("optimizer", "scheduler"):
        optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(3))])
        scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=100)
        for _ in range(3):
            optimizer.step()
            plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            scheduler.step(1.0) if plateau else scheduler.step()  # plateau: the epoch loss
        assert optimizer.param_groups[0]["lr"] >= 0
    elif group == "backbone":
        from isc_research.train import model_arguments

        arguments = {**model_arguments(cfg), "pretrained": False, "embedding_dim": 16}
        if option in SMALL_BACKBONES:  # real weights, real forward pass
            model = DescriptorModel(**arguments)
            with torch.no_grad():
                out = model.eval()(torch.randn(2, 3, 64, 64))
            assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
        else:  # recipe-sized models: built and run on the meta device (shapes only, no memory, no time)
            with torch.device("meta"):
                model = DescriptorModel(**arguments)
                out = model.eval()(torch.empty(2, 3, 64, 64))
        assert out.shape == (2, 16)
    elif group in ("callbacks", "logger"):  # each entry is a Lightning callback / logger
        from lightning.pytorch.callbacks import Callback
        from lightning.pytorch.loggers import Logger

        for name, node in cfg[group].items():
            if node is not None:
                assert isinstance(instantiate(node), Callback if group == "callbacks" else Logger), name
    elif group == "trainer":
        # GPU configs are built for the CPU here when there is no GPU (the rest of the node as configured)
        cpu = {} if torch.cuda.is_available() else {"accelerator": "cpu"}
        node = OmegaConf.to_container(cfg.trainer)
        node.pop("total_batch")  # isc's, not Lightning's: isc_research.scaling turns it into accumulate_grad_batches
        trainer = instantiate(node, logger=False, enable_checkpointing=False, callbacks=[], **cpu)
        assert trainer.max_epochs == cfg.trainer.max_epochs and trainer.num_nodes == cfg.trainer.get("num_nodes", 1)
        from lightning.pytorch.callbacks import Callback

        for node in cfg.trainer.get("callbacks") or []:  # e.g. trainer=gpu's ModelAcceleration
            assert isinstance(instantiate(node), Callback), node._target_
    elif group == "hparams_search":
        check_optimized_metric(cfg.optimized_metric)
    elif group == "debug" and option == "recipe_smoke":  # the recipe's own backbone, 2 steps in bf16
        assert cfg.backbone.name == compose_config("train").backbone.name and cfg.trainer.max_steps == 2
        assert cfg.trainer.precision == "bf16-mixed" and cfg.backbone.pretrained is False
    elif group == "debug":
        assert cfg.backbone.name == "test_resnet" and cfg.trainer.max_epochs <= 2
    elif group == "verifier" and option == "pairwise":  # needs a trained checkpoint: tests/test_verifier_train.py
        assert cfg.verifier._target_ == "isc_research.verifier.PairwiseVerifier.from_checkpoint"
        assert OmegaConf.is_missing(cfg.verifier, "ckpt_path")
    elif group == "dataset":
        assert cfg.dataset.kind == option
        if option == "disc21":
            assert OmegaConf.is_missing(cfg.dataset, "root")


def test_eval_config_composes_with_every_dataset(tmp_path):
    for dataset in ("mini_disc", "disc21"):
        cfg = compose_config("eval", [f"dataset={dataset}", "ckpt_path=x.ckpt", f"paths.output_dir={tmp_path}"])
        # eval scores the whole ground truth, whatever the dataset's in-loop validation subset is
        assert cfg.dataset.validation.max_queries is None and cfg.dataset.validation.max_references is None


def test_unknown_option_lists_the_available_ones():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("train", ["loss=no_such_loss"])
    assert "ntxent" in str(error.value) and "no_such_loss" in str(error.value)


def test_optimized_metric_is_checked_before_training():
    check_optimized_metric("val/uAP")
    check_optimized_metric("best/uAP")
    with pytest.raises(KeyError, match="val/uAP"):
        check_optimized_metric("val/uap")
    with pytest.raises(KeyError, match="best/uAP"):
        check_optimized_metric("best/recall_at_rank1")


def test_wheel_ships_the_configs(tmp_path):
    """A plain (non-editable) install must find conf/ (lightning-hydra-template issue #525)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(CONF.parent),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("isc_research-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    expected = {f"isc_research/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert expected <= set(names)


@pytest.mark.parametrize(
    "experiment,loss,lr,changed",
    [
        ("cpu_visionforce", "VisionForceLoss", 3.5e-4, {}),
        ("cpu_arcface", "ArcFaceLoss", 1e-3, {"margin": 0.1}),
        ("cpu_barlow_twins", "BarlowTwinsLoss", 1e-3, {"projector_dims": [512, 512]}),
    ],
)
def test_cpu_loss_experiments_select_their_loss_and_keep_the_recipe_values(experiment, loss, lr, changed, tmp_path):
    """`experiment=cpu_<loss>` selects the loss and overrides the optimizer and only the loss values it names
    (each commented with its measurement); the loss's other recipe values stay."""
    cfg = compose_config("train", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    plain = compose_config("train", [f"loss={experiment.removeprefix('cpu_')}", f"paths.output_dir={tmp_path}"])
    differing = {k: OmegaConf.to_object(cfg.loss)[k] for k in cfg.loss if cfg.loss[k] != plain.loss.get(k)}
    assert (
        cfg.loss._target_ == f"isc_research.losses.{loss}" and differing == changed and set(cfg.loss) == set(plain.loss)
    )
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer.lr == pytest.approx(lr)
    assert cfg.trainer.max_epochs == plain.trainer.max_epochs == 64
    assert cfg.trainer.gradient_clip_val == (1.0 if experiment == "cpu_arcface" else None)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_only_the_cpu_experiments_flip_average(experiment, tmp_path):
    """The default descriptor averages each image with its four flips (model.flip_average); a winner's recipe keeps
    its source's model, which has no such step, and the CPU overlays keep the default's."""
    cfg = compose_config("train", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.model.flip_average == ("horizontal_vertical" if experiment.startswith("cpu_") else "none")
    assert compose_config("train", [f"paths.output_dir={tmp_path}"]).model.flip_average == "horizontal_vertical"
