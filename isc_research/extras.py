"""Optional tools and the pyproject extra that installs each (`pip install 'isc-research[EXTRA]'`).

A feature that needs one calls `require` where it is used, so that a missing tool fails with the extra to
install instead of an ImportError deep inside a library. Hydra's sweeper and launcher plugins are needed when
Hydra composes the command line, before any isc code runs: `check_hydra_plugins` looks at the overrides first.
`make test` / `make train` install the dev extra, which includes every extra below.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["EXTRAS", "MissingExtra", "check_hydra_plugins", "require", "require_for_target"]

EXTRAS = {  # importable module → extra of pyproject.toml
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "hydra_plugins.hydra_optuna_sweeper": "sweep",
    "hydra_plugins.hydra_submitit_launcher": "slurm",
    "imagehash": "hashes",
    "pdqhash": "hashes",
    "onnx": "export",
    "onnxruntime": "export",
}

# what a config's `_target_` needs (Lightning imports these packages lazily, with its own pip hint)
TARGET_MODULES = {
    "lightning.pytorch.loggers.WandbLogger": "wandb",
    "lightning.pytorch.loggers.TensorBoardLogger": "tensorboard",
}

# Hydra plugin choices: (config group, option) → module of the plugin
_PLUGIN_CHOICES = {
    ("hydra/sweeper", "optuna"): "hydra_plugins.hydra_optuna_sweeper",
    ("hydra/launcher", "slurm"): "hydra_plugins.hydra_submitit_launcher",  # conf/hydra/launcher/slurm.yaml
    ("hydra/launcher", "submitit_slurm"): "hydra_plugins.hydra_submitit_launcher",
    ("hydra/launcher", "submitit_local"): "hydra_plugins.hydra_submitit_launcher",
}


class MissingExtra(ImportError):
    """An optional tool is not installed; the message names the extra that installs it."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a missing parent package (e.g. no hydra_plugins at all)
        return False


def require(module: str, feature: str) -> None:
    """Raise MissingExtra, naming `feature` and the extra to install, when `module` is not importable."""
    if not _installed(module):
        extra = EXTRAS[module]
        raise MissingExtra(
            f"{feature} needs the optional package {module!r}, which is not installed: "
            f"pip install 'isc-research[{extra}]' (or the dev extra, which has them all)"
        )


def require_for_target(target: str | None, feature: str) -> None:
    """`require` for what a config node's `_target_` imports (nothing for other targets)."""
    module = TARGET_MODULES.get(str(target))
    if module is not None:
        require(module, feature)


def _chosen_plugins(overrides: Sequence[str], config_dir: Path) -> list[tuple[str, str]]:
    """(feature, plugin module) for the plugin choices of the overrides: `hydra/sweeper=optuna`, or a group option
    whose file's defaults list holds `override /hydra/sweeper: optuna` (e.g. hparams_search=uap_optuna)."""
    from omegaconf import OmegaConf

    chosen = []
    for override in overrides:
        key, sep, option = override.lstrip("+~").partition("=")
        if not sep or override.startswith("~"):
            continue
        group = key.split("@")[0].strip("/")
        if not re.fullmatch(r"[\w/]+", group) or not re.fullmatch(r"[\w.-]+", option):
            continue  # a value (a path, a list, a number), not a group choice
        choices = [(group, option)]
        path = config_dir / group / f"{option}.yaml"
        if not group.startswith("hydra") and path.is_file():
            for entry in OmegaConf.load(path).get("defaults") or []:
                if isinstance(entry, dict) or OmegaConf.is_dict(entry):
                    choices += [(str(k).removeprefix("override").strip().strip("/"), str(v)) for k, v in entry.items()]
        chosen += [(override, _PLUGIN_CHOICES[c]) for c in choices if c in _PLUGIN_CHOICES]
    return chosen


def check_hydra_plugins(overrides: Sequence[str], config_dir: Path) -> None:
    """MissingExtra for a sweeper or launcher plugin that the command line chooses and that is not installed
    (Hydra itself would only say that the option is not among the available ones); `config_dir`: the configs'
    folder (isc_research.config.config_dir(), passed in so that this module does not import isc_research.config)."""
    for override, module in _chosen_plugins(overrides, config_dir):
        require(module, f"`{override}`")
