#!/usr/bin/env bash
# What scripts/gpu_studies.sh needs on a bare GPU image that cannot reach the network: the CIFAR-10
# archive and the pure-Python packages the simulation imports beyond torch and numpy (tomli for a
# Python older than 3.11, tqdm). gpu_kit/ is git-ignored; carry it with the device call.
set -eu
cd "$(dirname "$0")/.."
KIT=gpu_kit
mkdir -p "$KIT/site" "$KIT/wheels"
cp "${DATA_DIR:-../shared/data}/cifar10/cifar10-jpg.tar.gz" "$KIT/"
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$KIT/wheels" "tomli>=2" "tqdm>=4.60"
for wheel in "$KIT"/wheels/*.whl; do .venv/bin/python -m zipfile -e "$wheel" "$KIT/site"; done
du -sh "$KIT"
