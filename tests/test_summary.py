"""What every command prints last (isc_research.summary), the `latest` link, `~` in overrides, one output folder per
run (hydra.run.dir = paths.output_dir), and the sweep table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from isc_research.config import expand_home
from isc_research.summary import best_checkpoint, duration, format_summary, link_latest, similarity, sweep_table
from tests.test_evaluate import SMOKE_DATASET, save_checkpoint

ROOT = Path(__file__).parents[1]


def test_durations_and_the_similarity_scale():
    assert [duration(s) for s in (0.84, 23.4, 109, 3720)] == ["0.8 s", "23 s", "1 min 49 s", "1 h 02 min"]
    # −d² of unit vectors → their cosine; inner-product scores are similarities already; order kept
    a, b = np.array([0.6, 0.8]), np.array([1.0, 0.0])
    assert similarity(-np.sum((a - b) ** 2), "l2") == pytest.approx(a @ b)
    assert similarity(0.25, "ip") == 0.25 and similarity(None) is None
    np.testing.assert_allclose(similarity(np.array([-0.5, 0.0]), "l2"), [0.75, 1.0])
    with pytest.raises(ValueError, match="unknown search metric 'cos'"):
        similarity(1.0, "cos")


def test_latest_link_points_at_the_last_finished_run_and_nowhere_else(tmp_path):
    task = tmp_path / "outputs" / "train"
    first, second = task / "runs" / "a", task / "multiruns" / "s" / "0"
    for folder in (first, second):
        folder.mkdir(parents=True)
    link = link_latest(first, task)
    assert link == task / "latest" and os.readlink(link) == "runs/a" and link.resolve() == first
    assert link_latest(second, task) == link and os.readlink(link) == "multiruns/s/0"  # replaced
    assert not list(task.glob(".latest.*"))  # the temporary link was renamed over the old one
    # a folder the user named elsewhere gets no link; a `latest` that is the user's own file is left alone
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    assert link_latest(elsewhere, task) is None and os.readlink(link) == "multiruns/s/0"
    other = tmp_path / "outputs" / "eval"
    (other / "runs" / "x").mkdir(parents=True)
    (other / "latest").write_text("mine")
    assert link_latest(other / "runs" / "x", other) is None and (other / "latest").read_text() == "mine"


def test_summary_names_existing_files_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    for name in ("epoch003-uAP0.5000.ckpt", "last.ckpt"):
        (tmp_path / "run" / "checkpoints" / name).write_bytes(b"")
    best, epoch = best_checkpoint(Path("run"))
    assert best.name == "epoch003-uAP0.5000.ckpt" and epoch == 3
    text = format_summary(
        "isc-x", 109, [("µAP", "0.1 → 0.2")], [("checkpoint", best), ("report", Path("run/report.html"))]
    )
    assert text.splitlines() == [
        "isc-x finished in 1 min 49 s",
        "  µAP          0.1 → 0.2",
        f"  checkpoint   {tmp_path / 'run' / 'checkpoints' / 'epoch003-uAP0.5000.ckpt'}",
    ]


def test_a_tilde_starts_a_path_in_any_override():
    home = os.path.expanduser("~")
    assert expand_home(
        [
            "dataset.build.source_dir=~/my_photos",
            "ckpt_path=[~/a.ckpt,~/b.ckpt]",
            "x=~",
            "-m",
            "~deleted",
            "a=~/p,~/q",
            "q='x~y'",
        ]
    ) == [
        f"dataset.build.source_dir={home}/my_photos",
        f"ckpt_path=[{home}/a.ckpt,{home}/b.ckpt]",
        f"x={home}",
        "-m",
        "~deleted",
        f"a={home}/p,{home}/q",
        "q='x~y'",
    ]
    with pytest.raises(ValueError, match=r"""Quote the value to keep a literal `~`: "name='a~b'\""""):
        expand_home(["name=a~b"])


def _cli(module: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOME": str(home),
        "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR", str(Path.home() / ".config" / "matplotlib")),
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=home, timeout=600
    )


def test_isc_eval_writes_everything_into_the_folder_named_with_a_tilde(data_dir, tmp_path):
    save_checkpoint(tmp_path / "a.ckpt")
    common = (f"paths.data_dir={data_dir}", "eval.num_workers=0", "torch_threads=1", *SMOKE_DATASET)
    done = _cli("isc_research.cli.evaluate", "ckpt_path=~/a.ckpt", "hydra.run.dir=~/my_eval", *common, home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "my_eval"
    # the log and the results in the one folder the user named (hydra.run.dir), nothing under outputs/
    assert {"evaluate.log", "metrics.json", "predictions.csv", "report.html", "ablation.md"} <= {
        p.name for p in out.iterdir()
    }
    assert not (tmp_path / "outputs").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    summary = done.stdout[done.stdout.index("isc-eval finished in") :]
    assert f"µAP          {metrics['uAP']:.4f} (raw" in summary and f"run folder   {out}\n" in summary
    assert f"similarity {metrics['similarity_at_p90']:.4f} at 90 % precision" in summary
    assert f"report       {out / 'report.html'}" in summary and "latest" not in summary  # not under outputs/
    assert len(done.stdout) < 3000  # a summary, not the 4 KB JSON
    bad = _cli("isc_research.cli.evaluate", "ckpt_path=a~b.ckpt", home=tmp_path)
    assert bad.returncode == 2 and "isc-eval: error: 'ckpt_path=a~b.ckpt'" in bad.stderr and "Quote" in bad.stderr


def test_sweep_table_lists_every_job_and_the_best(tmp_path):
    for job, (lr, uap) in enumerate([(0.05, 0.21), (0.1, 0.25), (0.2, None)]):
        folder = tmp_path / str(job)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- debug=smoke\n- optimizer.lr={lr}\n")
        if uap is not None:
            (folder / "metrics.json").write_text(json.dumps({"init/uAP": 0.09, "val/uAP": uap}))
    table, best = sweep_table(tmp_path)
    assert best == 1
    assert table.splitlines() == [
        "| job | optimizer.lr | init/uAP | val/uAP |",
        "|---|---|---|---|",
        "| 0 | 0.05 | 0.0900 | 0.2100 |",
        "| 1 (best) | 0.1 | 0.0900 | 0.2500 |",
        "| 2 | 0.2 | failed | failed |",
    ]
