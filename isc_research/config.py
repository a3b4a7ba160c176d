"""Where the Hydra configs live, and helpers shared by the command-line entry points."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

from isc_research.metric import EVALUATION_METRICS

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The `conf/` folder: inside the package for a wheel install, at the repo root for a checkout."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"isc cannot find its Hydra configs: looked for train.yaml in {_PACKAGE_DIR / 'conf'} and "
        f"{_PACKAGE_DIR.parent / 'conf'}. Reinstall the package (`pip install .`) or run from a checkout."
    )


def quiet_third_party_loggers() -> None:
    """Each console line once, and no third-party chatter: faiss' loader reports every CPU-feature library it
    tries; the `lightning` package logger adds its own stderr handler at import (so under Hydra, whose root
    handlers also print them, every Lightning line appeared twice: `INFO: …` and `[…][INFO] - …`); Lightning's
    startup lines (GPU/TPU available, a product tip, "Seed set to 0", "`Trainer.fit` stopped") are INFO notes
    of no use at the end of a run. Warnings of those loggers still reach the console and the run's log."""
    import lightning  # noqa: F401  (its loggers get their handlers at import: import first, then remove them)

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics", "huggingface_hub"):
        third_party = logging.getLogger(name)
        for handler in list(third_party.handlers):
            third_party.removeHandler(handler)
        third_party.propagate = True
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning 2.6 on torch ≥ 2.10: an internal use of a deprecated torch API, nothing the user can change
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def pin_output_dir(cfg) -> None:
    """Write into the folder Hydra made for this job, whatever named it: `paths.output_dir=X` (hydra.run.dir
    follows it), `hydra.run.dir=X` (paths.output_dir follows it: one folder for the log and the results), a
    multirun job's <sweep dir>/<job number> (not a fresh timestamp, which two jobs of one second would share).
    Lightning's DDP launcher starts the other ranks with `hydra.run.dir=<this folder>`, so they write into it
    too instead of each resolving `${now:}` anew (lightning-hydra-template #393)."""
    from hydra.core.hydra_config import HydraConfig

    cfg.paths.output_dir = HydraConfig.get().runtime.output_dir


# `~` is a character of Hydra's override grammar (the `~key` deletion), so `key=~/photos` is a lexer error
# (LexerNoViableAltException) and the shell does not expand it there. A `~` that starts a value, or an element
# of a list/sweep, is the home folder; anything else is left to Hydra.
_HOME = re.compile(r"(?<=[=,\[(])~([A-Za-z0-9_.-]*)(?=/|,|\]|\)|$)")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SAFE = re.compile(r"[A-Za-z0-9_./+-]*")


def expand_home(overrides: list[str]) -> list[str]:
    """Command-line overrides with a leading `~` or `~user` of a value expanded (`dataset.build.source_dir=~/x`
    → `…=/home/me/x`, `ckpt_path=[~/a.ckpt,~/b.ckpt]`, sweeps `…=~/a,~/b`), quoted when the home folder holds
    characters of Hydra's grammar. A `~` elsewhere in an unquoted value is an error that says how to write it.
    Options (`-m`, `--cfg job`) and `~key` deletions are left as they are."""
    out = []
    for override in overrides:
        key, equals, value = override.partition("=")
        if not equals or override.startswith(("-", "~")):
            out.append(override)
            continue

        def home(match: re.Match) -> str:
            expanded = os.path.expanduser("~" + match.group(1))
            return expanded if _SAFE.fullmatch(expanded) else f"'{expanded}'"

        expanded = _HOME.sub(home, override)
        if "~" in _QUOTED.sub("", expanded.partition("=")[2]):
            raise ValueError(
                f"{override!r}: `~` is part of Hydra's override grammar and is only understood at the start of a "
                f"path here. Quote the value to keep a literal `~`: \"{key}='{value}'\", or write the folder out "
                f"({key}=$HOME/...)"
            )
        out.append(expanded)
    return out


