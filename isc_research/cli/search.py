"""``isc-search``: find copies of your images in a folder of your images, with a trained checkpoint.

  isc-search build INDEX --checkpoint CKPT IMAGES...   embed a folder (or files) into a new index at INDEX
  isc-search add INDEX IMAGES...                       add new or modified images (old vectors are kept)
  isc-search query INDEX QUERY... [--csv F] [--json F] ranked matches of each query image (or folder)
  isc-search info INDEX                                what an index holds and its threshold

A match is flagged as a copy when its score (similarity: the cosine of the descriptors, the scale isc-eval and
report.html use too) is ≥ the index's
threshold, calibrated by `build` at 90 % precision (--target-precision) on the checkpoint's validation data:
the DISC-layout dataset recorded in the checkpoint (queries, references, ground truth), or --calibration-data
DIR. The validation queries' 10 nearest references are pooled and sorted by score; the threshold is the score
where recall is highest with precision ≥ 90 % (see isc_research/index/calibrate.py). It is stored in INDEX/index.json.
Unreadable images are listed on stderr and counted, never dropped silently. Errors: exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

PROG = "isc-search"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument(
        "--threads",
        default="auto",
        help="torch intra-op threads: auto (CPU cores minus --workers, as isc-eval) or N; on a busy "
        "shared machine 1 can be many times faster",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and no per-query table (query: results only in --csv/--json); the summary",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="a new index of a folder of images")
    b.add_argument("index", type=Path, help="folder to write the index to (new or empty)")
    b.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    b.add_argument(
        "--ckpt-path",
        "--checkpoint",
        dest="checkpoint",
        required=True,
        help="an isc-train checkpoint (.ckpt), as ckpt_path= of isc-eval (--checkpoint: the same)",
    )
    b.add_argument("--size", type=int, default=None, help="image side (default: the checkpoint's data.eval_size)")
    b.add_argument(
        "--calibration-data",
        default=None,
        help="DISC-layout folder with ground truth to calibrate on (default: the checkpoint's own)",
    )
    b.add_argument("--target-precision", type=float, default=0.9, help="precision of the threshold (default 0.9)")
    b.add_argument("--threshold", type=float, default=None, help="set the copy threshold by hand (no calibration)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index in INDEX")
    _common(b)
    a = sub.add_parser("add", help="add new or modified images to an index (existing vectors are kept)")
    a.add_argument("index", type=Path)
    a.add_argument("images", nargs="+", help="image files and/or folders")
    a.add_argument(
        "--ckpt-path",
        "--checkpoint",
        dest="checkpoint",
        default=None,
        help="default: the checkpoint recorded in the index",
    )
    _common(a)
    q = sub.add_parser("query", help="ranked matches of query images")
    q.add_argument("index", type=Path)
    q.add_argument("queries", nargs="+", help="query image files and/or folders")
    q.add_argument("--top-k", type=int, default=5, help="matches per query (default 5)")
    q.add_argument("--threshold", type=float, default=None, help="override the index's copy threshold")
    q.add_argument(
        "--ckpt-path",
        "--checkpoint",
        dest="checkpoint",
        default=None,
        help="default: the checkpoint recorded in the index",
    )
    q.add_argument("--csv", type=Path, default=None, help="write query,rank,match,score,copy rows here")
    q.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    _common(q)
    i = sub.add_parser("info", help="what an index holds")
    i.add_argument("index", type=Path)
    return p


def _set_threads(setting: str, workers: int) -> None:
    from isc_research.scaling import configure_threads

    if setting != "auto" and not (setting.isdigit() and int(setting) >= 1):
        raise ValueError(f"--threads must be auto or a positive integer, got {setting!r}")
    configure_threads(setting, workers)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _report_unreadable(failed: list, what: str) -> None:
    for path, reason in failed:
        _say(f"{PROG}: unreadable {what} {path}: {reason}")


def _embedder(checkpoint: str, args: argparse.Namespace, settings: dict | None = None):
    from isc_research.index.embed import Embedder

    kwargs = (
        {}
        if settings is None
        else {
            "size": settings["size"],
            "resize": settings["resize"],
            "scales": settings["scales"],
            "flip": settings["flip"],
        }
    )
    if settings is None and getattr(args, "size", None):
        kwargs["size"] = args.size
    return Embedder(checkpoint, device=args.device, **kwargs)


def _add_summary(report, seconds: float) -> str:
    c = report.counts()
    n = c["added"] + c["updated"] + c["failed"]
    rate = f" ({n / seconds:.1f} img/s)" if n and seconds > 0 else ""
    return (
        f"indexed {c['added']} new and {c['updated']} modified images in {seconds:.1f} s{rate}; "
        f"skipped {c['duplicates']} already indexed (same path and modification time); "
        f"{c['failed']} unreadable (listed above, not indexed); "
        f"{c['ignored']} files without an image suffix ignored"
    )


def _build(args: argparse.Namespace) -> int:
    from isc_research.index.calibrate import Calibration, calibrate, validation_set
    from isc_research.index.store import SearchIndex

    _finite_threshold(args.threshold)
    started = time.perf_counter()
    if args.threshold is None and not 0 < args.target_precision <= 1:
        raise ValueError(f"--target-precision must be in (0, 1], got {args.target_precision}")
    SearchIndex.check_target(args.index, args.overwrite)  # refuse before any work
    embedder = _embedder(args.checkpoint, args)
    if args.threshold is not None:
        calibration = Calibration.manual(args.threshold)
    else:
        data = validation_set(embedder.train_config, args.calibration_data)
        calibration = calibrate(
            embedder,
            data,
            target_precision=args.target_precision,
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=not args.quiet,
        )
        for line in calibration.unreadable:
            _say(f"{PROG}: unreadable calibration image {line}")
        if calibration.threshold is None:
            _say(
                f"{PROG}: warning: precision never reaches {args.target_precision} on {calibration.data}: no copy "
                "threshold, nothing will be flagged (set one with --threshold, or train the model longer)"
            )
        else:
            _say(
                f"threshold {calibration.threshold:.4f} (similarity): precision {calibration.precision:.3f}, recall "
                f"{calibration.recall:.3f} on {calibration.n_queries} validation queries × "
                f"{calibration.n_references} references of {calibration.data} (µAP {calibration.uAP:.3f})"
            )
    index = SearchIndex.create(args.index, embedder.settings(), calibration, overwrite=args.overwrite)
    return _add_images(index, embedder, args, before=None, started=started)


def _add_images(index, embedder, args: argparse.Namespace, before: int | None, started: float | None = None) -> int:
    """Embed and add args.images, report unreadable files on stderr, and end with the summary: the index size
    (`before` → now), what was embedded, the threshold and the index's absolute path."""
    from isc_research.summary import print_summary

    command_started = time.perf_counter() if started is None else started
    add_started = time.perf_counter()
    report = index.add(
        embedder, args.images, batch_size=args.batch_size, num_workers=args.workers, progress=not args.quiet
    )
    _report_unreadable(report.failed, "image")
    size = f"{len(index)} images" if before is None else f"{before} → {len(index)} images"
    threshold = "none (nothing flagged)" if index.threshold is None else f"similarity {index.threshold:.4f}"
    print_summary(
        f"{PROG} {args.command}",
        time.perf_counter() - command_started,
        [("index", size), ("added", _add_summary(report, time.perf_counter() - add_started)), ("threshold", threshold)],
        [("folder", index.directory)],
    )
    return 0


