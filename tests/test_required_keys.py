"""Mandatory means mandatory (issue 15): a value declared under `required:` and left unset stops isc-train
(and isc-eval) before any work, in one line naming the key and an example value."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from isc_research.config import MissingRequiredValue, check_required
from isc_research.recipes import experiment_names
from tests.conftest import compose_config

# What each experiment cannot do without (RECIPES §2.2: stages 2–4 start from the previous stage; §4, §5.2:
# VisionForce and D²LV start from Barlow Twins weights; §3.1: sjy_test5's second stage resumes its first).
# Every other experiment requires nothing.
REQUIRED = {
    "lyakaap_stage2": {"init_from"},
    "separate_retriever_stage2": {"init_from", "data.neighbour_batches.neighbours"},
    "lyakaap_stage3": {"init_from"},
    "lyakaap_stage4": {"init_from"},
    "visionforce_desc": {"backbone.weights_file"},
    "d2lv_desc": {"backbone.weights_file"},
    "s_square_sjy_test5_stage2": {"ckpt_path"},  # RECIPES §3.1: the 512-px stage resumes the 384-px run
}


def declared(cfg) -> set[str]:
    """The keys check_required reports as unset for this config."""
    try:
        check_required(cfg)
    except MissingRequiredValue as error:
        return {key for key in _keys_in(str(error))}
    return set()


def _keys_in(message: str) -> list[str]:
    body = message.split(": ", 1)[1].split(" — ")[0]
    return [part.split(" (e.g. ")[0] for part in body.split("; ")]


@pytest.mark.parametrize("name", experiment_names())
def test_every_required_value_of_every_experiment_is_required(name):
    cfg = compose_config("train", [f"experiment={name}"])
    assert declared(cfg) == REQUIRED.get(name, set())
    for key in REQUIRED.get(name, ()):
        assert OmegaConf.select(cfg, key) is None  # composed without it: unset, and …
        with pytest.raises(MissingRequiredValue, match=rf"{key} \(e\.g\. {key}=\S+\)"):  # … named, with an example
            check_required(cfg)
    given = [f"{key}=/somewhere/given.ckpt" for key in REQUIRED.get(name, ())]
    check_required(compose_config("train", [f"experiment={name}", *given]))  # given: no error


def test_disc21_requires_its_root_in_training_evaluation_and_matching(tmp_path):
    for config in ("train", "eval", "match"):
        cfg = compose_config(config, ["dataset=disc21", "ckpt_path=x.ckpt", f"paths.output_dir={tmp_path}"])
        with pytest.raises(
            MissingRequiredValue,
            match=r"^required value not set: dataset\.root \(e\.g\. "
            r"dataset\.root=/data/DISC21\)",
        ):
            check_required(cfg)
        check_required(compose_config(config, ["dataset=disc21", "dataset.root=/data/x", "ckpt_path=x.ckpt"]))


def test_several_missing_values_are_named_together_and_a_requirement_can_be_lifted():
    cfg = compose_config("train", ["experiment=d2lv_desc", "dataset=disc21"])
    with pytest.raises(MissingRequiredValue, match=r"values not set: backbone\.weights_file .*; dataset\.root"):
        check_required(cfg)
    lifted = compose_config("train", ["experiment=visionforce_desc", "required.backbone.weights_file=null"])
    check_required(lifted)  # e.g. to try the recipe from random init on purpose


def test_isc_train_stops_before_any_work(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "isc_research.cli.train", "experiment=lyakaap_stage2", f"paths.output_dir={out}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("isc_research.config.MissingRequiredValue")]
    assert lines == [
        "isc_research.config.MissingRequiredValue: required value not set: init_from (e.g. init_from="
        "outputs/lyakaap_stage1/runs/<time>/checkpoints/epoch005.ckpt) — add it to the command line"
    ]
    assert not (out / "config.yaml").exists()  # nothing built, nothing written by isc
