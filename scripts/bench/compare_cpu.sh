#!/usr/bin/env bash
# any2any vs PyTorch eager, same small config, same machine, one run (CPU, f32).
# Needs the fixture venv: bash scripts/fixtures/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
cargo build --release --quiet
for cfg in on off; do
  ./target/release/any2any bench --size small --batch 1 --cfg $cfg --steps 32 --warmup 4 --json /tmp/a2a-bench-$cfg.json >/dev/null
  a2a=$(python3 -c "import json;print(json.load(open('/tmp/a2a-bench-$cfg.json'))[0]['step_ms_mean'])")
  pt=$($PY scripts/bench/torch_cpu.py --steps 32 --batch 1 --cfg $cfg | python3 -c "import json,sys;print(json.load(sys.stdin)['step_ms_mean'])")
  python3 -c "print(f'CFG $cfg: any2any {float($a2a):.2f} ms/step, PyTorch eager {float($pt):.2f} ms/step, ratio PyTorch/any2any {float($pt)/float($a2a):.2f}')"
done
