#!/usr/bin/env bash
# The three-seed study on one GPU, the benchmark and the report, in one command, all into OUT_DIR:
#
#   scripts/gpu_study.sh OUT_DIR
#
# Meant for a bare GPU machine that has PyTorch, torchvision, Lightning, torchmetrics, TensorBoard
# and matplotlib but no package index: `make gpu-bundle` first copies the missing pure-Python wheels
# (hydra-core, omegaconf, antlr4, ...) and the offline CIFAR-10 archive into .gpu/, which travels
# with the working tree. Steps: install the wheels into .gpu/pydeps, unpack the data, run
# `python -m kd_lightning.bench` (with the GPU to itself), start CUDA MPS if the machine has it, then
# the study: the first seed's teacher alone (its whole-run rate is a target), then the other teachers
# and every seed's students as soon as their teacher exists, JOBS processes at a time; stop MPS if it
# was started here, write the report. OUT/summary.txt, timings.json and timings.txt are rewritten after
# every stage and every finished run, so whatever stops the script leaves them behind; at the end it
# prints every row of the speed targets (met / not met / not measured). Runs still going at the
# deadline (TIME_LIMIT after the start, less a reserve for the report) get SIGTERM: they save
# last.ckpt and the same command resumes them. Every run uses the project's default config (its epoch
# count included); EXTRA adds Hydra overrides to every run.
#
# Environment:
#   DRY_RUN=1        same steps on the CPU with synthetic data, width 8 and one epoch (seconds, for tests)
#   SEEDS="0 1 2"    training seeds; each seed's students distil from that seed's teacher
#   DEPTHS="3 4 5 6" student depths (fewer make a shorter dry run)
#   JOBS=16          training processes at once (DRY_RUN: 2); default: the CPU cores, at most 16
#   TIME_LIMIT=480   seconds for the whole script (DRY_RUN: 900); BENCH_LIMIT=150 caps the benchmark
#   BENCH=1          0 skips the benchmark; BENCH_ARGS adds flags to it (e.g. "--many 0")
#   MPS=auto         auto: CUDA MPS on a GPU run when nvidia-cuda-mps-control exists; 1: also in a dry run; 0: never
#   EXTRA=""         more Hydra overrides for every run, e.g. "compile=default" or "student.reading=stages"
#   METHODS=0        1: per seed also reverse KD and DKD for DEPTHS, and KD through the ResNet-ASSISTANT KD student
#                    for CHAIN_DEPTHS (ASSISTANT=6, CHAIN_DEPTHS="3 4 5"); one seed fits the time: SEEDS=0 BENCH=0
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
SEEDS=${SEEDS:-0 1 2}
EXTRA=${EXTRA:-}
DEPTHS=${DEPTHS:-3 4 5 6}
BENCH=${BENCH:-1}
BENCH_ARGS=${BENCH_ARGS:-}
MPS=${MPS:-auto}
WHEELS_DIR=${WHEELS_DIR:-.gpu/wheels}
PYDEPS=$(realpath -m "${PYDEPS:-.gpu/pydeps}")
DATA_ARCHIVE=${DATA_ARCHIVE:-.gpu/cifar10-jpeg.tar.gz}
DATA_ROOT=${DATA_ROOT:-data/cifar10-jpeg}
CORES=$(nproc)
METHODS=${METHODS:-0}
ASSISTANT=${ASSISTANT:-6}
CHAIN_DEPTHS=${CHAIN_DEPTHS:-3 4 5}
if [[ $METHODS == 1 ]]; then
    PER_SEED=$(( 1 + 4 * $(wc -w <<<"$DEPTHS") + $(wc -w <<<"$CHAIN_DEPTHS") ))
else
    PER_SEED=$(( 1 + 2 * $(wc -w <<<"$DEPTHS") ))
fi
mkdir -p "$OUT/logs"
: >"$OUT/logs/runs.tsv"
rm -f "$OUT/logs/deadline.txt"
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
    TIME_LIMIT=${TIME_LIMIT:-900}
    SIZE=(trainer.accelerator=cpu trainer.max_epochs=1 student.width=8 teacher.width=8
          data=synthetic data.synthetic_train=320 data.synthetic_test=64 data.batch_size=64)
    BENCH_FLAGS=(--sizes tiny --device cpu --data-root "$OUT/no-data")
    say "dry run: CPU, synthetic data, width 8, one epoch"
