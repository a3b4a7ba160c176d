#!/usr/bin/env bash
# Wheels that scripts/bench/gpu.sh installs on a GPU machine without internet (its image lacks these packages:
# Hydra and OmegaConf for the configs, augly + iopath + python-magic for isc_research.augment, faiss-cpu for kNN and
# isc-search). Run here, where a package registry is reachable; the folder is git-ignored and is carried to
# the GPU machine with the working tree (carry: 64 MiB in all; the wheels take 43 MiB). With MINI_DISC=DIR it also
# copies that mini-DISC's query/ and reference/ folders (15 MiB for the default one) for the keep-aspect figure.
#
#   [MINI_DISC=data/mini_disc/r600-t1500-q400-m35-s256-seed0-v3] scripts/bench/fetch_wheels.sh [FOLDER]
#   (default bench-carry/: wheels in FOLDER/wheels, the mini-DISC in FOLDER/mini_disc; PYTHON_VERSION=3.12)
set -euo pipefail
carry=${1:-bench-carry}
dest=$carry/wheels
py=${PYTHON_VERSION:-3.12}
pip=${PIP:-pip}
mkdir -p "$dest"
# the versions of the project's tested environment
$pip download --no-deps --only-binary=:all: --python-version "$py" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$dest" \
    hydra-core==1.3.8 omegaconf==2.3.1 augly==1.0.0 portalocker==4.4.2 python-magic==0.4.27 regex faiss-cpu==1.15.1
# antlr4-python3-runtime 4.9.3 (pinned by omegaconf 2.3) and iopath 0.1.10 exist only as sdists: build their
# pure-Python wheels
for sdist in antlr4-python3-runtime==4.9.3 iopath==0.1.10; do
    $pip wheel --no-deps -w "$dest" "$sdist"
done
if [ -n "${MINI_DISC:-}" ]; then
    mkdir -p "$carry/mini_disc"
    cp -r "$MINI_DISC/query" "$MINI_DISC/reference" "$carry/mini_disc/"
fi
du -sh "$carry"/*
ls -1 "$dest"
