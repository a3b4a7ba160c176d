"""notebooks/: each one runs end to end on the tiny mini-DISC (ISC_NOTEBOOK_SMOKE=1, nbclient), and the
committed files carry no outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_dataset_and_augmentations", "02_train_and_evaluate", "03_error_analysis"]


def _strip_module():
    spec = importlib.util.spec_from_file_location("strip_outputs", NOTEBOOKS / "strip_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_notebooks_are_all_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    assert _strip_module().problems(notebook) == [], "run `make strip-notebooks` before committing"
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", []) and "ISC_NOTEBOOK_SMOKE" in first_code.source


def test_strip_outputs_clears_what_a_run_leaves(tmp_path):
    strip = _strip_module()
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("print(1)"), nbformat.v4.new_markdown_cell("x")]
    )
    notebook.cells[0].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    notebook.cells[0].execution_count = 3
    notebook.cells[0].metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    path = tmp_path / "a.ipynb"
    nbformat.write(notebook, path)
    assert strip.main(["--check", str(path)]) == 1
    assert strip.problems(nbformat.read(path, as_version=4)) == [
        "cell 0 has 1 output(s)",
        "cell 0 has execution_count 3",
        "cell 0 has metadata.execution",
    ]
    assert strip.main([str(path)]) == 0
    assert strip.main(["--check", str(path)]) == 0
    assert nbformat.read(path, as_version=4).cells[0].source == "print(1)"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_the_tiny_mini_disc(name, data_dir, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    if name == "03_error_analysis":  # 02 covers training: analyse an untrained model in isc-train's layout
        from tests.test_evaluate import save_checkpoint

        monkeypatch.setenv("ISC_NOTEBOOK_CKPT", str(save_checkpoint(tmp_path / "a.ckpt")))
    monkeypatch.setenv("ISC_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("ISC_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ISC_LOG_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel is one more process on a busy CI machine
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(
        o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {}) for o in outputs
    ), "the notebook shows no figure"
    if name != "01_dataset_and_augmentations":
        assert (tmp_path / "outputs" / "notebooks").is_dir()
