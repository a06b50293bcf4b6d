"""PyTorch-eager baseline for `any2any bench --size small`: the same image-token decoding step
(head -> CFG mix -> softmax -> multinomial -> embed -> one Llama forward with a KV cache) on the
same config, CPU, f32, random weights. Prints one JSON line.

    .venv/bin/python scripts/bench/torch_cpu.py --steps 32 --batch 1 --cfg on
"""
import argparse, json, time

import torch
from transformers import LlamaConfig, LlamaModel
from transformers.cache_utils import DynamicCache

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=32)
ap.add_argument("--warmup", type=int, default=4)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--cfg", choices=["on", "off"], default="on")
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=4096, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                  rms_norm_eps=1e-6, rope_theta=1e4)
cfg._attn_implementation = "eager"
model = LlamaModel(cfg).eval()
proj = torch.nn.Linear(512, 512)
head = torch.nn.Linear(512, 4096, bias=False)
rows = a.batch * (2 if a.cfg == "on" else 1)
prompt = 32
with torch.no_grad():
    cache = DynamicCache()
    ids = torch.zeros((rows, prompt), dtype=torch.long)
    t = time.perf_counter()
    out = model(input_ids=ids, past_key_values=cache, use_cache=True)
    prefill_ms = (time.perf_counter() - t) * 1e3
    hidden = out.last_hidden_state[:, -1]
    times = []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        logits = head(torch.nn.functional.gelu(proj(hidden)))
        if a.cfg == "on":
            c, u = logits[: a.batch], logits[a.batch:]
            logits = u + 5.0 * (c - u)
        nxt = torch.multinomial(torch.softmax(logits, -1), 1)
        if a.cfg == "on":
            nxt = torch.cat([nxt, nxt])
        e = model.embed_tokens(nxt)
        out = model(inputs_embeds=e, past_key_values=cache, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        if i >= a.warmup:
            times.append((time.perf_counter() - t) * 1e3)
times.sort()
print(json.dumps({"impl": "pytorch-eager", "torch": torch.__version__, "batch": a.batch, "cfg": a.cfg,
                  "prefill_ms": prefill_ms, "step_ms_mean": sum(times) / len(times),
                  "step_ms_p50": times[len(times) // 2], "step_ms_min": times[0]}))
