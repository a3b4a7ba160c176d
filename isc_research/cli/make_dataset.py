"""``isc-make-dataset``: build an embedded mini-DISC (a small DISC21-shaped dataset) into a folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from isc_research.data.mini_disc import MiniDiscError, MiniDiscSpec, build_mini_disc, ensure_mini_disc, read_manifest
from isc_research.summary import print_summary

_DEFAULT = MiniDiscSpec()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="isc-make-dataset",
        description="Build a mini-DISC (reference/, training/, query/, ground_truth.csv, query_edits.csv, "
        "manifest.json) from photos shipped inside installed packages, or from --source DIR.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (must not exist, or be empty)")
    p.add_argument("--references", type=int, default=_DEFAULT.n_references, help="number of reference images")
    p.add_argument("--training", type=int, default=_DEFAULT.n_training, help="number of training images")
    p.add_argument("--queries", type=int, default=_DEFAULT.n_queries, help="number of query images")
    p.add_argument(
        "--match-fraction",
        type=float,
        default=_DEFAULT.match_fraction,
        help="fraction of queries that are edited references (the rest are distractors)",
    )
    p.add_argument("--image-size", type=int, default=_DEFAULT.image_size, help="long side of generated images")
    p.add_argument("--seed", type=int, default=_DEFAULT.seed)
    p.add_argument("--source", type=Path, default=None, help="folder of your own photos (searched recursively)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _summary(root: Path, manifest: dict, seconds: float | None, status: str = "finished") -> None:
    """The closing summary (isc_research.summary): counts, sources, and the dataset's absolute path."""
    c = manifest["counts"]
    numbers = [
        ("dataset", f"mini-DISC {manifest['name']}"),
        (
            "images",
            f"references {c['references']}, training {c['training']}, queries {c['queries']} "
            f"({c['matched_queries']} matched, {c['distractor_queries']} distractors)",
        ),
        ("sources", f"{len(manifest['sources']['used'])} photos used"),
    ]
    skipped = manifest["sources"]["skipped"]
    if skipped and manifest["spec"]["source_dir"] is None:
        numbers.append(("skipped", f"{len(skipped)} unsuitable bundled sample files (listed in manifest.json)"))
    elif skipped:
        shown = "; ".join(f"{s['file']} ({s['reason']})" for s in skipped[:8])
        numbers.append(("skipped", f"{len(skipped)} source files: {shown}{' ...' if len(skipped) > 8 else ''}"))
    print_summary(
        "isc-make-dataset",
        seconds,
        numbers,
        [("folder", root), ("ground truth", root / "ground_truth.csv"), ("manifest", root / "manifest.json")],
        status=status,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``isc-make-dataset``; returns the exit status (2: bad arguments or foreign folder)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        spec = MiniDiscSpec(
            n_references=args.references,
            n_training=args.training,
            n_queries=args.queries,
            match_fraction=args.match_fraction,
            image_size=args.image_size,
            seed=args.seed,
            source_dir=None if args.source is None else str(args.source),
        )
    except ValueError as e:
        parser.error(str(e))
    if args.source is not None and not args.source.is_dir():
        parser.error(f"--source {args.source}: not a folder")
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        try:
            root = ensure_mini_disc(out, spec)  # never builds or modifies a non-empty folder
        except MiniDiscError as e:
            print(f"isc-make-dataset: error: {e}", file=sys.stderr)
            return 2
        _summary(root, read_manifest(root), None, status="found the dataset already built: nothing to do")
        return 0
    t0 = time.perf_counter()
    try:
        root = build_mini_disc(out, spec, workers=args.workers, progress=not args.quiet)
    except MiniDiscError as e:
        print(f"isc-make-dataset: error: {e}", file=sys.stderr)
        return 1
    _summary(root, read_manifest(root), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
