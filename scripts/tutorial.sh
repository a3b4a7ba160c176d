#!/usr/bin/env bash
# The tutorial (docs/tutorial.md: "from the first run to the matching track"), command by command, in order,
# in the repository (TUTORIAL_TINY=1: in the current folder, ./outputs and ./data there). Each command's whole
# output goes to outputs/tutorial/<time>/<step>.log; the console shows each command and the summary it ended
# with; outputs/tutorial/<time>/numbers.md collects them with the date and the commit. The tutorial page's numbers
# come from one run of this script on the landed code.
#
#   bash scripts/tutorial.sh             the page's run: make train (creates .venv), make test, every step
#                                        at full size (about 45 min on the 2-core CPU machine)
#   TUTORIAL_TINY=1 bash scripts/tutorial.sh
#                                        every command on a tiny mini-DISC, 1 epoch (a few minutes; what
#                                        tests/test_tutorial.py runs: a command that breaks fails CI)
#   TUTORIAL_SKIP_TESTS=1                leave out `make test` (the full run only)
#
# Steps 3 (DISC21) and 6 (SLURM) need what a single machine lacks and are not run, as the page says.
# `~/my_photos` (step 2) is a folder of scikit-image's sample photos made under outputs/tutorial/<time>/home,
# with HOME pointed there for that one command, so the command runs as written without touching your home.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# the full run works in the repository (make train writes there); the tiny one in the current folder
[ -n "${TUTORIAL_TINY:-}" ] || cd "$REPO"
STAMP=$(date -u +%Y-%m-%d_%H-%M-%S)
OUT=outputs/tutorial/$STAMP
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [ -n "${TUTORIAL_TINY:-}" ]; then
  # what every Hydra command gets appended: a tiny mini-DISC (120 training images: the ablation's push-away
  # needs 100 neighbours), 48 px, a tiny backbone (debug=smoke), one epoch scored after it (a command-line
  # trainer.max_epochs given after the README's wins over it), no data worker processes, one torch thread
  TINY_DATA="dataset.build.n_references=24 dataset.build.n_training=120 dataset.build.n_queries=16 dataset.build.image_size=96"
  TINY_TRAIN="debug=smoke $TINY_DATA trainer.max_epochs=1 trainer.check_val_every_n_epoch=1 torch_threads=1"
  TINY_EVAL="$TINY_DATA eval.num_workers=0 torch_threads=1"
  TINY_SWEEP="hydra.sweeper.sampler.n_startup_trials=2"
else
  TINY_DATA="" TINY_TRAIN="" TINY_EVAL="" TINY_SWEEP=""
fi

STEPS=()
run() {  # run NAME COMMAND...: echo it, keep its output in $OUT/NAME.log, show the summary it ended with
  local name=$1
  shift
  echo "\$ $*"
  local started=$SECONDS
  if ! "$@" >"$OUT/$name.log" 2>&1; then
    tail -n 40 "$OUT/$name.log"
    echo "tutorial: step '$name' failed after $((SECONDS - started)) s: $*  (whole output: $OUT/$name.log)" >&2
    exit 1
  fi
  # the summary block(s) every isc command ends with (a sweep: each job's, then the table and the sweep's)
  # (make test: pytest's last line)
  awk '/^\| job /{t=1} t||/ finished in /{p=1} p{print; next} /[0-9]+ passed/' "$OUT/$name.log" | tee "$OUT/$name.summary"
  echo "  ($((SECONDS - started)) s)"
  STEPS+=("$name")
}

echo "tutorial ($([ -n "${TUTORIAL_TINY:-}" ] && echo tiny || echo full)) at commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'); logs in $OUT"

# 1. Quickstart
if [ -n "${TUTORIAL_TINY:-}" ]; then
  run train isc-train $TINY_TRAIN     # make train = .venv/bin/isc-train $(ARGS)
else
  run train make -C "$REPO" train
  export PATH="$REPO/.venv/bin:$PATH"    # source .venv/bin/activate
  [ -n "${TUTORIAL_SKIP_TESTS:-}" ] || run test make -C "$REPO" test
fi
RUN=$(readlink -f outputs/train/latest)
CKPT=$RUN/checkpoints/last.ckpt
MINI=data/mini_disc/r600-t1500-q400-m35-s256-seed0-v3
if [ -n "${TUTORIAL_TINY:-}" ]; then MINI=data/mini_disc/r24-t120-q16-m35-s96-seed0-v3; fi
[ -z "${ISC_DATA_DIR:-}" ] || MINI=$ISC_DATA_DIR/${MINI#data/}

# 2. Your own images
run search-build isc-search build outputs/search/my-index $MINI/reference --ckpt-path $CKPT --overwrite
run search-query isc-search query outputs/search/my-index $MINI/query --top-k 3 --csv outputs/search/matches.csv --quiet
mkdir -p "$OUT/home/my_photos"
"$(dirname "$(command -v isc-train)")/python" - "$OUT/home/my_photos" <<'EOF'
import shutil, sys
from pathlib import Path
import skimage
# scikit-image's bundled sample photos (the README's "26 sample files"); multi-page/GIF files left out
for p in sorted((Path(skimage.__file__).parent / "data").iterdir()):
    if p.suffix.lower() in (".png", ".jpg"):
        shutil.copy(p, sys.argv[1])
EOF
HOME_BEFORE=$HOME
export MPLCONFIGDIR=${MPLCONFIGDIR:-$HOME/.config/matplotlib}
HOME=$OUT/home
run my-photos isc-train dataset.build.source_dir=~/my_photos trainer.max_epochs=4 $TINY_TRAIN
HOME=$HOME_BEFORE
run export isc-export $CKPT

# 4. Reproduce a recipe
run recipe-smoke isc-train experiment=lyakaap_stage1 debug=smoke $TINY_DATA
run cpu-visionforce isc-train experiment=cpu_visionforce $TINY_TRAIN
run cpu-arcface isc-train experiment=cpu_arcface $TINY_TRAIN

# 5. Sweeps
run sweep isc-train -m loss.temperature=0.05,0.1 trainer.max_epochs=8 $TINY_TRAIN
run optuna isc-train hparams_search=uap_optuna hydra.sweeper.n_trials=2 trainer.max_epochs=4 $TINY_TRAIN $TINY_SWEEP

# 7. The matching track
run match isc-match ckpt_path=$CKPT $TINY_EVAL

# 8. Post-processing ablations, and the mistakes
run ablation isc-eval ckpt_path=$CKPT eval_grid=ablation $TINY_EVAL

{
  echo "# Tutorial numbers"
  echo
  echo "$([ -n "${TUTORIAL_TINY:-}" ] && echo "TINY run (not the README's numbers)" || echo "Full run"), commit" \
       "$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs"
  for name in "${STEPS[@]}"; do
    printf '\n## %s\n\n```\n' "$name"
    cat "$OUT/$name.summary"
    printf '```\n'
  done
} >"$OUT/numbers.md"
echo
echo "tutorial finished in $SECONDS s: every step's summary in $OUT/numbers.md"
