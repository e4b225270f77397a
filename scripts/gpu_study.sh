#!/usr/bin/env bash
# The three-seed study on one GPU, the benchmark and the report, in one command, all into OUT_DIR:
#
#   scripts/gpu_study.sh OUT_DIR
#
# Meant for a bare GPU machine that has PyTorch, torchvision, Lightning, torchmetrics, TensorBoard
# and matplotlib but no package index: `make gpu-bundle` first copies the missing pure-Python wheels
# (hydra-core, omegaconf, antlr4, ...) and the offline CIFAR-10 archive into .gpu/, which travels
# with the working tree. This script does what must happen in a shell: install the wheels into
# .gpu/pydeps, unpack the data, run `python -m kd_lightning.bench` (with the GPU to itself), start CUDA
# MPS around the study, write the report. The study itself is `python -m kd_lightning.study pool`
# (kd_lightning/study/): which runs, in which order, how many at once, the assistant chain, the
# deadline (TIME_LIMIT after the start, less 30 s for the report; runs still going then get SIGTERM,
# save last.ckpt, and the same command resumes them) and OUT/timings.json and timings.txt, rewritten
# after every finished run and ending with every row of the speed targets.
#
# Environment:
#   DRY_RUN=1        same steps on the CPU with synthetic data, width 8 and one epoch (seconds, for tests)
#   SEEDS="0 1 2"    training seeds; each seed's students distil from that seed's teacher
#   DEPTHS="3 4 5 6" student depths (fewer make a shorter dry run)
#   JOBS             training processes at once; default: the CPU cores, at most 16 (DRY_RUN: 2)
#   TIME_LIMIT       seconds for the whole script; default 480 (DRY_RUN: 900). BENCH_LIMIT=150 caps the benchmark
#   BENCH=1          0 skips the benchmark; BENCH_ARGS adds flags to it (e.g. "--many 0")
#   MPS=auto         auto: CUDA MPS on a GPU run when nvidia-cuda-mps-control exists; 1: also in a dry run; 0: never
#   EXTRA=""         more Hydra overrides for every run, e.g. "compile=default" or "student.reading=stages"
#   METHODS=0        1: also reverse KD, DKD and KD through the ResNet-ASSISTANT KD student for CHAIN_DEPTHS
#                    (defaults: kd_lightning/study/plan.py); one seed fits the time: SEEDS=0 BENCH=0
#   PYTHON=python3, WHEELS_DIR=.gpu/wheels, PYDEPS=.gpu/pydeps, DATA_ARCHIVE=.gpu/cifar10-jpeg.tar.gz,
#   DATA_ROOT=data/cifar10-jpeg
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: scripts/gpu_study.sh OUT_DIR" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
OUT=$(realpath -m "$1")
DRY_RUN=${DRY_RUN:-0}
PYTHON=${PYTHON:-python3}
MPS=${MPS:-auto}
WHEELS_DIR=${WHEELS_DIR:-.gpu/wheels}
PYDEPS=$(realpath -m "${PYDEPS:-.gpu/pydeps}")
DATA_ARCHIVE=${DATA_ARCHIVE:-.gpu/cifar10-jpeg.tar.gz}
DATA_ROOT=${DATA_ROOT:-data/cifar10-jpeg}
T0=$(date +%s.%N)
mkdir -p "$OUT/logs"
say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/logs/steps.log"; }
DRY=()
[[ $DRY_RUN != 1 ]] || DRY=(--dry-run)
summary() {  # rewrite OUT/timings.json and timings.txt from what has finished so far
    "$PYTHON" -m kd_lightning.study summary "$OUT" --t0 "$T0" "${DRY[@]}" "$@" 2>>"$OUT/logs/timings.log" || true
}
stopped() {  # SIGTERM or Ctrl-C outside the study: leave a summary behind
    trap - TERM INT
    summary --quiet
    exit 143
}
trap stopped TERM INT
say "scripts/gpu_study.sh $OUT (DRY_RUN=$DRY_RUN)"

