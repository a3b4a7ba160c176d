#!/usr/bin/env bash
# The GPU figures of the README's "Performance" table, in one go (about 5 minutes on one H200):
#   bf16 training throughput of two recipe backbones, isc's Lightning module against a raw PyTorch loop
#   (SSCD's ResNet-50 at 224, RECIPES §8; lyakaap's EfficientNetV2-M at 256, stage 1, RECIPES §2.2);
#   descriptor extraction images/s, whole pipeline against the model alone (SSCD: short side 288, bf16;
#   lyakaap: square 512, fp16 autocast, RECIPES §2.4); loss forward+backward cost at the recipe sizes.
#
#   scripts/bench/gpu.sh [OUT_DIR]        (JSON files in OUT_DIR, default bench-gpu/; PYTHON=... to choose)
set -uo pipefail   # one failing benchmark does not stop the others; the exit status says so
failed=0
out=${1:-bench-gpu}
python=${PYTHON:-python3}
mkdir -p "$out"
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

run() {  # name, script, arguments...
    local name=$1 script=$2; shift 2
    echo "== $name"
    "$python" "scripts/bench/$script" "$@" > "$out/$name.json" || { failed=1; echo "!! $name failed"; return; }
    "$python" -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: v for k, v in d.items() if k.endswith(('median', 'per_s', 'over_model'))})" "$out/$name.json" 2>/dev/null || cat "$out/$name.json"
}

run train_resnet50_224_bf16 train_step.py --device cuda --precision bf16 --channels-last \
    --backbone resnet50 --size 224 --batch 128 --steps 20 --warmup 5 --repeats 3
run train_effnetv2m_256_bf16 train_step.py --device cuda --precision bf16 --channels-last \
    --backbone tf_efficientnetv2_m --size 256 --batch 128 --steps 20 --warmup 5 --repeats 3
run extract_resnet50_288_bf16 extract.py --device cuda --precision bf16 --channels-last \
    --backbone resnet50 --embedding-dim 512 --size 288 --resize keep_aspect --images 2048 --batch 128 --workers "$workers"
run extract_effnetv2m_512_fp16 extract.py --device cuda --precision 16 --channels-last \
    --backbone tf_efficientnetv2_m --size 512 --images 2048 --batch 128 --workers "$workers"
echo "== losses"
"$python" scripts/bench/losses.py --device cuda --repeats 10 | tee "$out/losses_cuda.json" || failed=1
exit $failed
