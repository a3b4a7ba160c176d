"""The tutorial (docs/tutorial.md) is tested: its commands are scripts/tutorial.sh's, and the script runs every one of
them
end to end on a tiny mini-DISC (one epoch), so that a command that breaks or a flag that is renamed fails CI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "tutorial.sh"
# tutorial commands that the script runs in another form, and the form
IN_THE_SCRIPT_AS = {"make train": 'make -C "$REPO" train', "make test": 'make -C "$REPO" test'}
# tutorial commands that need what a single machine lacks (the page says so next to them)
NOT_RUN = {
    "isc-train dataset=disc21 dataset.root=/data/DISC21 trainer=gpu",
    "isc-eval  dataset=disc21 dataset.root=/data/DISC21 ckpt_path=$CKPT",
    "isc-train experiment=lyakaap_stage1 trainer=gpu",
}


def tutorial_commands() -> list[str]:
    """The command lines of the bash blocks of the tutorial (docs/tutorial.md), without their `# …` comments."""
    section = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S) for line in block.splitlines()]
    return [c for c in (line.split("  #")[0].strip() for line in lines if not line.lstrip().startswith("#")) if c]


def test_the_tutorial_page_is_what_the_script_runs():
    commands = tutorial_commands()
    assert len(commands) >= 15 and NOT_RUN <= set(commands)
    script = SCRIPT.read_text(encoding="utf-8")
    missing = [c for c in commands if c not in NOT_RUN and IN_THE_SCRIPT_AS.get(c, c) not in script]
    assert not missing, f"docs/tutorial.md commands that scripts/tutorial.sh does not run: {missing}"


@pytest.mark.slow
def test_the_tutorial_runs_end_to_end_on_tiny_data(tmp_path):
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "isc-train").is_file(), "the isc console scripts must be installed next to the test's python"
    env = {key: value for key, value in os.environ.items() if not key.startswith("ISC_")}
    env |= {"TUTORIAL_TINY": "1", "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # nothing outside outputs/ and data/ (the repository root stays clean)
    assert {p.name for p in tmp_path.iterdir()} == {"outputs", "data"}
    outputs = tmp_path / "outputs"
    (tutorial,) = (outputs / "tutorial").iterdir()
    numbers = (tutorial / "numbers.md").read_text(encoding="utf-8")
    steps = re.findall(r"^## (\S+)$", numbers, flags=re.M)
    assert steps == [
        "train",
        "search-build",
        "search-query",
        "my-photos",
        "export",
        "recipe-smoke",
        "cpu-visionforce",
        "cpu-arcface",
        "sweep",
        "optuna",
        "match",
        "ablation",
    ]
    assert numbers.count(" finished in ") >= len(steps) and "TINY run" in numbers
    # every command named its files; the `latest` links lead to them
    for task, files in (
        ("train", ["metrics.json", "checkpoints/last.ckpt"]),
        ("eval", ["report.html", "ablation.md"]),
        ("match", ["predictions.csv"]),
        ("export", ["last.onnx", "export.json"]),
        ("lyakaap_stage1", ["metrics.json"]),
    ):
        for name in files:
            assert (outputs / task / "latest" / name).is_file(), (task, name)
    assert f"report       {(outputs / 'eval' / 'latest').resolve() / 'report.html'}" in numbers
    assert (outputs / "search" / "matches.csv").is_file() and (outputs / "search" / "my-index" / "index.json").is_file()
    # `~/my_photos` was the folder under the tutorial's HOME, not a literal `~`
    photos_run = re.search(r"## my-photos\n\n```\n.*?run folder   (\S+)", numbers, flags=re.S).group(1)
    config = (Path(photos_run) / "config.yaml").read_text()
    assert f"source_dir: {tutorial / 'home' / 'my_photos'}" in config
    # both sweeps ended with their per-job table
    assert numbers.count("| job |") == 2 and (outputs / "train" / "multiruns").is_dir()
    for summary in (outputs / "train" / "multiruns").glob("*/summary.md"):
        assert summary.read_text().count("\n") == 4  # header, rule, 2 jobs
