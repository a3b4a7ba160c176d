"""Optional tools are pyproject extras (isc_research/extras.py): the table matches pyproject.toml, and each feature
whose
tool is missing stops with the extra to install (a missing tool is simulated); the tests' CI=1 guard."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

from isc_research import extras
from isc_research.config import config_dir
from isc_research.extras import EXTRAS, MissingExtra, check_hydra_plugins, require
from tests.conftest import compose_config, import_extra

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def hide(monkeypatch, *modules: str) -> None:
    """Make isc_research.extras see `modules` as not installed."""
    installed = extras._installed
    monkeypatch.setattr(extras, "_installed", lambda module: module not in modules and installed(module))


def test_each_extra_installs_the_module_it_is_named_for():
    providers = importlib.metadata.packages_distributions()
    for module, extra in EXTRAS.items():
        assert extra in OPTIONAL, f"isc_research/extras.py names the extra {extra!r}, which pyproject.toml lacks"
        distributions = {d.lower().replace("_", "-") for d in providers.get(module.split(".")[0], [])}
        if module.startswith("hydra_plugins."):  # a namespace package shared by the plugins: match the plugin
            distributions = {d for d in distributions if d.replace("-", "_").endswith(module.split(".")[1])}
        assert distributions & {_name(r) for r in OPTIONAL[extra]}, (module, extra, distributions)
    dev = next(r for r in OPTIONAL["dev"] if r.startswith("isc-research["))
    assert set(EXTRAS.values()) <= set(dev[dev.index("[") + 1 : dev.index("]")].split(","))  # make test has all
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert not core & {_name(r) for extra in set(EXTRAS.values()) for r in OPTIONAL[extra]}


def test_require_names_the_extra(monkeypatch):
    require("pdqhash", "baseline=pdq")  # installed here: nothing happens
    hide(monkeypatch, "pdqhash", "imagehash", "onnx")
    from isc_research.baselines import PDQ, PHash

    with pytest.raises(MissingExtra, match=r"baseline=pdq needs .*pip install 'isc-research\[hashes\]'"):
        PDQ()
    with pytest.raises(MissingExtra, match=r"baseline=phash .*isc-research\[hashes\]"):
        PHash()


def test_export_stops_before_writing_without_onnx(monkeypatch, tmp_path, capsys):
    from isc_research.cli.export import main

    hide(monkeypatch, "onnx")
    assert main([str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "o"), "--format", "torchscript", "onnx"]) == 2
    assert "pip install 'isc-research[export]'" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_logger_without_its_package_names_the_extra(monkeypatch, tmp_path):
    from isc_research.train import build_trainer

    hide(monkeypatch, "wandb")
    cfg = compose_config(
        "train", ["logger=wandb", "debug=smoke", f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path}"]
    )
    with pytest.raises(MissingExtra, match=r"logger=wandb .*isc-research\[wandb\]"):
        build_trainer(cfg, tmp_path)


def test_hydra_plugin_choices_are_checked_before_hydra_composes(monkeypatch, capsys):
    check_hydra_plugins(["hparams_search=uap_optuna", "hydra/launcher=slurm"], config_dir())  # installed here
    hide(monkeypatch, "hydra_plugins.hydra_optuna_sweeper", "hydra_plugins.hydra_submitit_launcher")
    check_hydra_plugins(
        ["optimizer.lr=0.1", "hparams_search=null", "logger=csv", "~callbacks.lr_monitor"], config_dir()
    )
    with pytest.raises(MissingExtra, match=r"`hparams_search=uap_optuna` .*isc-research\[sweep\]"):
        check_hydra_plugins(
            ["debug=smoke", "hparams_search=uap_optuna"], config_dir()
        )  # its file overrides /hydra/sweeper
    with pytest.raises(MissingExtra, match=r"isc-research\[sweep\]"):
        check_hydra_plugins(["hydra/sweeper=optuna"], config_dir())
    with pytest.raises(MissingExtra, match=r"`hydra/launcher=slurm` .*isc-research\[slurm\]"):
        check_hydra_plugins(["-m", "hydra/launcher=slurm"], config_dir())

    from isc_research.cli.train import main

    monkeypatch.setattr(sys, "argv", ["isc-train", "hparams_search=uap_optuna"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2 and "isc-train: error: `hparams_search=uap_optuna` needs" in capsys.readouterr().err


def test_import_extra_skips_but_fails_under_ci(monkeypatch):
    assert import_extra("json", "dev").dumps([]) == "[]"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"isc-research\[sweep\]"):
        import_extra("no_such_module_of_isc", "sweep")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI=1 but no_such_module_of_isc is not installed"):
        import_extra("no_such_module_of_isc", "sweep")
