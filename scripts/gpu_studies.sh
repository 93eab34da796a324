#!/usr/bin/env bash
# The GPU half of the seeds' studies, on a borrowed GPU machine (one call of the device tool):
# make bench-sim's CIFAR section, then as many whole runs of a study as fit in BUDGET seconds,
# several at once on the one GPU. Each finished run's logs land in docs/studies/<study>/runs/
# and, packed, in $OUT; back on the workstation, unpack them in the repository and write the
# table with `python -m training.fl.study <study> --table-only`, then commit (a study measured
# over several sessions is completed run by run: stored runs are never run again).
#
#     scripts/gpu_kit.sh                      # here, once: gpu_kit/ (data, pure-Python packages)
#     STUDY=flocora_table7 SEEDS=1 JOBS=5 BUDGET=420 scripts/gpu_studies.sh     # there ($OUT set)
#
# STUDY, ONLY (comma-separated variant labels), SEEDS, JOBS, BUDGET (seconds for the studies),
# BENCH=0 to skip the engine benchmark, PYTHON (default python3: the GPU image's, with torch).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_out}
mkdir -p "$OUT"
STUDY=${STUDY:-flocora_table7}
SEEDS=${SEEDS:-1}
JOBS=${JOBS:-5}
BUDGET=${BUDGET:-420}
KIT=gpu_kit
PY=${PYTHON:-python3}
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/session.txt"; }

[ -d "$KIT" ] || { echo "no $KIT/: run scripts/gpu_kit.sh on the workstation and carry gpu_kit" >&2; exit 2; }
export PYTHONPATH="$PWD:$PWD/$KIT/site${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p ../shared/data/cifar10
[ -f ../shared/data/cifar10/cifar10-jpg.tar.gz ] || cp "$KIT/cifar10-jpg.tar.gz" ../shared/data/cifar10/
log "$("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1)"
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader >> "$OUT/session.txt" 2>&1

if [ "${BENCH:-1}" = 1 ]; then
    log "bench-sim (cifar, 3 rounds per engine)"
    timeout 240 "$PY" -m benchmarks.sim --only cifar --rounds 3 > "$OUT/bench_sim.txt" 2>&1
    log "bench-sim exit $?: $(tail -1 "$OUT/bench_sim.txt")"
fi

only=()
IFS=',' read -r -a labels <<< "${ONLY:-}"
for label in "${labels[@]}"; do [ -n "$label" ] && only+=(--only "$label"); done
log "study $STUDY, seeds $SEEDS, jobs $JOBS, budget $BUDGET s ${ONLY:+(only $ONLY)}"
timeout -s TERM "$BUDGET" "$PY" -m training.fl.study "$STUDY" --seeds "$SEEDS" --jobs "$JOBS" --quiet \
    --runs-only "${only[@]}" > "$OUT/study_$STUDY.txt" 2>&1
log "study exit $? (124: the budget ran out; the runs finished by then are kept)"
tar czf "$OUT/studies_runs.tgz" docs/studies/*/runs 2>/dev/null
log "packed $(tar tzf "$OUT/studies_runs.tgz" 2>/dev/null | grep -c summary.json) finished runs into studies_runs.tgz"
