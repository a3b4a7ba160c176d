"""Recipe source tables and the recipe cards generated from them.

Each experiment in conf/experiment/ has a source table, conf/_sources/<experiment>.yaml: every value its
sources state (the write-up, the winner's code), one row each, with the config key it maps to, the source's
value, a citation and a verdict. The table is the reference: tests/test_recipe_sources.py composes every
experiment (and its `recipe.evaluate` overrides on the isc-eval config) and compares every row with the
composed config. docs/recipes.md (`isc-recipe-cards`) shows every row: source value, config value, verdict.

Row fields:
  what      the quantity, in words
  key       where the config holds it: a dotted key of the composed isc-train config; `eval:<key>` for the
            isc-eval config composed with the experiment's `recipe.evaluate`; `match:<key>` for the isc-match
            config composed with its `recipe.match` (matching-track recipes); or a DERIVED name (total_batch…)
  source    the value the source states (null where the source is silent)
  cite      where the source states it (RECIPES.md section; the winner's repository file), in our words
  verdict   match        the config holds `source`
            stand-in     the source's ingredient cannot exist here (weights behind a download, OpenImages, the
                         team's screenshot templates…): the config holds `config`, `reason` says why
            source silent  the source does not state it: the config's choice is `config`
            differs      a known difference not fixed yet: the config holds `config`, `known_difference` says
                         what it changes (listed in the card)
  config    the config's value (stand-in, source silent, differs)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from isc_research.config import config_dir

VERDICTS = ("match", "stand-in", "source silent", "differs")
_NOT_SET = "<not set>"
_ABSENT = "<no config field>"  # a row without `config:` (null is a value: "the config holds null")


def _world_size(cfg: DictConfig) -> int:
    return int(cfg.trainer.get("devices") or 1) * int(cfg.trainer.get("num_nodes") or 1)


def _neighbour_lists(settings) -> str | None:
    if not settings or not settings.get("enabled"):
        return None
    return settings.get("neighbours") or "initial model"


DERIVED = {
    # processes (GPUs) of a run
    "world_size": _world_size,
    # samples per optimiser step = samples per process × processes (a sample = an image with its n_views views,
    # a ground-truth pair, or an instance class of the PK sampler)
    "total_batch": lambda cfg: int(cfg.data.batch_size) * _world_size(cfg),
    # images per optimiser step, counting each view (VisionForce's 128 = 32 classes × 4 instances)
    "total_views": lambda cfg: int(cfg.data.batch_size) * int(cfg.data.n_views) * _world_size(cfg),
    # optimiser steps of the run when an epoch has a fixed length (data.steps_per_epoch)
    "total_steps": lambda cfg: (
        int(cfg.trainer.max_epochs) * int(cfg.data.steps_per_epoch)
        if cfg.data.get("steps_per_epoch")
        else int(cfg.trainer.get("max_steps") or -1)
    ),
    # batch-level mixup/CutMix on (the batch_mix group selected)
    "mixup": lambda cfg: bool(cfg.get("batch_mix")),
    # which training images: all, or a subset (VisionForce: every 10th)
    "training_images": lambda cfg: (
        "all"
        if not cfg.dataset.get("max_training") and not cfg.dataset.get("training_every")
        else f"every {cfg.dataset.training_every}th"
        if cfg.dataset.get("training_every")
        else f"first {cfg.dataset.max_training}"
    ),
    # where hard-negative batches get their neighbour lists (data.neighbour_batches): a given file, or computed
    # from the initial model's descriptors of the training images; null when the batches are random
    "neighbour_lists": lambda cfg: _neighbour_lists(cfg.data.get("neighbour_batches")),
    # the learning rate as the sources' commands write it, for a recipe whose config holds the effective one
    # (lyakaap: his loss wrapper divided each step by the number of GPUs, RECIPES §2.2)
    "lr_times_world_size": lambda cfg: float(cfg.optimizer.lr) * _world_size(cfg),
    # samples per optimiser step in each ArcFace drip stage (a stage's batch_size, else data.batch_size, × processes)
    "stage_total_batches": lambda cfg: (
        [int(s.get("batch_size") or cfg.data.batch_size) * _world_size(cfg) for s in _drip(cfg).stages]
        if _drip(cfg)
        else None
    ),
    # what one epoch of an ArcFace drip stage covers (S-square: a new trainer.py run per stage)
    "stage_epoch": lambda cfg: (
        None
        if not _drip(cfg)
        else f"{cfg.data.steps_per_epoch} steps"
        if cfg.data.get("steps_per_epoch")
        else "one pass over the stage's classes"
        if _drip(cfg).get("restart_each_stage")
        else "one pass over all classes (the stage's repeated)"
    ),
}


def _drip(cfg: DictConfig):
    return (cfg.loss.get("callbacks") or {}).get("drip")


@dataclass(frozen=True)
class SourceRow:
    what: str
    key: str
    source: object
    cite: str
    verdict: str
    config: object = _ABSENT
    reason: str = ""
    known_difference: str = ""

    @property
    def expected(self):
        """The value the composed config must hold."""
        return self.source if self.verdict == "match" else self.config

    def check(self) -> None:
        where = f"row {self.what!r} ({self.key})"
        if self.verdict not in VERDICTS:
            raise ValueError(f"{where}: verdict {self.verdict!r} is not one of {VERDICTS}")
        if not self.cite:
            raise ValueError(f"{where}: no citation (cite)")
        if self.verdict == "stand-in" and not self.reason:
            raise ValueError(f"{where}: a stand-in needs a reason")
        if self.verdict == "differs" and not self.known_difference:
            raise ValueError(f"{where}: a known difference needs known_difference")
        if self.verdict == "source silent" and self.source is not None:
            raise ValueError(f"{where}: 'source silent' rows have source: null")
        if self.verdict == "match" and self.config != _ABSENT:
            raise ValueError(f"{where}: a match holds the source's value; drop `config`")
        if self.verdict != "match" and self.config == _ABSENT:
            raise ValueError(f"{where}: verdict {self.verdict!r} needs the config's value (config)")


def sources_dir() -> Path:
    return config_dir() / "_sources"


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def load_table(name: str) -> list[SourceRow]:
    """The source table of experiment `name` (conf/_sources/<name>.yaml), every row checked for form.

    `include: [part, …]` first takes the rows of conf/_sources/parts/<part>.yaml (what several experiments
    share, e.g. lyakaap's four stages); a row of the table itself replaces an included row with the same key."""
    path = sources_dir() / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"experiment {name!r} has no source table: write {path}")
    data = yaml.safe_load(path.read_text()) or {}
    rows: dict[str, SourceRow] = {}
    for part in data.get("include") or []:
        rows.update({row.key: row for row in _read_rows(sources_dir() / "parts" / f"{part}.yaml")})
    rows.update({row.key: row for row in _read_rows(path)})
    if not rows:
        raise ValueError(f"{path}: no rows")
    return list(rows.values())


