"""Every recipe against its source table (conf/_sources/<experiment>.yaml): the table is the reference.

Each experiment is composed on the DISC21 dataset config, with its `recipe.evaluate` overrides applied to the
isc-eval config, and every row of its table is compared with the composed value: a match holds the source's
value; a stand-in, source-silent or known-difference row holds the value the row records (and says why)."""

from __future__ import annotations

import pytest
import yaml

from isc_research.recipes import SourceRow, card_rows, experiment_names, load_table, same, sources_dir

EXPERIMENTS = experiment_names()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_source_row_holds_in_the_composed_config(name):
    rows = card_rows(name)
    assert rows, name
    wrong = [
        f"{r.row.key}: table {r.row.expected!r} ({r.row.verdict}), config {r.value!r}" for r in rows if not r.holds
    ]
    assert not wrong, f"{name}: the composed config differs from its source table:\n" + "\n".join(wrong)


def test_every_experiment_has_a_table_and_every_table_an_experiment():
    tables = {p.stem for p in sources_dir().glob("*.yaml")}
    assert tables == set(EXPERIMENTS)


def test_recipe_tables_cover_model_optimiser_schedule_and_evaluation():
    """The winners' tables state the main quantities: a table that lost its evaluation or optimiser rows fails."""
    for name in [n for n in EXPERIMENTS if not n.startswith("cpu_")]:
        keys = {row.key for row in load_table(name)}
        assert any(k.startswith("eval:") for k in keys), f"{name}: no evaluation rows"
        assert {"optimizer.lr", "model.embedding_dim", "data.train_size", "trainer.max_epochs"} <= keys or {
            "optimizer.lr",
            "model.embedding_dim",
            "data.train_size",
            "trainer.max_steps",
        } <= keys, name


def test_lyakaap_rows_record_what_his_code_ran_next_to_the_write_up():
    """Issue 16 item 11: the effective lr (0.1 / W) and the written lr (0.1) are both rows and both hold."""
    rows = {r.row.key: r for r in card_rows("lyakaap_stage1")}
    assert rows["optimizer.lr"].value == pytest.approx(0.025) and rows["optimizer.lr"].holds
    assert rows["lr_times_world_size"].value == pytest.approx(0.1) and rows["lr_times_world_size"].holds


def test_a_wrong_config_value_is_caught():
    """The check can fail: change a config value under a match row and the row no longer holds."""
    from isc_research import recipes

    cfg, eval_cfg, _ = recipes.compose_recipe("lyakaap_stage2")
    cfg.data.train_size = 256
    rows = {r.row.key: r for r in card_rows("lyakaap_stage2", cfg, eval_cfg)}
    assert not rows["data.train_size"].holds
    eval_cfg.eval.size = 64
    assert not {r.row.key: r for r in card_rows("lyakaap_stage2", cfg, eval_cfg)}["eval:eval.size"].holds


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"what": "x", "key": "a", "source": 1, "cite": "", "verdict": "match"}, "citation"),
        ({"what": "x", "key": "a", "source": 1, "cite": "c", "verdict": "stand-in", "config": 2}, "reason"),
        ({"what": "x", "key": "a", "source": 1, "cite": "c", "verdict": "differs", "config": 2}, "known_difference"),
        ({"what": "x", "key": "a", "source": 1, "cite": "c", "verdict": "source silent", "config": 2}, "source: null"),
        ({"what": "x", "key": "a", "source": 1, "cite": "c", "verdict": "stand-in", "reason": "r"}, "config"),
        ({"what": "x", "key": "a", "source": 1, "cite": "c", "verdict": "close enough"}, "verdict"),
    ],
)
def test_malformed_rows_are_named(raw, message):
    with pytest.raises(ValueError, match=message):
        SourceRow(**raw).check()


def test_unknown_table_field_names_the_file(tmp_path, monkeypatch):
    from isc_research import recipes

    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump({"rows": [{"what": "x", "key": "a", "source": 1, "cite": "c", "verdict": "match", "sorce": 2}]})
    )
    monkeypatch.setattr(recipes, "sources_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match=r"bad.yaml: row 0 has unknown fields \['sorce'\]"):
        load_table("bad")


def test_same_compares_values_not_types_of_numbers():
    assert same(0.1, 0.1 + 1e-17) and same(256, 256.0) and same([1, 2.0], [1.0, 2])
    assert not same(True, 1) and not same("16", 16) and not same([1, 2], [1, 2, 3]) and not same(None, 0)