else
    JOBS=${JOBS:-$(( CORES < 16 ? CORES : 16 ))}
    TIME_LIMIT=${TIME_LIMIT:-480}
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
    BENCH_FLAGS=(--data-root "$DATA_ROOT")
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
fi
BENCH_LIMIT=${BENCH_LIMIT:-150}
DEADLINE=$(( ${T0%.*} + TIME_LIMIT - 30 ))  # 30 s are kept for the report and the summary
# shellcheck disable=SC2206  # EXTRA is a list of overrides split on spaces, as on a command line
COMMON=("paths.root=$OUT/study" trainer.enable_progress_bar=false "${SIZE[@]}" $EXTRA)
summary() {  # rewrite OUT/timings.json, timings.txt and summary.txt from what has finished so far
    "$PYTHON" -m kd_lightning.study.timings "$OUT" "$T0" "$JOBS" "$DRY_RUN" --per-seed "$PER_SEED" --quiet \
        2>>"$OUT/logs/timings.log" && cp "$OUT/timings.txt" "$OUT/summary.txt" || true
}
say "seeds $SEEDS, depths $DEPTHS, $JOBS at a time, $TIME_LIMIT s in all"

# ---------------------------------------------------------------- benchmark, with the GPU to itself
BENCH_RC=0
if [[ $BENCH == 1 ]]; then
    say "benchmark (at most $BENCH_LIMIT s)"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
    timeout -s TERM "$BENCH_LIMIT" "$PYTHON" -m kd_lightning.bench --out "$OUT/bench.json" "${BENCH_FLAGS[@]}" \
        $BENCH_ARGS >"$OUT/logs/bench.log" 2>&1 || BENCH_RC=$?
    grep -A20 '^kd_lightning.bench on' "$OUT/logs/bench.log" | grep -v '^wrote ' >"$OUT/bench.txt" || true
    summary
fi

# ---------------------------------------------------------------- CUDA MPS around the study
if [[ $MPS == 1 || ($MPS == auto && $DRY_RUN != 1) ]]; then
    "$PYTHON" -m kd_lightning.gpu.mps start "$OUT/logs/mps" | tee -a "$OUT/logs/steps.log" || true
    # shellcheck disable=SC1091
    [[ ! -f $OUT/logs/mps/env.sh ]] || source "$OUT/logs/mps/env.sh"
fi

# ---------------------------------------------------------------- the study
run() {  # NAME OVERRIDE...: one training process; its log, pid, exit code and times go to OUT/logs
    local name=$1 start rc=0 pid
    shift
    start=$(date +%s.%N)
    "$PYTHON" -m kd_lightning.train "${COMMON[@]}" "$@" >"$OUT/logs/$name.log" 2>&1 &
    pid=$!
    echo "$pid" >"$OUT/logs/$name.pid"
    trap 'kill -TERM "$pid" 2>/dev/null || true' TERM  # pass it on: the run saves last.ckpt, then exits
    while true; do
        wait "$pid" && rc=0 || rc=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$start" "$(date +%s.%N)" >>"$OUT/logs/runs.tsv"
    echo "$rc" >"$OUT/logs/$name.rc"
    [[ $rc == 0 ]] || say "$name failed (exit $rc); see $OUT/logs/$name.log"
}

