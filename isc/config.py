"""Where the Hydra configs live, and helpers shared by the command-line entry points."""

from __future__ import annotations

import logging
from pathlib import Path

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
    """Hide faiss' loader chatter (it reports every CPU-feature library it tries) from run logs, and let
    Lightning's messages reach the console once, through Hydra's handlers, instead of twice."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    lightning_logger = logging.getLogger("lightning.pytorch")
    for handler in list(lightning_logger.handlers):
        lightning_logger.removeHandler(handler)


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


EVALUATION_METRICS = ("uAP", "recall_at_p90", "recall_at_rank1", "recall_at_rank10")


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


def _leaves(tree: dict, prefix: str = ""):
    """(dotted key, value) of every leaf of a nested mapping."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def required_values(cfg) -> list[tuple[str, object, object]]:
    """(full key, example, current value) of every value the config declares under `required:` — at the top
    level with absolute keys, or inside a group's node with keys relative to it (see check_required)."""
    from omegaconf import OmegaConf

    declared = []
    nodes = [("", cfg)] + [(f"{name}.", node) for name, node in cfg.items_ex(resolve=False)
                           if OmegaConf.is_dict(node) and name != "required"]
    for prefix, node in nodes:
        examples = OmegaConf.to_container(node.get("required") or OmegaConf.create(), resolve=True)
        for key, example in _leaves(examples):
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
        raise MissingRequiredValue(f"required value{'s' if several else ''} not set: {'; '.join(missing)} "
                                   f"— add {'them' if several else 'it'} to the command line")
