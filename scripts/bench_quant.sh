#!/usr/bin/env bash
# Quantized vs dense CPU decoding at one named size, interleaved over rounds (a shared machine's
# load drifts): `any2any bench --quant X` per variant, each in its own process (so its peak RSS is
# its own), then PyTorch eager bf16 at the Janus-Pro-1B shape (../shared/tools/torch_cpu_janus1b.py).
# Usage: scripts/bench_quant.sh [size=janus-pro-1b] [rounds=2] [steps=8] [variants="f32 q8_0 q4k"]
# THREADS=N sets CANDLE_NUM_THREADS/RAYON_NUM_THREADS for any2any and torch.set_num_threads (via
# TORCH_THREADS_SCRIPT, a copy of the torch script taking the count as its third argument).
# Prints one JSON line per measurement and the load average before each round.
set -euo pipefail
size=${1:-janus-pro-1b}
rounds=${2:-2}
steps=${3:-8}
variants=${4:-"f32 q8_0 q4k"}
bin=${ANY2ANY:-target/release/any2any}
torch_py=${TORCH_PY:-/root/venvs/hf5/bin/python}
torch_script=${TORCH_SCRIPT:-../../shared/tools/torch_cpu_janus1b.py}
if [ -n "${THREADS:-}" ]; then export CANDLE_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS; fi
tmp=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
  echo "# round $r load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  for v in $variants; do
    "$bin" bench --size "$size" --cfg on --batch 1 --steps "$steps" --warmup 2 \
      --quant "$v" --json "$tmp/$v.json" >/dev/null
    python3 -c "import json,sys; r=json.load(open(sys.argv[1]))[0]; print(json.dumps({k: r[k] for k in ('size','quant','dtype','step_ms_mean','step_ms_p50','step_ms_min','build_s','rss_mib','peak_rss_mib')}))" "$tmp/$v.json"
  done
  if [ "$size" = janus-pro-1b ] && [ -x "$torch_py" ] && [ -f "$torch_script" ]; then
    "$torch_py" "$torch_script" "$steps" bf16 "${THREADS:-2}"
  fi
done
rm -rf "$tmp"