def hydra_entry(config_name: str, prog: str):
    """`hydra.main` on isc's configs, after `~` in the overrides is expanded (expand_home); a bad `~` ends the
    command with exit status 2 and the message. The entry point also runs as a plain task function (cfg given)."""
    import hydra

    def decorate(task):
        hydra_task = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(task)

        @functools.wraps(task)
        def main(cfg=None):
            if cfg is not None:
                return hydra_task(cfg)
            from isc_research.extras import MissingExtra, check_hydra_plugins

            try:
                sys.argv[1:] = expand_home(sys.argv[1:])
                check_hydra_plugins(sys.argv[1:], config_dir())
            except (ValueError, MissingExtra) as error:
                print(f"{prog}: error: {error}", file=sys.stderr)
                sys.exit(2)
            return hydra_task()

        return main

    return decorate


def missing_metric_error(name: str, available: dict) -> KeyError:
    """The error for an `optimized_metric` that the run did not produce (lists what it did produce)."""
    names = ", ".join(sorted(available)) or "(none)"
    return KeyError(
        f"optimized_metric={name!r} is not a metric of this run. Available metrics: {names}. "
        f"Set `optimized_metric=<one of them>` on the command line or in the experiment config."
    )


def optimized_value(cfg, metrics: dict) -> float | None:
    """What a CLI returns to Hydra's sweepers: the metric named by `optimized_metric` (None without one; 0.0
    for a metric that was never reached, e.g. recall@P90, as the DrivenData scorer does)."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise missing_metric_error(name, metrics)
    value = metrics[name]
    return 0.0 if value is None else float(value)


def check_optimized_metric(name: str | None) -> None:
    """Fail before training when `optimized_metric` names an evaluation metric that no run produces."""
    if not name:
        return
    prefix, _, key = name.partition("/")
    if prefix in ("val", "init", "best") and key not in EVALUATION_METRICS:
        known = [f"{p}/{k}" for p in ("val", "init") for k in EVALUATION_METRICS] + ["best/uAP"]
        raise missing_metric_error(name, dict.fromkeys(known))
    if prefix == "best" and key != "uAP":
        raise missing_metric_error(name, dict.fromkeys(["best/uAP"]))


class MissingRequiredValue(ValueError):
    """A value that a config declares under `required:` is unset."""


def _unset(value) -> bool:
    return value is None or value == "" or value == "???"


def dotted_leaves(tree: Mapping, prefix: str = ""):
    """(dotted key, value) of every leaf of a nested mapping (an empty mapping is a leaf)."""
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from dotted_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def required_values(cfg) -> list[tuple[str, object, object]]:
    """(full key, example, current value) of every value the config declares under `required:` — at the top
    level with absolute keys, or inside a group's node with keys relative to it (see check_required)."""
    from omegaconf import OmegaConf

    declared = []
    nodes = [("", cfg)] + [
        (f"{name}.", node)
        for name, node in cfg.items_ex(resolve=False)
        if OmegaConf.is_dict(node) and name != "required"
    ]
    for prefix, node in nodes:
        examples = OmegaConf.to_container(node.get("required") or OmegaConf.create(), resolve=True)
        for key, example in dotted_leaves(examples):
            if example is not None:  # `required.<key>=null` lifts the requirement
                declared.append((prefix + key, example, OmegaConf.select(node, key, throw_on_missing=False)))
    return declared


def check_required(cfg) -> None:
    """Stop before any work when a required value is unset (null, empty or `???`).

    A config declares what it needs in a `required:` mapping of key → example value: at the top level with
    absolute keys (an experiment: `required: {init_from: <stage 1's last.ckpt>}`, nested for dotted keys), or
    inside a group's node with keys relative to that node (`dataset.required: {root: /data/DISC21}`). OmegaConf's
    own `???` cannot do this job: merged over an earlier value it keeps that value, so `init_from: ???` in an
    experiment composes to the null of train.yaml and the run silently starts from scratch (issue 15)."""
    missing = [f"{key} (e.g. {key}={example})" for key, example, value in required_values(cfg) if _unset(value)]
    if missing:
        several = len(missing) > 1
        raise MissingRequiredValue(
            f"required value{'s' if several else ''} not set: {'; '.join(missing)} "
            f"— add {'them' if several else 'it'} to the command line"
        )