declare -A RUNNING=()  # name -> pid of its runner
QUEUE=()  # "name override ..." in the order they start
stop_runs() {  # REASON: SIGTERM to every running training process, then wait (at most 90 s) for their checkpoints
    local name waited=0
    (( ${#RUNNING[@]} > 0 )) || return 0
    say "$1: stopping ${!RUNNING[*]} (each saves last.ckpt; the same command resumes them)"
    echo "$1: stopped ${!RUNNING[*]}; not started: ${#QUEUE[@]} runs" >>"$OUT/logs/deadline.txt"
    for name in "${!RUNNING[@]}"; do  # the runner passes it on; the process itself, in case it has not yet
        kill -TERM "${RUNNING[$name]}" "$(cat "$OUT/logs/$name.pid" 2>/dev/null)" 2>/dev/null || true
    done
    while (( waited < 90 )) && kill -0 "${RUNNING[@]}" 2>/dev/null; do sleep 1; waited=$(( waited + 1 )); done
    for name in "${!RUNNING[@]}"; do kill -KILL "$(cat "$OUT/logs/$name.pid" 2>/dev/null)" 2>/dev/null || true; done
    for name in "${!RUNNING[@]}"; do wait "${RUNNING[$name]}" || true; done
    RUNNING=()
    QUEUE=()
}
finish_on_signal() {
    trap - TERM INT
    stop_runs "signal"
    "$PYTHON" -m kd_lightning.gpu.mps stop "$OUT/logs/mps" 2>/dev/null || true
    summary
    exit 143
}
trap finish_on_signal TERM INT

FIRST=${SEEDS%% *}
for seed in $SEEDS; do QUEUE+=("teacher-s$seed mode=teacher seed=$seed"); done
export OMP_NUM_THREADS=$(( CORES / JOBS > 0 ? CORES / JOBS : 1 ))  # the runs share the CPU cores too
if [[ $DRY_RUN != 1 ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi dmon -s u -d 5 >"$OUT/logs/gpu-utilisation.txt" 2>&1 &
    DMON=$!
fi
say "study: teacher of seed $FIRST alone, then the other teachers and each seed's students once its teacher exists"
while (( ${#QUEUE[@]} > 0 || ${#RUNNING[@]} > 0 )); do
    alive=" $(jobs -rp | tr '\n' ' ') "
    for name in "${!RUNNING[@]}"; do
        [[ $alive == *" ${RUNNING[$name]} "* ]] && continue
        wait "${RUNNING[$name]}" || true
        unset "RUNNING[$name]"
        if [[ $name == teacher-s* ]]; then
            seed=${name#teacher-s}
            if [[ $(cat "$OUT/logs/$name.rc") == 0 ]]; then
                for depth in $DEPTHS; do
                    for mode in baseline kd; do
                        QUEUE+=("$mode-r$depth-s$seed mode=$mode student.depth=$depth seed=$seed")
                    done
                    if [[ $METHODS == 1 ]]; then
                        QUEUE+=("rev-r$depth-s$seed mode=kd kd.divergence=reverse student.depth=$depth seed=$seed")
                        QUEUE+=("dkd-r$depth-s$seed mode=kd kd.method=dkd student.depth=$depth seed=$seed")
                    fi
                done
            else
                say "seed $seed: the teacher failed, so its students are not trained"
            fi
        elif [[ $METHODS == 1 && $name == kd-r$ASSISTANT-s* && $(cat "$OUT/logs/$name.rc") == 0 ]]; then
            seed=${name#kd-r$ASSISTANT-s}  # the assistant is done: its students distil from its best checkpoint
            assistant=$("$PYTHON" -m kd_lightning.train "${COMMON[@]}" mode=kd student.depth="$ASSISTANT" seed="$seed" \
                --cfg job --resolve -p run_name | tail -n 1)
            for depth in $CHAIN_DEPTHS; do
                QUEUE+=("chain-r$depth-s$seed mode=kd student.depth=$depth seed=$seed teacher.depth=$ASSISTANT \
teacher.ckpt=$OUT/study/runs/$assistant/checkpoints/best.ckpt")
            done
        fi
        summary
    done
    if (( $(date +%s) >= DEADLINE )); then
        stop_runs "deadline ($TIME_LIMIT s less 30 s for the report)"
        break
    fi
    while (( ${#QUEUE[@]} > 0 && ${#RUNNING[@]} < JOBS )) && [[ -z ${RUNNING[teacher-s$FIRST]:-} ]]; do
        read -r -a words <<<"${QUEUE[0]}"
        QUEUE=("${QUEUE[@]:1}")
        run "${words[@]}" &
        RUNNING[${words[0]}]=$!
    done
    sleep 0.5
done
unset OMP_NUM_THREADS
[[ -z ${DMON:-} ]] || kill "$DMON" 2>/dev/null || true
"$PYTHON" -m kd_lightning.gpu.mps stop "$OUT/logs/mps" | tee -a "$OUT/logs/steps.log" || true
trap - TERM INT

# ---------------------------------------------------------------- report and the targets
REPORT_RC=0
say "report"
"$PYTHON" -m kd_lightning.report "$OUT/study/runs" --out "$OUT/report" >"$OUT/logs/report.log" 2>&1 || REPORT_RC=$?
summary
"$PYTHON" -m kd_lightning.study.timings "$OUT" "$T0" "$JOBS" "$DRY_RUN" --per-seed "$PER_SEED" | tee "$OUT/summary.txt" || true

FAILED=$(awk -F'\t' '$2 != 0' "$OUT/logs/runs.tsv" | wc -l)
CUT=$([[ -f $OUT/logs/deadline.txt ]] && echo yes || echo no)
say "done in $(( $(date +%s) - ${T0%.*} )) s: $FAILED runs failed or stopped, stopped at the deadline: $CUT," \
    "bench exit $BENCH_RC, report exit $REPORT_RC"
[[ $FAILED == 0 && $BENCH_RC == 0 && $REPORT_RC == 0 ]] || exit 1
