"""``isc-score``: score an ISC2021 submission (predictions CSV or descriptor HDF5) against a ground truth.

Prints one JSON object (µAP, recall@P90, recall@rank1/10, ...) to stdout; bad input gives a one-line
``isc-score: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from isc_research.formats import (
    MAX_DIM,
    MAX_ROWS,
    FormatError,
    read_descriptor_submission,
    read_ground_truth,
    read_predictions,
)
from isc_research.metric import GroundTruth, Predictions, evaluate
from isc_research.summary import Timer, fmt, print_summary, similarity

PROG = "isc-score"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Score ISC2021 predictions or descriptors against a ground-truth CSV (exact µAP).",
    )
    p.add_argument("--gt", required=True, help="ground-truth CSV (query_id,reference_id; empty = distractor)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="matching-track CSV (query_id,reference_id,score)")
    src.add_argument("--descriptors", help="descriptor-track HDF5 (query, reference, query_ids, reference_ids)")
    p.add_argument(
        "--knn", type=int, metavar="K", help="descriptors: K candidates per query instead of the global rule"
    )
    p.add_argument(
        "--max-results", type=int, metavar="N", help="descriptors: global candidate count (default 10 × #GT queries)"
    )
    p.add_argument(
        "--metric", choices=("l2", "ip"), default="l2", help="descriptors: squared L2 (default) or inner product"
    )
    p.add_argument("--max-dim", type=int, default=MAX_DIM, help=f"descriptors: dimension limit (default {MAX_DIM})")
    p.add_argument("--max-rows", type=int, default=MAX_ROWS, help=f"predictions: row limit (default {MAX_ROWS})")
    return p


def _descriptor_predictions(gt: GroundTruth, args: argparse.Namespace) -> Predictions:
    from isc_research.search import global_candidates, knn_candidates  # faiss only when needed

    sub = read_descriptor_submission(args.descriptors, max_dim=args.max_dim)
    wanted = np.array(gt.query_ids, dtype=str)
    missing = wanted[~np.isin(wanted, sub.query_ids)]
    if len(missing):
        raise FormatError(
            args.descriptors,
            f"{len(missing)} ground-truth query id(s) have no descriptor, e.g. {str(missing[0])!r}; "
            "submit a descriptor for every query of the ground truth",
        )
    keep = np.isin(sub.query_ids, wanted)  # RECIPES §1.4 step 1: only the GT's queries
    args_common = (sub.query[keep], sub.reference, sub.query_ids[keep], sub.reference_ids)
    if args.knn is not None:
        return knn_candidates(*args_common, k=args.knn, metric=args.metric)
    return global_candidates(*args_common, num_results=args.max_results, metric=args.metric)


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.predictions is not None and (args.knn is not None or args.max_results is not None):
        parser.error("--knn and --max-results apply to --descriptors only")
    if args.knn is not None and args.max_results is not None:
        parser.error("use either --knn or --max-results, not both")
    for name in ("knn", "max_results", "max_dim", "max_rows"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def _score(args: argparse.Namespace) -> dict:
    gt = read_ground_truth(args.gt)
    if gt.n_pairs == 0:
        raise FormatError(args.gt, "the ground truth has no matched pair (all references empty); µAP is undefined")
    source = args.predictions if args.predictions is not None else args.descriptors
    try:
        if args.predictions is not None:
            preds = read_predictions(args.predictions, max_rows=args.max_rows)
        else:
            preds = _descriptor_predictions(gt, args)
        return evaluate(gt, preds).to_dict()
    except FormatError:
        raise
    except (ValueError, OSError) as e:
        raise FormatError(source, f"{e} (ground truth: {args.gt})") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``isc-score``; returns the process exit code (0 ok, 2 bad input)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        _check_args(parser, args)
    except SystemExit as e:  # argparse already printed usage and the error (or --help)
        return e.code if isinstance(e.code, int) else 2
    timer = Timer()
    try:
        result = _score(args)
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(result, indent=2))
        sys.stdout.flush()
    except BrokenPipeError:  # `isc-score ... | head -1`: the reader has gone; exit quietly, as a C tool would
        _silence_stdout()
        return 128 + 13  # 128 + SIGPIPE
    # stdout is the JSON (the data): the summary goes to stderr
    if args.descriptors is not None:  # scored by −squared L2: shown as a similarity, as isc-eval and isc-search do
        threshold = fmt(similarity(result["threshold_at_p90"], "l2")) + " (similarity)"
    else:
        threshold = fmt(result["threshold_at_p90"]) + " (the file's scores)"
    print_summary(
        PROG,
        timer.seconds,
        [
            ("µAP", f"{fmt(result['uAP'])} ({result['n_gt_pairs']} true pairs, {result['n_predictions']} predictions)"),
            ("recall", f"{fmt(result['recall_at_p90'])} at 90 % precision, {fmt(result['recall_at_rank1'])} at rank 1"),
            ("threshold", f"{threshold} at 90 % precision"),
        ],
        [("scored", args.predictions or args.descriptors), ("ground truth", args.gt)],
        stream=sys.stderr,
    )
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not fail again (Python docs, 'Note on
    SIGPIPE')."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
