#!/usr/bin/env bash
# The GPU benchmark behind docs/benchmarks.md: dpo_lib's trainer and TRL's DPOTrainer on the
# same model shape and data, one after the other on the same machine.
#   bench/h200.sh OUTDIR [quick|single|fsdp]
# Each result is one JSON line appended to OUTDIR/results.jsonl; logs go to OUTDIR/*.log.
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
ours="python3 -m dpo_lib bench"
case $mode in
  quick)
    run ours_live $ours --steps 10 --warmup 3 ;;
  single)
    run ours_live_compile $ours --compile
    run ours_precompute_compile $ours --compile --precompute-ref
    run ours_checkpointing_compile $ours --compile --activation-checkpointing
    run ours_live $ours
    run ours_live_no_packing $ours --no-packing
    run ours_live_full_logits $ours --logp-chunk-size 0
    run ours_live_flex_compile $ours --compile --attn flex_attention
    run trl_live python3 bench/trl_dpo.py
    run trl_precompute python3 bench/trl_dpo.py --precompute-ref
    run trl_checkpointing python3 bench/trl_dpo.py --gradient-checkpointing ;;
  fsdp)
    run fsdp1_compile $ours --strategy fsdp --nproc 1 --compile
    run fsdp2_compile $ours --strategy fsdp --nproc 2 --compile --pairs-per-step 16
    run tp2_compile $ours --strategy tensor_parallel --nproc 2 --compile ;;
esac
cat "$out/results.jsonl"
