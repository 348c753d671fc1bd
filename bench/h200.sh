#!/usr/bin/env bash
# The GPU benchmark behind docs/benchmarks.md: dpo_lib's trainer and TRL's DPOTrainer on the
# same model shape and data, one after the other on the same machine.
#   bench/h200.sh OUTDIR [quick|single|ours|trl|liger|ablations|checkpointing|fsdp|8b-lora|8b-lora-trl]
# (single = ours + trl + liger, split so that each part fits one 10-minute call.)
# Each result is one JSON line appended to OUTDIR/results.jsonl; logs go to OUTDIR/*.log.
# TRL's runs need trl, peft and datasets, and liger-kernel for the *_liger runs (TRL's
# use_liger_kernel=True, its fastest setting); both sides train on the same tokens each step.
set -uo pipefail
out=${1:?output directory}; mode=${2:-single}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
run() {  # run NAME COMMAND...
  local name=$1; shift
  echo "== $name: $*" | tee -a "$out/commands.txt"
  if "$@" > "$out/$name.log" 2>&1; then
    tail -n 1 "$out/$name.log" | sed "s/^{/{\"run\": \"$name\", /" >> "$out/results.jsonl"
  else
    echo "{\"run\": \"$name\", \"failed\": true}" >> "$out/results.jsonl"; tail -n 30 "$out/$name.log"
  fi
}
ours="python3 -m dpo_lib bench --steps 30 --warmup 8"
fast="--compile --attn varlen"   # packing, the chunked head and its compilation are on by default
trl="--steps 20 --warmup 8"
lora8b="--shape llama3-8b --adapter lora"   # LoRA r 16 on all seven projections of a Llama-3-8B shape
case $mode in
  quick)
    run ours_live $ours --steps 10 --warmup 3 ;;
  single)  # the three comparisons with TRL, then TRL again with liger's kernels
    "$0" "$out" ours; "$0" "$out" trl; "$0" "$out" liger ;;
  ours)
    run ours_live $ours $fast
    run ours_precompute $ours $fast --precompute-ref
    run ours_checkpointing $ours $fast --activation-checkpointing ;;
  trl)
    run trl_live python3 bench/trl_dpo.py $trl
    run trl_precompute python3 bench/trl_dpo.py $trl --precompute-ref
    run trl_checkpointing python3 bench/trl_dpo.py $trl --gradient-checkpointing ;;
  liger)
    run trl_live_liger python3 bench/trl_dpo.py $trl --liger
    run trl_precompute_liger python3 bench/trl_dpo.py $trl --precompute-ref --liger
    run trl_checkpointing_liger python3 bench/trl_dpo.py $trl --gradient-checkpointing --liger ;;
  ablations)  # each speed feature off, one at a time, against ours_live
    run ours_live $ours $fast
    run ours_eager_logp_head $ours $fast --no-compile-logp-head
    run ours_flex_attention $ours --compile --attn flex_attention
    run ours_no_compile $ours --no-compile --attn varlen
    run ours_packing_dense_mask $ours --compile --attn sdpa
    run ours_no_packing $ours --compile --no-packing --attn sdpa --warmup 12
    run ours_full_logits $ours $fast --logp-chunk-size 0 ;;
  checkpointing)  # the gradient checkpointing comparison alone
    run ours_checkpointing $ours $fast --activation-checkpointing
    run trl_checkpointing python3 bench/trl_dpo.py $trl --gradient-checkpointing
    run trl_checkpointing_liger python3 bench/trl_dpo.py $trl --gradient-checkpointing --liger ;;
  8b-lora)  # bf16 base weights, reference = the policy with its adapters disabled
    run ours_8b_lora $ours $fast $lora8b
    run trl_8b_lora_liger python3 bench/trl_dpo.py $trl $lora8b --liger ;;
  8b-lora-trl)  # TRL without liger, for reference
    run trl_8b_lora python3 bench/trl_dpo.py $trl $lora8b ;;
  fsdp)
    run fsdp1 $ours $fast --strategy fsdp --processes 1
    run fsdp2 $ours $fast --strategy fsdp --processes 2 --pairs-per-step 16
    run tp2 $ours $fast --strategy tensor_parallel --processes 2 ;;
esac
[ "$mode" = single ] || cat "$out/results.jsonl"
