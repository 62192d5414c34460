#!/bin/bash
# The tiny-default sweeps of docs/RESULTS.md ("Why it misses"), as run on a lent machine
# with 16 cores and one GPU:  bash scripts/experiments/tiny_kv_sweep.sh 1|2 [OUT_DIR]
#   1: seven CPU runs (2 threads each) and two GPU runs side by side, ~9 minutes there
#   2: six GPU runs of 1,600 steps, then scripts/diagnose_kv.py on each, ~2 minutes there
# Each run's log, log_history.json, heldout_eval.json (and diagnostics) land in OUT_DIR.
set -u
cd "$(dirname "$0")/../.."
which=${1:?sweep 1 or 2}; out=${2:-runs/tiny_kv_sweep$which}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
train() {  # name device(cpu|gpu) flags...
    local name=$1 dev=$2; shift 2
    local threads=1 env=(OMP_NUM_THREADS=1)
    [ "$dev" = cpu ] && threads=2 env=(OMP_NUM_THREADS=2 CUDA_VISIBLE_DEVICES=)
    env "${env[@]}" timeout 555 python3 -m memdlm.cli train --config configs/tiny.yaml --output-dir "$out/$name" \
        --threads $threads --save-steps 100000 "$@" > "$out/$name.log" 2>&1
    [ "$which" = 2 ] && python3 scripts/diagnose_kv.py "$out/$name" --task kv_d1 --items 100 > "$out/$name.diag.json" 2>/dev/null
}
if [ "$which" = 1 ]; then
    b=(--max-train-minutes 8.2)
    train c1_base cpu "${b[@]}" &
    train c2_group cpu "${b[@]}" --train-sampling-strategy group_by_length &
    train c3_heads8 cpu "${b[@]}" --tiny-heads 8 &
    train c4_heads8_group cpu "${b[@]}" --tiny-heads 8 --train-sampling-strategy group_by_length &
    train c5_lr1e-3 cpu "${b[@]}" --learning-rate 1e-3 &
    train c6_3layers_group cpu "${b[@]}" --tiny-layers 3 --train-sampling-strategy group_by_length &
    train c7_b8_4800_group cpu "${b[@]}" --per-device-train-batch-size 8 --max-steps 4800 --train-sampling-strategy group_by_length &
    train g1_4800 gpu "${b[@]}" --max-steps 4800 &
    train g2_9600 gpu "${b[@]}" --max-steps 9600 --eval-steps 1200 &
else
    b=(--max-train-minutes 2.6 --max-steps 1600 --eval-steps 400)
    train r1_base gpu "${b[@]}" &
    train r2_s8 gpu "${b[@]}" --tiny-overrides '{"query_pre_attn_scalar": 8}' &
    train r3_s2 gpu "${b[@]}" --tiny-overrides '{"query_pre_attn_scalar": 2}' &
    train r4_cur1 gpu "${b[@]}" --tasks kv_curriculum1 --train-lengths 48 64 96 128 &
    train r5_s8_cur1 gpu "${b[@]}" --tiny-overrides '{"query_pre_attn_scalar": 8}' --tasks kv_curriculum1 --train-lengths 48 64 96 128 &
    train r6_s8_lr1e-3 gpu "${b[@]}" --tiny-overrides '{"query_pre_attn_scalar": 8}' --learning-rate 1e-3 &
fi
wait
for d in "$out"/*/; do
    n=$(basename "$d")
    for f in heldout_eval.json log_history.json; do [ -f "$d$f" ] && cp "$d$f" "$out/$n.$f"; done
done
