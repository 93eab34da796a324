#!/bin/sh
# Tensil's own compiler (the tensilai/tensil docker image) on an ONNX model, as PEFSL runs it:
#   scripts/tensil_docker_compile.sh MODEL.onnx ARCH.tarch OUT_DIR
# Needs a running docker engine and the image (docker pull tensilai/tensil); says which is
# missing otherwise (exit 2).
set -eu
if [ $# -ne 3 ]; then
    echo "usage: $0 MODEL.onnx ARCH.tarch OUT_DIR" >&2
    exit 2
fi
model=$1 arch=$2 out=$3
if ! command -v docker >/dev/null 2>&1; then
    echo "make compile TENSIL=docker: docker is not installed; install Docker Engine" \
         "(https://docs.docker.com/engine/install/) and 'docker pull tensilai/tensil'," \
         "or use 'make compile' (the project's own compiler, no docker needed)" >&2
    exit 2
fi
if ! docker info >/dev/null 2>&1; then
    echo "make compile TENSIL=docker: the docker client is here but no docker engine answers" \
         "(start the daemon: 'sudo systemctl start docker'), or use 'make compile'" >&2
    exit 2
fi
if ! docker image inspect tensilai/tensil >/dev/null 2>&1; then
    echo "make compile TENSIL=docker: the tensilai/tensil image is missing;" \
         "run 'docker pull tensilai/tensil' (about 1 GB), or use 'make compile'" >&2
    exit 2
fi
mkdir -p "$out"
# PEFSL's command line (onnx_to_tensil.py): output node "Output", summaries on
docker run --rm -u "$(id -u):$(id -g)" -v "$(pwd):/work" -w /work tensilai/tensil \
    tensil compile -a "$arch" -m "$model" -o Output -t "$out" -s true \
    --layers-summary true --scheduler-summary true --instructions-summary true \
    | tee "$out/$(basename "$model" .onnx)_$(basename "$arch" .tarch).txt"
