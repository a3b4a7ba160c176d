"""Cost of the descriptor cache's key per image file (isc_research.extract.file_states): a stat (size + mtime) against a
SHA-1 of the file's bytes, next to decoding the image (what an extraction does to every file anyway). The three
arms run in turn in this process, over the same files, best of `--repeats` (the files are in the page cache
after the first pass, so the hash arm is a lower bound: on a cold disk it reads every byte again).

    .venv/bin/python scripts/bench/cache_key.py [--root data/mini_disc_...] [--repeats 5]

Default --root: the mini-DISC that `isc-train` builds (its reference + training + query JPEGs).
Prints JSON: µs per file of each arm and their ratios to decoding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path

from isc_research.data.records import ImageRecord
from isc_research.extract import file_states
from isc_research.images import load_image


def sha1_files(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        h.update(hashlib.sha1(p.read_bytes()).digest())
    return h.hexdigest()


def decode(paths: list[Path]) -> None:
    for p in paths:
        load_image(p, draft_size=256)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    root = args.root
    if root is None:
        from isc_research.data.disc import resolve_root
        from tests.conftest import compose_config

        root = resolve_root(compose_config("train").dataset)
    paths = sorted(root.rglob("*.jpg"))
    records = [ImageRecord(p.stem, "reference", p) for p in paths]
    stat = best_of(lambda: file_states(records), args.repeats)
    content = best_of(lambda: sha1_files(paths), args.repeats)
    decoded = best_of(lambda: decode(paths), max(1, args.repeats // 2))
    per = {k: 1e6 * v / len(paths) for k, v in (("stat", stat), ("sha1", content), ("decode", decoded))}
    print(
        json.dumps(
            {
                "files": len(paths),
                "mean_bytes": round(sum(p.stat().st_size for p in paths) / len(paths)),
                "us_per_file": {k: round(v, 1) for k, v in per.items()},
                "stat_over_decode": round(per["stat"] / per["decode"], 4),
                "sha1_over_decode": round(per["sha1"] / per["decode"], 4),
                "sha1_over_stat": round(per["sha1"] / per["stat"], 1),
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
