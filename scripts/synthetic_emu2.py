"""A synthetic multi-shard Emu2-Chat-layout checkpoint (EmuForCausalLM names, bf16 shards and their index,
constant weights) of a chosen LLM size, for measuring what loading holds in memory
(`cargo run --release -p any2any-emu2 --example load_memory -- DIR`). Write it OUTSIDE the repository:

    /root/venvs/hf5/bin/python scripts/synthetic_emu2.py OUT_DIR [--hidden 2048] [--layers 16] [--shards 8]

The tokenizer is the tiny fixture's (tests/fixtures/emu2-tiny/tokenizer), so the vocabulary is its 299 ids.
Versions: torch 2.15.0, safetensors 0.8.0 (the /root/venvs/hf5 venv).
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent

ap = argparse.ArgumentParser()
ap.add_argument("out", type=Path)
ap.add_argument("--hidden", type=int, default=2048)
ap.add_argument("--layers", type=int, default=16)
ap.add_argument("--shards", type=int, default=8)
a = ap.parse_args()
if (a.out.resolve() / ".git").exists() or REPO in a.out.resolve().parents:
    raise SystemExit("write the checkpoint outside the repository")
h, inter, vocab, w = a.hidden, a.hidden * 11 // 4, 299, 64
vision = dict(image_size=56, patch_size=14, width=w, layers=2, head_width=32, mlp_ratio=2.0, n_query=4)
shapes = {"model.decoder.lm.model.embed_tokens.weight": (vocab, h), "model.decoder.lm.model.norm.weight": (h,),
          "model.decoder.lm.lm_head.weight": (vocab, h), "project_up.weight": (h, w), "project_down.weight": (w, h)}
for i in range(a.layers):
    p = f"model.decoder.lm.model.layers.{i}."
    for n in ["q_proj", "k_proj", "v_proj", "o_proj"]:
        shapes[p + f"self_attn.{n}.weight"] = (h, h)
    shapes[p + "mlp.gate_proj.weight"] = (inter, h)
    shapes[p + "mlp.up_proj.weight"] = (inter, h)
    shapes[p + "mlp.down_proj.weight"] = (h, inter)
    shapes[p + "input_layernorm.weight"] = (h,)
    shapes[p + "post_attention_layernorm.weight"] = (h,)
v = "model.visual."
g = vision["image_size"] // vision["patch_size"]
shapes.update({v + "cls_token": (1, 1, w), v + "pos_embed": (1, g * g + 1, w),
               v + "patch_embed.proj.weight": (w, 3, 14, 14), v + "patch_embed.proj.bias": (w,)})
m = int(w * vision["mlp_ratio"])
for i in range(vision["layers"]):
    p = f"{v}blocks.{i}."
    shapes.update({p + "attn.qkv.weight": (3 * w, w), p + "attn.q_bias": (w,), p + "attn.v_bias": (w,),
                   p + "attn.proj.weight": (w, w), p + "attn.proj.bias": (w,), p + "mlp.fc1.weight": (m, w),
                   p + "mlp.fc1.bias": (m,), p + "mlp.fc2.weight": (w, m), p + "mlp.fc2.bias": (w,)})
    for n in ["norm1", "norm2"]:
        shapes.update({p + f"{n}.weight": (w,), p + f"{n}.bias": (w,)})

a.out.mkdir(parents=True, exist_ok=True)
names = list(shapes)
per = -(-len(names) // a.shards)
weight_map, total = {}, 0
for s in range(a.shards):
    part = names[s * per:(s + 1) * per]
    fname = f"model.bf16-{s + 1:05d}-of-{a.shards:05d}.safetensors"
    save_file({n: torch.full(shapes[n], 1e-3, dtype=torch.bfloat16) for n in part}, str(a.out / fname),
              metadata={"format": "pt"})
    weight_map.update({n: fname for n in part})
    total += sum(torch.Size(shapes[n]).numel() for n in part)
(a.out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
cfg = dict(architectures=["EmuForCausalLM"], model_type="Emu", d_model=w, hidden_size=h, intermediate_size=inter,
           num_hidden_layers=a.layers, num_attention_heads=h // 128, max_position_embeddings=256,
           rms_norm_eps=1e-6, vocab_size=vocab, hidden_act="silu", tie_word_embeddings=False,
           vision_config=dict(postnorm=True, qkv_bias=True, **vision))
(a.out / "config.json").write_text(json.dumps(cfg, indent=2))
for f in (REPO / "tests/fixtures/emu2-tiny/tokenizer").iterdir():
    shutil.copy(f, a.out / f.name)
print(f"{total} parameters, {total * 2 / 2**30:.2f} GiB in bf16, {a.shards} shards in {a.out}")
