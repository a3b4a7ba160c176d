#!/usr/bin/env bash
# Matching track on the default mini-DISC: descriptor-only vs SIFT-verified µAP of one checkpoint, with and
# without query grid crops; prints one JSON line per setting (metrics.json of each run under $OUT).
# Usage: scripts/bench/match_track.sh CKPT [OUT=outputs/match_bench] [extra isc-match overrides...]
set -euo pipefail
CKPT=${1:?checkpoint path}; OUT=${2:-outputs/match_bench}; shift $(( $# > 1 ? 2 : 1 ))
PY=${PYTHON:-python}
run() { name=$1; shift; $PY -m isc_research.cli.match ckpt_path="$CKPT" paths.output_dir="$OUT/$name" "$@" "${EXTRA[@]}" 2>"$OUT/$name.log" | sed "s/^/{\"setting\": \"$name\", \"metrics\": /; s/\$/}/"; }
EXTRA=("$@")
mkdir -p "$OUT"
run descriptor_only verifier=none
run sift verifier=sift
run sift_grid verifier=sift query_crops=grid