# ---------------------------------------------------------------- dependencies
if compgen -G "$WHEELS_DIR/*.whl" >/dev/null; then
    say "installing $(ls "$WHEELS_DIR"/*.whl | wc -l) wheels from $WHEELS_DIR into $PYDEPS"
    "$PYTHON" -m pip install -q --no-index --no-deps --disable-pip-version-check --target "$PYDEPS" \
        --upgrade "$WHEELS_DIR"/*.whl
fi
export PYTHONPATH="$PYDEPS:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ $DRY_RUN != 1 ]]; then
    "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || {
        echo "error: torch sees no CUDA device; DRY_RUN=1 runs the same steps on the CPU" >&2
        exit 2
    }
fi
"$PYTHON" -c "import hydra, omegaconf, lightning, torchmetrics, torchvision" 2>"$OUT/logs/imports.log" || {
    echo "error: $PYTHON cannot import the project's dependencies (see $OUT/logs/imports.log);" \
        "run \`make gpu-bundle\` where a package index is reachable, so .gpu/wheels travels with the tree" >&2
    exit 2
}

# ---------------------------------------------------------------- data
if [[ $DRY_RUN == 1 ]]; then
    BENCH_FLAGS=(--sizes tiny --device cpu --data-root "$OUT/no-data")
    say "dry run: CPU, synthetic data, width 8, one epoch"
else
    if [[ ! -d $DATA_ROOT/train ]]; then
        [[ -f $DATA_ARCHIVE ]] || {
            echo "error: no data at $DATA_ROOT and no archive at $DATA_ARCHIVE; run \`make gpu-bundle\` first" >&2
            exit 2
        }
        say "unpacking $DATA_ARCHIVE"
        mkdir -p "$(dirname "$DATA_ROOT")"
        tar xzf "$DATA_ARCHIVE" -C "$(dirname "$DATA_ROOT")"
    fi
    BENCH_FLAGS=(--data-root "$DATA_ROOT")
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
fi

# ---------------------------------------------------------------- benchmark, with the GPU to itself
BENCH_RC=0
if [[ ${BENCH:-1} == 1 ]]; then
    say "benchmark (at most ${BENCH_LIMIT:-150} s)"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
    timeout -s TERM "${BENCH_LIMIT:-150}" "$PYTHON" -m kd_lightning.bench --out "$OUT/bench.json" \
        "${BENCH_FLAGS[@]}" ${BENCH_ARGS:-} >"$OUT/logs/bench.log" 2>&1 || BENCH_RC=$?
    grep -A30 '^kd_lightning.bench on' "$OUT/logs/bench.log" | grep -v '^wrote ' >"$OUT/bench.txt" || true
    summary --quiet
fi

# ---------------------------------------------------------------- the study, with CUDA MPS around it
if [[ $MPS == 1 || ($MPS == auto && $DRY_RUN != 1) ]]; then
    "$PYTHON" -m kd_lightning.gpu.mps start "$OUT/logs/mps" | tee -a "$OUT/logs/steps.log" || true
    # shellcheck disable=SC1091
    [[ ! -f $OUT/logs/mps/env.sh ]] || source "$OUT/logs/mps/env.sh"
fi
if [[ $DRY_RUN != 1 ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi dmon -s u -d 5 >"$OUT/logs/gpu-utilisation.txt" 2>&1 &
    DMON=$!
fi
STUDY=(--t0 "$T0" "${DRY[@]}" --data-root "$DATA_ROOT" ${SEEDS:+--seeds "$SEEDS"} ${DEPTHS:+--depths "$DEPTHS"}
       ${JOBS:+--jobs "$JOBS"} ${TIME_LIMIT:+--time-limit "$TIME_LIMIT"} ${ASSISTANT:+--assistant "$ASSISTANT"}
       ${CHAIN_DEPTHS:+--chain-depths "$CHAIN_DEPTHS"})
[[ ${METHODS:-0} != 1 ]] || STUDY+=(--methods)
# the pool forwards SIGTERM to its runs and waits for their checkpoints; so does a kill of this script
"$PYTHON" -m kd_lightning.study pool "$OUT" "${STUDY[@]}" ${EXTRA:-} &
POOL=$!
trap 'kill -TERM "$POOL" 2>/dev/null || true' TERM INT
STUDY_RC=0
wait "$POOL" || STUDY_RC=$?
while kill -0 "$POOL" 2>/dev/null; do wait "$POOL" || STUDY_RC=$?; done  # a signal interrupts the first wait
trap stopped TERM INT
[[ -z ${DMON:-} ]] || kill "$DMON" 2>/dev/null || true
"$PYTHON" -m kd_lightning.gpu.mps stop "$OUT/logs/mps" | tee -a "$OUT/logs/steps.log" || true
if (( STUDY_RC > 128 )); then  # stopped from outside: the runs have saved their checkpoints
    stopped
fi

# ---------------------------------------------------------------- report and the targets
REPORT_RC=0
say "report"
"$PYTHON" -m kd_lightning.report "$OUT/study/runs" --out "$OUT/report" >"$OUT/logs/report.log" 2>&1 || REPORT_RC=$?
summary
say "done in $(( $(date +%s) - ${T0%.*} )) s: study exit $STUDY_RC, bench exit $BENCH_RC, report exit $REPORT_RC"
[[ $STUDY_RC == 0 && $BENCH_RC == 0 && $REPORT_RC == 0 ]] || exit 1
