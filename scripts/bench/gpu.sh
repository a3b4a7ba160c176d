#!/usr/bin/env bash
# Every GPU figure of the README's "Performance" table in one go, within 6 minutes on one H200 with 16 cores;
# one archive, isc-gpu-bench.tar.gz, under OUT_DIR. Figures (scripts/bench/*.py, each prints JSON):
#   train_*      Lightning module vs raw PyTorch loop, bf16 (SSCD's ResNet-50 at 224, RECIPES §8; lyakaap's
#                EfficientNetV2-M at 256, stage 1, RECIPES §2.2), with host syncs per step in each arm;
#   extract_*    whole extraction vs loader alone vs model alone, loader scaling (W workers vs one), first-batch
#                cost: lyakaap's square 512 fp16 on 20,000 images (RECIPES §2.4); SSCD's short side 288 bf16;
#   search_*     isc_research.search.global_candidates, 50,000 × 1,000,000 × 256 on the GPU vs its GEMM limit;
#   keep_aspect  keep-aspect (exact and bucketed) vs square extraction on the mini-DISC;
#   losses       loss forward+backward at the recipe sizes.
#
# Here (a registry at hand):
#   MINI_DISC=data/mini_disc/r600-t1500-q400-m35-s256-seed0-v3 scripts/bench/fetch_wheels.sh     # → bench-carry/
# On the GPU machine (the working tree + the git-ignored bench-carry/ folder):
#   scripts/bench/gpu.sh [OUT_DIR]          (default $OUT, else bench-gpu/; PYTHON=... to choose the interpreter)
set -uo pipefail   # one failing benchmark does not stop the others; the exit status says so
failed=0
root=${1:-${OUT:-bench-gpu}}
out=$root/isc-gpu-bench
python=${PYTHON:-python3}
carry=${CARRY:-bench-carry}
mkdir -p "$out"
started=$(date +%s)
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1

# -- environment: this machine lacks hydra-core, omegaconf, antlr4, augly, iopath, python-magic and faiss-cpu
site=/tmp/site
if [ -d "$carry/wheels" ]; then
    "$python" -m pip install --quiet --no-index --no-deps --target "$site" "$carry"/wheels/*.whl || failed=1
fi
if ! PYTHONPATH=$site "$python" -c "import magic" 2>/dev/null; then  # python-magic needs libmagic, absent here
    rm -rf "$site/magic" && mkdir -p "$site/magic"
    cat > "$site/magic/__init__.py" <<'STUB'
"""Stand-in for python-magic on a machine without libmagic (scripts/bench/gpu.sh): augly imports it; isc's
image augmentations never call it."""


def _missing(*args, **kwargs):
    raise RuntimeError("libmagic is not installed on this machine (python-magic stand-in of scripts/bench/gpu.sh)")


from_file = from_buffer = from_descriptor = _missing


class Magic:
    def __init__(self, *args, **kwargs):
        _missing()
STUB
fi
export PYTHONPATH=$site:$PWD
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$python" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "cpus $(nproc), workers $workers"; } | tee "$out/machine.txt"

run() {  # name, script, arguments...
    local name=$1 script=$2; shift 2
    local t0=$(date +%s)
    echo "== $name"
    "$python" "scripts/bench/$script" "$@" > "$out/$name.json" 2> "$out/$name.log" \
        || { failed=1; echo "!! $name failed (see $name.log)"; tail -3 "$out/$name.log"; return; }
    "$python" - "$out/$name.json" <<'SHOW'
import json, sys
d = json.load(open(sys.argv[1]))
keys = ("ratio_median", "raw_median", "lightning_median", "host_syncs_per_step", "pipeline_images_per_s",
        "loader_images_per_s", "model_images_per_s", "pipeline_over_bound", "loader_scaling", "first_batch_s",
        "seconds", "keep_bucket_over_square", "keep_exact_over_square", "bucket_vs_exact_cosine")
print({k: d[k] for k in keys + ("identical_across_paths",) if k in d})
for r in d.get("results", []):
    print({k: r[k] for k in ("device", "n_queries", "n_references", "sgemm_gflops", "limit_s", "search_s", "ratio_to_limit")})
SHOW
    echo "   ($(( $(date +%s) - t0 )) s)"
}

run train_resnet50_224_bf16 train_step.py --device cuda --precision bf16 --channels-last \
    --backbone resnet50 --size 224 --batch 128 --steps 20 --warmup 5 --repeats 3 --profile-syncs
run search_same_results score_scale.py --size tiny --device cpu cuda   # identical_across_paths on this GPU
run search_disc21_cuda score_scale.py --size disc21 --device cuda
run extract_effnetv2m_512_fp16 extract.py --device cuda --precision 16 --channels-last \
    --backbone tf_efficientnetv2_m --size 512 --images 20000 --batch 128 --workers "$workers" --repeats 1 \
    --single-worker-images 256
if [ -d "$carry/mini_disc/query" ]; then
    run keep_aspect_resnet50_224 keep_aspect.py --data "$carry/mini_disc" --device cuda --precision bf16 \
        --channels-last --backbone resnet50 --size 224 --batch 128 --workers "$workers" --repeats 2
else
    echo "!! keep_aspect skipped: no $carry/mini_disc (run fetch_wheels.sh with MINI_DISC=...)"; failed=1
fi
run train_effnetv2m_256_bf16 train_step.py --device cuda --precision bf16 --channels-last \
    --backbone tf_efficientnetv2_m --size 256 --batch 128 --steps 20 --warmup 5 --repeats 3
run extract_resnet50_288_bf16 extract.py --device cuda --precision bf16 --channels-last \
    --backbone resnet50 --embedding-dim 512 --size 288 --images 4096 --batch 128 --workers "$workers" \
    --repeats 1 --single-worker-images 256
echo "== losses"
"$python" scripts/bench/losses.py --device cuda --repeats 10 > "$out/losses_cuda.json" 2> "$out/losses_cuda.log" || failed=1

# ---- recipe figures (issue 15): every experiment for 20 steps on this GPU, one row each ----------------------
# About 6 minutes on its own (an estimate, unmeasured), so with the figures above a run needs ~12 minutes: set
# GPU_RECIPES=1 where one command may run that long, or run `python scripts/bench/gpu_recipes.py` as a second call.
if [ -n "${GPU_RECIPES:-}" ]; then
    echo "== gpu_recipes.py"
    "$python" scripts/bench/gpu_recipes.py --out "$out/recipes" > "$out/recipes.log" 2>&1 || failed=1
fi
# ---------------------------------------------------------------------------------------------------------------

echo "total $(( $(date +%s) - started )) s, failed=$failed" | tee "$out/total.txt"
tar -czf "$root/isc-gpu-bench.tar.gz" -C "$root" isc-gpu-bench && echo "archive: $root/isc-gpu-bench.tar.gz"
exit $failed
