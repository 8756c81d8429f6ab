#!/usr/bin/env bash
# groundup's GPU check: one table, in under 8 minutes on one GPU, of
#   - 124M pretraining tokens/s and MFU (batch 32 x 1024, vocab 50304, bf16, torch.compile; steady-state), groundup's
#     loop and the nanoGPT-style baseline written in bench/nanogpt_baseline.py, and their ratio;
#   - SFT and DPO steps/s at 124M (on the model the pretraining step wrote), LoRA and full (steady-state);
#   - the smoke and tiny speedruns' wall time (the tiny one gets whatever budget is left; "timed out" if it runs out).
# Every step runs under its own `timeout` (capped by the budget left); logs and figures under $OUT/gpu_check.
#
# On the lent GPU machine (`device` tool; /work/shared/DEVICE.md): nothing can be downloaded there, so first, here,
# put the pinned wheels in the ignored folder .whl/ (DEVICE.md step 1), then make ONE call:
#     run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
# The script installs .whl/*.whl into /tmp/site itself (pip --no-index) and sets PYTHONPATH=/tmp/site:$PWD/src.
# Then give the machine back (give_back) unless rerunning at once. A second call with GPU_CHECK_STEPS=levers measures
# the pretraining levers one by one (loss outside the forward; no compile with the chunked / the full-logits loss).
#
# On a CPU (CI, `make bench-gpu-dry`): a dry mode checks the plumbing in under a minute, tiny shapes, few steps,
# speedruns with --dry-run; its figures mean nothing (tests/test_gpu_check.py runs it):
#     GPU_CHECK_DRY=1 bash bench/gpu_check.sh
# Knobs: GPU_CHECK_BUDGET (seconds for all steps; default 450, dry 55), GPU_CHECK_STEPS (default
# "pretrain nanogpt finetune smoke tiny"; "levers" is extra), PYTHON, OUT, FT_STEPS / FT_WARMUP (fine-tuning).
set -u
cd "$(dirname "$0")/.."
DRY=${GPU_CHECK_DRY:-0}
if [ "$DRY" = 1 ]; then BUDGET=${GPU_CHECK_BUDGET:-55}; else BUDGET=${GPU_CHECK_BUDGET:-450}; fi
STEPS=" ${GPU_CHECK_STEPS:-pretrain nanogpt finetune smoke tiny} "
ROOT=${OUT:-$(mktemp -d /tmp/gpu_check_out.XXXXXX)}
LOG=$ROOT/gpu_check
WORK=$(mktemp -d /tmp/gpu_check_work.XXXXXX)
mkdir -p "$LOG"
: > "$LOG/status.tsv"
START=$(date +%s)

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
if [ "$DRY" != 1 ] && ls .whl/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        > "$LOG/pip.log" 2>&1 || echo "pip install of .whl failed: $LOG/pip.log"
    export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1

if [ "$DRY" = 1 ]; then
    export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""   # CPU, one thread: a shared CI machine
    SHAPE=(--n_layer 2 --n_embd 32 --n_head 2 --n_positions 64 --per_device_batch_size 4 --vocab_size 512
           --val_documents 20 --tokenize_num_proc 1 --use_cpu true)
    NANO=(--n_layer 2 --n_embd 32 --n_head 2 --block_size 64 --batch_size 4 --vocab_size 512 --device cpu)
    PRE_STEPS=8; PRE_WARM=3; COMPILE=false; NANO_STEPS=4; NANO_WARM=2; DRYFLAG=--dry; RUNFLAG=--dry-run
    LABEL="dry (2x32, 4x64)"
else
    SHAPE=(--n_layer 12 --n_embd 768 --n_head 12 --n_positions 1024 --per_device_batch_size 32 --vocab_size 50304)
    NANO=(--n_layer 12 --n_embd 768 --n_head 12 --block_size 1024 --batch_size 32 --vocab_size 50304 --compile)
    PRE_STEPS=60; PRE_WARM=20; COMPILE=true; NANO_STEPS=40; NANO_WARM=15; DRYFLAG=; RUNFLAG=
    LABEL="124M (12x768, 32x1024)"
fi

step() {  # step NAME CAP_SECONDS command...: under timeout min(CAP, budget left); NAME rc seconds -> status.tsv
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt 5 ]; then
        echo "== $name: skipped, budget spent"
        return 0
    fi
    local limit=$((cap < left ? cap : left))
    local t0
    t0=$(date +%s.%N)
    echo "== $name (timeout ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" > "$LOG/$name.log" 2>&1
    local rc=$?
    local secs
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%s\n' "$name" "$rc" "$secs" >> "$LOG/status.tsv"
    if [ "$rc" -ne 0 ]; then
        echo "   $name: rc $rc after ${secs}s; last lines of $LOG/$name.log:"
        tail -n 6 "$LOG/$name.log" | sed 's/^/   | /'
    fi
}

pretrain() {  # pretrain NAME CAP OUTPUT_DIR COMPILE extra keys...: groundup's loop as a step; results to $LOG/NAME.json
    local name=$1 cap=$2 out=$3 compile=$4
    shift 4
    step "$name" "$cap" "$PY" recipes/pretrain.py --output_dir "$out" --overwrite true --tokenizer "$WORK/tokenizer" \
        --dataset "$WORK/data" "${SHAPE[@]}" --max_steps "$PRE_STEPS" --speed_warmup_steps "$PRE_WARM" \
        --warmup_steps 10 --learning_rate 6e-4 --eval_steps 0 --save_steps 0 --recall_check false \
        --logging_steps 10 --progress lines --torch_compile "$compile" "$@"
    cp "$out/pretrain_results.json" "$LOG/$name.json" 2> /dev/null
}

"$PY" bench/gpu_check.py meta "$LOG" $DRYFLAG --shape "$LABEL" --compile "$COMPILE" > "$LOG/meta.log" 2>&1
step prepare 120 "$PY" bench/gpu_check.py prepare "$WORK" $DRYFLAG
case $STEPS in *" pretrain "*) pretrain pretrain 200 "$WORK/base124" "$COMPILE" ;; esac
case $STEPS in *" nanogpt "*) step nanogpt 150 "$PY" bench/nanogpt_baseline.py "${NANO[@]}" --steps "$NANO_STEPS" \
    --warmup "$NANO_WARM" --json "$LOG/nanogpt.json" ;; esac
case $STEPS in *" levers "*)
    pretrain levers_outside 200 "$WORK/lever1" "$COMPILE" --loss_in_forward false
    pretrain levers_nocompile 120 "$WORK/lever2" false
    pretrain levers_nocompile_logits 120 "$WORK/lever3" false --loss_implementation logits ;;
esac
case $STEPS in *" finetune "*) step finetune 200 "$PY" bench/gpu_check.py finetune "$WORK" "$LOG" $DRYFLAG ;; esac
case $STEPS in *" smoke "*) step smoke 150 "$PY" -m groundup.cli speedrun --preset smoke --run-dir "$WORK/smoke" \
    $RUNFLAG ;; esac
case $STEPS in *" tiny "*) step tiny 600 "$PY" -m groundup.cli speedrun --preset tiny --run-dir "$WORK/tiny" \
    $RUNFLAG ;; esac
for run in smoke tiny; do cp "$WORK/$run/speedrun.json" "$LOG/${run}_speedrun.json" 2> /dev/null; done
"$PY" bench/gpu_check.py table "$LOG"
rc=$?
rm -rf "$WORK"
exit $rc