def _read_rows(path: Path) -> list[SourceRow]:
    if not path.is_file():
        raise FileNotFoundError(f"source table part {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    rows = []
    for i, raw in enumerate(data.get("rows") or []):
        unknown = set(raw) - set(SourceRow.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: row {i} has unknown fields {sorted(unknown)}")
        try:
            row = SourceRow(**raw)
        except TypeError as error:
            raise ValueError(f"{path}: row {i}: {error}") from error
        try:
            row.check()
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        rows.append(row)
    keys = [row.key for row in rows]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: keys listed twice: {sorted({k for k in keys if keys.count(k) > 1})}")
    return rows


def config_value(cfg: DictConfig, key: str, eval_cfg: DictConfig | None = None, match_cfg: DictConfig | None = None):
    """The value of a row's key in the composed isc-train config (the isc-eval config for `eval:` keys, the
    isc-match config for `match:` keys)."""
    if key in DERIVED:
        return DERIVED[key](cfg)
    for prefix, other in (("eval:", eval_cfg), ("match:", match_cfg)):
        if key.startswith(prefix):
            if other is None:
                raise ValueError(
                    f"key {key!r} needs the {'isc-eval' if prefix == 'eval:' else 'isc-match'} config "
                    f"(recipe.{'evaluate' if prefix == 'eval:' else 'match'})"
                )
            cfg, key = other, key[len(prefix) :]
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True, default=_NOT_SET)
    except MissingMandatoryValue:
        return "???"  # a required key the user gives (e.g. a weights file, the previous stage's checkpoint)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def same(expected, actual) -> bool:
    """Equal values, numbers within float noise (1e-9 relative), lists and dicts element by element."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual or expected == actual and type(expected) is type(actual)
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(float(expected), float(actual), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(same(e, a) for e, a in zip(expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(same(v, actual[k]) for k, v in expected.items())
    return expected == actual


@dataclass(frozen=True)
class CardRow:
    row: SourceRow
    value: object  # the composed config's value

    @property
    def holds(self) -> bool:
        return same(self.row.expected, self.value)


def compose_recipe(name: str) -> tuple[DictConfig, DictConfig, DictConfig | None]:
    """(isc-train config of the experiment, isc-eval config with its `recipe.evaluate` overrides, isc-match
    config with its `recipe.match` overrides or None), all on the DISC21 dataset the recipes were written for
    (dataset=disc21; its root stays unset)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={name}", "dataset=disc21"])
        eval_cfg = compose(config_name="eval", overrides=["dataset=disc21", *cfg.recipe.evaluate])
        match = cfg.recipe.get("match")
        match_cfg = compose(config_name="match", overrides=["dataset=disc21", *match]) if match else None
    return cfg, eval_cfg, match_cfg


def card_rows(
    name: str, cfg: DictConfig | None = None, eval_cfg: DictConfig | None = None, match_cfg: DictConfig | None = None
) -> list[CardRow]:
    """Every row of the experiment's source table next to the composed configs' value."""
    if cfg is None or eval_cfg is None:
        cfg, eval_cfg, match_cfg = compose_recipe(name)
    return [CardRow(row, config_value(cfg, row.key, eval_cfg, match_cfg)) for row in load_table(name)]


def _cell(value) -> str:
    text = "—" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


_MARK = {"match": "✓ match", "stand-in": "stand-in", "source silent": "source silent", "differs": "✗ differs"}


def _quoted(override: str) -> str:
    return f"'{override}'" if any(c in override for c in "[],") else override


def verdict_counts(rows: list[CardRow]) -> dict[str, int]:
    return {v: sum(r.row.verdict == v for r in rows) for v in VERDICTS}


def render_cards() -> str:
    """The Markdown page of all recipe cards (docs/recipes.md)."""
    lines = [
        "# Recipe cards",
        "",
        "Generated by `isc-recipe-cards` from the source tables `conf/_sources/<experiment>.yaml` and the",
        "composed configs — do not edit by hand. Each row: a value the sources state (RECIPES.md section, the",
        "winner's file), the value the composed config holds (`eval:` keys: the isc-eval config with the",
        "recipe's evaluation overrides; `match:` keys: the isc-match config with its matching-track"
        " overrides), and the verdict — match; stand-in (the source's ingredient cannot",
        "exist here; the reason is given); source silent (the config's own choice); differs (a known",
        "difference, listed under the table). `tests/test_recipe_sources.py` checks every row.",
        "Derived keys: `world_size` = devices × nodes; `total_batch` = data.batch_size × world_size;",
        "`total_views` = total_batch × data.n_views; `total_steps` = max_epochs × data.steps_per_epoch;",
        "`lr_times_world_size` = optimizer.lr × world_size; `neighbour_lists` = where hard-negative batches",
        "take their neighbour lists (a file, or the initial model's descriptors); `stage_total_batches` = each",
        "ArcFace drip stage's batch_size (else data.batch_size) × world_size; `stage_epoch` = what an epoch of a",
        "drip stage covers (one pass over the stage's classes with loss.callbacks.drip.restart_each_stage).",
        "",
    ]
    names = experiment_names()
    totals = dict.fromkeys(VERDICTS, 0)
    sections = []
    for name in names:
        cfg, eval_cfg, match_cfg = compose_recipe(name)
        rows = card_rows(name, cfg, eval_cfg, match_cfg)
        counts = verdict_counts(rows)
        for v in VERDICTS:
            totals[v] += counts[v]
        recipe = cfg.recipe
        evaluate = " ".join(["isc-eval", "ckpt_path=<checkpoint>", *(_quoted(o) for o in recipe.evaluate)])
        part = [
            f"## {recipe.title}",
            "",
            f"`isc-train experiment={name}` — {recipe.get('sections', '')}",
            "",
            f"Evaluate: `{evaluate}`",
            "",
        ]
        if recipe.get("match"):
            command = " ".join(["isc-match", "ckpt_path=<checkpoints>", *(_quoted(o) for o in recipe.match)])
            part += [f"Matching track: `{command}`", ""]
        part += [
            f"- **Published:** {recipe.published}",
            f"- **Compute:** {recipe.compute}",
            "- **Rows:** " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS),
            "",
            "| quantity | key | source | config | verdict | source of the value |",
            "|---|---|---|---|---|---|",
        ]
        notes = []
        for r in rows:
            verdict = _MARK[r.row.verdict] if r.holds else "✗ config differs from the table"
            if r.row.verdict == "stand-in":
                verdict += f": {r.row.reason}"
            part.append(
                f"| {_cell(r.row.what)} | `{r.row.key}` | {_cell(r.row.source)} | {_cell(r.value)} | "
                f"{_cell(verdict)} | {_cell(r.row.cite)} |"
            )
            if r.row.verdict == "differs":
                notes.append(f"- `{r.row.key}` ({r.row.what}): {r.row.known_difference}")
        if notes:
            part += ["", "**Known differences:**", *notes]
        sections += [*part, ""]
    lines += ["Rows over all experiments: " + ", ".join(f"{totals[v]} {v}" for v in VERDICTS) + ".", "", *sections]
    return "\n".join(lines)


def write_cards(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_cards())
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Write the recipe cards (Markdown) from conf/_sources/ and the composed conf/experiment/ configs."
    )
    parser.add_argument("--out", default="docs/recipes.md")
    args = parser.parse_args(argv)
    print(f"wrote {write_cards(Path(args.out))}")
    return 0