def _add(args: argparse.Namespace) -> int:
    from isc_research.index.store import SearchIndex

    index = SearchIndex.open(args.index)
    embedder = _embedder(args.checkpoint or index.meta["model"]["checkpoint"], args, index.meta["model"])
    return _add_images(index, embedder, args, before=len(index))


def _query(args: argparse.Namespace) -> int:
    from isc_research.index.embed import list_images
    from isc_research.index.store import SearchIndex

    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    _finite_threshold(args.threshold)
    index = SearchIndex.open(args.index)
    embedder = _embedder(args.checkpoint or index.meta["model"]["checkpoint"], args, index.meta["model"])
    index.check_embedder(embedder)
    threshold = index.threshold if args.threshold is None else args.threshold
    paths, ignored = list_images(args.queries)
    started = time.perf_counter()
    embedded = embedder.embed_files(
        paths, batch_size=args.batch_size, num_workers=args.workers, progress=not args.quiet, desc="queries"
    )
    matches = _fresh_matches(index, embedder, embedded.vectors, args)
    seconds = time.perf_counter() - started
    _report_unreadable(embedded.failed, "query")
    from isc_research.summary import print_summary

    results = [
        {
            "query": str(q),
            "matches": [
                {
                    "rank": r,
                    "path": path,
                    "score": round(score, 6),
                    "copy": threshold is not None and score >= threshold,
                }
                for r, (path, score) in enumerate(found, start=1)
            ],
        }
        for q, found in zip(embedded.paths, matches)
    ]
    if not args.quiet:
        print(_table(results))
    n_copies = sum(any(m["copy"] for m in res["matches"]) for res in results)
    t = "none (nothing flagged)" if threshold is None else f"{threshold:.4f} (similarity)"
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["query", "rank", "match", "score", "copy"])
            for res in results:
                w.writerows([res["query"], m["rank"], m["path"], m["score"], int(m["copy"])] for m in res["matches"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "index": str(index.directory),
                    "threshold": threshold,
                    "calibration": index.meta["calibration"],
                    "results": results,
                    "unreadable": [{"path": str(p), "reason": r} for p, r in embedded.failed],
                    "ignored": [str(p) for p in ignored],
                },
                indent=2,
            )
        )
    # stdout holds the table (the data): the summary goes to stderr
    print_summary(
        f"{PROG} query",
        time.perf_counter() - started,
        [
            (
                "queries",
                f"{len(results)} in {seconds:.2f} s ({1000 * seconds / max(1, len(paths)):.1f} ms each) against "
                f"{len(index)} images; {len(embedded.failed)} unreadable; {len(ignored)} files without an image "
                "suffix ignored",
            ),
            ("copies", f"copy threshold {t}: {n_copies} queries with a copy"),
        ],
        [("index", index.directory), ("csv", args.csv), ("json", args.json)],
        stream=sys.stderr,
    )
    return 0


