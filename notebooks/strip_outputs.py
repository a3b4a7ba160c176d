"""Clear the outputs of notebooks before committing them (`make strip-notebooks`); `--check` only lists
the notebooks that have outputs and exits 1 if any (the test suite runs the same check)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent
VOLATILE_METADATA = ("execution", "collapsed", "scrolled")  # per-cell keys that Jupyter adds when running


def problems(notebook) -> list[str]:
    """What running the notebook left in it: outputs, execution counts, run metadata."""
    found = []
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {i} has {len(cell.outputs)} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i} has execution_count {cell.execution_count}")
        found += [f"cell {i} has metadata.{key}" for key in VOLATILE_METADATA if key in cell.metadata]
    found += [f"notebook metadata.{key}" for key in ("widgets", "papermill") if key in notebook.metadata]
    return found


def strip(notebook) -> None:
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in VOLATILE_METADATA:
            cell.metadata.pop(key, None)
    for key in ("widgets", "papermill"):
        notebook.metadata.pop(key, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="only report notebooks with outputs; exit 1 if any")
    args = parser.parse_args(argv)
    dirty = 0
    for path in args.paths or sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        found = problems(notebook)
        if not found:
            continue
        dirty += 1
        if args.check:
            print(f"{path}: {'; '.join(found)}")
        else:
            strip(notebook)
            nbformat.write(notebook, path)
            print(f"stripped {path}")
    if args.check and dirty:
        print("run `make strip-notebooks` before committing", file=sys.stderr)
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
