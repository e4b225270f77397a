#!/usr/bin/env bash
# The whole study for one seed on one GPU, then the benchmark and the report, all into OUT_DIR:
#
#   scripts/gpu_study.sh OUT_DIR
#
# Meant for a bare GPU machine that has PyTorch, torchvision, Lightning, torchmetrics, TensorBoard
# and matplotlib but no package index: `make gpu-bundle` first copies the missing pure-Python wheels
# (hydra-core, omegaconf, antlr4, ...) and the offline CIFAR-10 archive into .gpu/, which travels
# with the working tree. Steps: install the wheels into .gpu/pydeps, unpack the data, train the
# ResNet-10 teacher, then the four baselines and four KD students (JOBS at a time on the one GPU:
# small students leave most of it idle), run `python -m kd_lightning.bench`, write the report, and
# record per-run and total wall times in OUT_DIR/timings.json and timings.txt. Every run uses the
# project's default config (its epoch count included); EXTRA adds Hydra overrides to every run.
#
# Environment:
#   DRY_RUN=1      same steps on the CPU with synthetic data, width 8 and one epoch (seconds, for tests)
#   JOBS=8         runs trained at once after the teacher (DRY_RUN: 2)
#   DEPTHS="3 4 5 6"  student depths (fewer make a shorter dry run)
#   SEED=0         training seed of every run
#   EXTRA=""       more Hydra overrides for every run, e.g. "compile=true" or "trainer.max_epochs=20"
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
SEED=${SEED:-0}
EXTRA=${EXTRA:-}
DEPTHS=${DEPTHS:-3 4 5 6}
WHEELS_DIR=${WHEELS_DIR:-.gpu/wheels}
PYDEPS=$(realpath -m "${PYDEPS:-.gpu/pydeps}")
DATA_ARCHIVE=${DATA_ARCHIVE:-.gpu/cifar10-jpeg.tar.gz}
DATA_ROOT=${DATA_ROOT:-data/cifar10-jpeg}
CORES=$(nproc)
mkdir -p "$OUT/logs"
: >"$OUT/logs/runs.tsv"
T0=$(date +%s.%N)
say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/logs/steps.log"; }

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

# ---------------------------------------------------------------- data and sizes
if [[ $DRY_RUN == 1 ]]; then
    JOBS=${JOBS:-2}
    SIZE=(trainer.accelerator=cpu trainer.max_epochs=1 student.width=8 teacher.width=8
          data=synthetic data.synthetic_train=320 data.synthetic_test=64 data.batch_size=64)
    BENCH=(--sizes tiny --device cpu --data-root "$OUT/no-data")
    say "dry run: CPU, synthetic data, width 8, one epoch"
else
    JOBS=${JOBS:-8}
    if [[ ! -d $DATA_ROOT/train ]]; then
        [[ -f $DATA_ARCHIVE ]] || {
            echo "error: no data at $DATA_ROOT and no archive at $DATA_ARCHIVE; run \`make gpu-bundle\` first" >&2
            exit 2
        }
        say "unpacking $DATA_ARCHIVE"
        mkdir -p "$(dirname "$DATA_ROOT")"
        tar xzf "$DATA_ARCHIVE" -C "$(dirname "$DATA_ROOT")"
    fi
    SIZE=(trainer.accelerator=gpu data=offline "data.root=$DATA_ROOT" "data.num_workers=$CORES")
    BENCH=(--data-root "$DATA_ROOT")
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
fi
# shellcheck disable=SC2206  # EXTRA is a list of overrides split on spaces, as on a command line
COMMON=("paths.root=$OUT/study" "seed=$SEED" trainer.enable_progress_bar=false "${SIZE[@]}" $EXTRA)

run() {  # NAME OVERRIDE...: one training run; its log, exit code and times go to OUT/logs
    local name=$1 start rc=0
    shift
    start=$(date +%s.%N)
    "$PYTHON" -m kd_lightning.train "${COMMON[@]}" "$@" >"$OUT/logs/$name.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$start" "$(date +%s.%N)" >>"$OUT/logs/runs.tsv"
    [[ $rc == 0 ]] || say "$name failed (exit $rc); see $OUT/logs/$name.log"
}

# ---------------------------------------------------------------- the study
say "teacher: ResNet-10"
run teacher mode=teacher
say "students: depths $DEPTHS, baseline and KD, $JOBS at a time"
export OMP_NUM_THREADS=$(( CORES / JOBS > 0 ? CORES / JOBS : 1 ))  # the runs share the CPU cores too
for depth in $DEPTHS; do
    for mode in baseline kd; do
        while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
        run "$mode-r$depth" "mode=$mode" "student.depth=$depth" &
    done
done
wait
unset OMP_NUM_THREADS
STUDY_END=$(date +%s.%N)

# ---------------------------------------------------------------- benchmark and report
say "benchmark"
BENCH_RC=0
"$PYTHON" -m kd_lightning.bench --out "$OUT/bench.json" "${BENCH[@]}" >"$OUT/logs/bench.log" 2>&1 || BENCH_RC=$?
grep -A12 '^kd_lightning.bench on' "$OUT/logs/bench.log" >"$OUT/bench.txt" || true
REPORT_RC=0
say "report"
"$PYTHON" -m kd_lightning.report "$OUT/study/runs" --out "$OUT/report" >"$OUT/logs/report.log" 2>&1 || REPORT_RC=$?

# ---------------------------------------------------------------- timings
"$PYTHON" -m kd_lightning.timings "$OUT" "$T0" "$STUDY_END" "$(date +%s.%N)" "$JOBS" "$DRY_RUN"

FAILED=$(awk -F'\t' '$2 != 0' "$OUT/logs/runs.tsv" | wc -l)
say "done in $(( $(date +%s) - ${T0%.*} )) s: $FAILED failed runs, bench exit $BENCH_RC, report exit $REPORT_RC"
[[ $FAILED == 0 && $BENCH_RC == 0 && $REPORT_RC == 0 ]]