def _fresh_matches(index, embedder, vectors, args: argparse.Namespace) -> list:
    """The index's matches, after embedding again the matched images whose file changed since they were indexed
    (and dropping those whose file is gone), so that no stale score is reported."""
    for _ in range(3):
        matches = index.search(vectors, args.top_k)
        report, gone = index.refresh(
            embedder,
            [path for found in matches for path, _ in found],
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=False,
        )
        if report.updated or gone:
            _say(
                f"{PROG}: {len(report.updated)} matched images changed since they were indexed and were embedded "
                f"again; {len(gone)} whose file is gone were removed from the index"
            )
            _report_unreadable(report.failed, "indexed image")
        else:
            return matches
    return index.search(vectors, args.top_k)


def _finite_threshold(value: float | None) -> None:
    import math

    if value is not None and not math.isfinite(value):
        raise ValueError(f"--threshold must be a finite number, got {value}")


def _table(results: list[dict]) -> str:
    lines = [f"{'rank':>4}  {'score':>7}  {'copy':<4}  match"]
    for res in results:
        lines.append(f"query {res['query']}")
        lines += [
            f"{m['rank']:>4}  {m['score']:>7.4f}  {'COPY' if m['copy'] else '':<4}  {m['path']}" for m in res["matches"]
        ]
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    from isc_research.index.store import SearchIndex

    index = SearchIndex.open(args.index)
    print(
        json.dumps(
            {
                "index": str(index.directory),
                "images": len(index),
                **{k: index.meta[k] for k in ("created", "updated", "model", "calibration")},
            },
            indent=2,
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``isc-search``; returns the exit status (0 ok, 2 bad input or index)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed usage and the error (or --help)
        return e.code if isinstance(e.code, int) else 2
    if getattr(args, "batch_size", 1) < 1 or getattr(args, "workers", 0) < 0:
        print(f"{PROG}: error: --batch-size must be >= 1 and --workers >= 0", file=sys.stderr)
        return 2
    command = {"build": _build, "add": _add, "query": _query, "info": _info}[args.command]
    try:
        if args.command != "info":
            _set_threads(args.threads, args.workers)
        return command(args)
    except (ValueError, OSError, RuntimeError, FloatingPointError) as e:  # FloatingPointError: non-finite descriptors
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
