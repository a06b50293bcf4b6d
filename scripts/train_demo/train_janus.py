#!/usr/bin/env python3
"""Train the `shapes-janus` demo model (issue 11) and save it in the HF Janus-Pro layout.

    python scripts/train_demo/train_janus.py     # versions: scripts/train_demo/requirements.txt

runs stages 1, 1b, 1c and 2 in one go (2b is --continue-lm). The committed model was made stage by stage on the shared 2-core dev machine
(1 torch thread each; logs: scripts/train_demo/logs/shapes-janus-*.log), W=/work/scratch/demo/r3:
    train_janus.py --vq-only --vq-steps 900 --vq-minutes 8 --work $W                      # stage 1: 900 steps, 6.5 min
    train_janus.py --continue-vq --vq-steps 600 --vq-minutes 5 --work $W ...              # stage 1b: 600 steps, 2.5 min
    train_janus.py --decoder-only --decoder-minutes 12 --work $W                          # stage 1c: 776 steps (time-limited)
    train_janus.py --decoder-only --decoder-minutes 10 --seed 1 --work $W                 # stage 1c again (time-limited)
    train_janus.py --reuse-vq --lm-steps 2000 --lm-minutes 12 --work $W --out OUT         # stage 2 (time-limited)
    train_janus.py --set-vq $W/vq3.pt --out OUT                                           # the stage-1c decoder
    train_janus.py --continue-lm --threads 2 --lm-minutes 6.5 --out OUT                   # stage 2b: 630 steps (time-limited)
    train_janus.py --eval-only --out OUT
(stage 1c leaves the encoder and codebook, hence the codes the LM learns, unchanged, so it may run beside
stage 2; its first pass drew its text→image-layout half blank, a bug fixed before the second pass and stage 2).
Result (logs/shapes-janus-eval-*.log): below issue 11's bar; see the README, "Demo models". The time budgets (--vq-minutes, --decoder-minutes, --lm-minutes) stop a stage early on a slow
machine and then drive the cosine schedule by elapsed time, so only a run that finishes its steps is
bit-reproducible from the seed.

A small `JanusForConditionalGeneration` (transformers 5.24.0) learns the synthetic world of world.py:
  1. its VQ tokenizer (model.vqmodel) as an autoencoder on 64×64 pictures (8× down → 8×8 codes), with the
     codebook kept on the unit sphere so HF's `encode` (plain L2 argmin) and `decode` (L2-normalised
     lookup) agree;
     then (1b) further with L1 and dead codes re-seeded every 10 steps, then (1c) its decoder alone;
  2. the LM, the generation embeddings/aligner/head (text→image: prompt → 64 codes, the training pictures
     drawn in a narrower layout, T2I_LAYOUT, with 15 % of the
     prompts replaced by the unconditional row exactly as HF `generate` and any2any build it: every
     token but BOS and BOI → pad), and the SigLIP-style vision tower + aligner (image→text: the
     any2any/Janus chat template with the Janus system prompt, `Describe the image.` → the caption).
Then it saves examples/models/shapes-janus (bf16 safetensors, tokenizer.json, configs) and measures the
held-out scores with HF transformers (`generate` for both directions) on the reloaded checkpoint.
Seeded: the same run on the same machine gives the same files.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, JanusConfig, JanusForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent))
import world  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "examples" / "models" / "shapes-janus"

SPECIALS = ["<unk>", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>",
            "<begin_of_image>", "<end_of_image>", "<image_placeholder>"]
UNK, BOS, EOS, PAD, BOI, EOI, IMG = range(7)
ROLES = ["<|User|>", "<|Assistant|>"]
# crates/any2any-janus/src/backend.rs DEFAULT_SYSTEM_PROMPT (the Janus-Pro processor's)
SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content that "
          "the user provides, and assist the user with a variety of tasks using natural language.\n\n")
S = 64  # picture side
N_CODES = 64  # 8×8 codes (8× VQ) and 64 vision patches of 8 px
HIDDEN = 256
CFG_DROP = 0.15
# text→image training pictures: the same world drawn narrower (side 50-60 %, within 5 % of the centre), so
# that the small LM learns one layout per caption in minutes; the VQ and image→text train on the full world.
T2I_LAYOUT = dict(extent=(0.50, 0.60), jitter=0.05)


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# ---------------------------------------------------------------- tokenizer
def build_tokenizer() -> Tokenizer:
    """Byte-level BPE trained on every string the templates produce: each word of the world one token."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    corpus = [SYSTEM, ": ", "\n" + world.QUESTION + "\n\n", "\n\n", ":"]
    corpus += [" " + world.caption(*c) for c in world.all_captions()] + [world.caption(*c) for c in world.all_captions()]
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=1, special_tokens=SPECIALS + ROLES,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in ROLES])
    return tok


def enc(tok: Tokenizer, s: str) -> list[int]:
    return tok.encode(s, add_special_tokens=False).ids


def t2i_ids(tok, cap: str) -> list[int]:
    # backend.rs render(): BOS + "<|User|>: {prompt}\n\n<|Assistant|>:" + BOI
    return [BOS] + enc(tok, f"<|User|>: {cap}\n\n<|Assistant|>:") + [BOI]


def i2t_prompt_ids(tok) -> list[int]:
    # backend.rs render() for [image, text]: BOS + sys + "<|User|>: " | BOI IMG×N EOI | "\n" + q + "\n\n<|Assistant|>:"
    return ([BOS] + enc(tok, SYSTEM + "<|User|>: ") + [BOI] + [IMG] * N_CODES + [EOI]
            + enc(tok, "\n" + world.QUESTION + "\n\n<|Assistant|>:"))


def uncond(ids: list[int]) -> list[int]:
    return [i if i in (BOS, BOI) else PAD for i in ids]


# ---------------------------------------------------------------- config / model
def build_config(vocab: int) -> JanusConfig:
    return JanusConfig(
        text_config=dict(model_type="llama", vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=512,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
                         tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD),
        vision_config=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=S,
                           patch_size=8, num_image_tokens=N_CODES, projection_dim=HIDDEN, mlp_ratio=2),
        vq_config=dict(embed_dim=8, num_embeddings=512, latent_channels=64, base_channels=32,
                       channel_multiplier=[1, 1, 2, 2], num_res_blocks=1, projection_dim=HIDDEN,
                       image_token_embed_dim=HIDDEN, num_hidden_layers=2),
        image_token_id=IMG, tie_word_embeddings=False,
    )


def to_pixels(imgs: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] → [-1, 1] NCHW (Janus mean/std 0.5)."""
    x = torch.from_numpy(np.array(imgs)).float().div(255.0).sub(0.5).div(0.5)
    return x.permute(0, 3, 1, 2).contiguous()


def processor_resize(img: np.ndarray) -> np.ndarray:
    """The Janus image processor on a square picture: PIL bicubic to 64×64."""
    if img.shape[0] == S:
        return img
    return np.asarray(Image.fromarray(img).resize((S, S), Image.BICUBIC))


def batch(rng, n, sizes=None, **layout):
    scenes, imgs = [], []
    for _ in range(n):
        sc = world.random_scene(rng)
        size = S if sizes is None else int(rng.choice(sizes))
        scenes.append(sc)
        imgs.append(processor_resize(world.render(*sc, size, rng, **layout)))
    return scenes, np.stack(imgs)


# ---------------------------------------------------------------- stage 1: VQ
def vq_quantize(vq, h):
    """Cosine VQ on the unit sphere: returns (straight-through latent, indices, loss)."""
    z = F.normalize(vq.quant_conv(h), dim=1)
    b, c, hh, ww = z.shape
    zf = z.permute(0, 2, 3, 1).reshape(-1, c)
    e = F.normalize(vq.quantize.embedding.weight, dim=1)
    idx = (zf @ e.t()).argmax(1)
    q = e[idx]
    loss = F.mse_loss(q, zf.detach()) + 0.25 * F.mse_loss(zf, q.detach())
    q = zf + (q - zf).detach()
    return q.view(b, hh, ww, c).permute(0, 3, 1, 2), idx.view(b, -1), loss


def init_convs(module):
    """Unit-gain normal init of every conv (std 1/sqrt(fan_in)): with HF's std-0.02 init the gradient
    reaching the decoder's low levels was ~1e-7 and the autoencoder barely learned in 300 steps."""
    with torch.no_grad():
        for mod in module.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.normal_(0.0, (1.0 / mod.weight[0].numel()) ** 0.5)
                mod.bias.zero_()


@torch.no_grad()
def encoder_latents(vq, rng, n):
    _, imgs = batch(rng, n)
    z = F.normalize(vq.quant_conv(vq.encoder(to_pixels(imgs))), dim=1)
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def train_vq(model, steps, rng, t_end, resume=False, restart_every=50):
    """Continuous autoencoder for the first 30 % of the steps, then the codebook is seeded with encoder
    latents and training goes on through the quantizer (dead codes re-seeded every 50 steps)."""
    vq = model.model.vqmodel
    vq.train()
    if not resume:
        init_convs(vq)
    params = list(vq.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    t0 = time.time()
    budget = t_end - t0
    sched = torch.optim.lr_scheduler.LambdaLR(  # cosine over the run's progress (steps or time budget)
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(s / steps, (time.time() - t0) / budget)))))
    emb = vq.quantize.embedding.weight
    k = emb.shape[0]
    quantized = resume
    for step in range(steps):
        if not quantized and (step >= 0.3 * steps or time.time() - t0 > 0.3 * budget):
            z = encoder_latents(vq, rng, 64)
            with torch.no_grad():
                emb.copy_(z[torch.from_numpy(rng.choice(z.shape[0], k, replace=z.shape[0] < k))])
            quantized = True
            log(f"vq {step}: codebook seeded from encoder latents, quantizing from now on")
        _, imgs = batch(rng, 8)
        x = to_pixels(imgs)
        h = vq.encoder(x)
        if quantized:
            q, idx, qloss = vq_quantize(vq, h)
        else:
            q, idx, qloss = F.normalize(vq.quant_conv(h), dim=1), torch.zeros(1), torch.zeros(())
        rec = vq.decoder(vq.post_quant_conv(q))
        rloss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        loss = rloss + qloss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"vq {step}/{steps} rec {rloss.item():.4f} q {qloss.item():.4f} codes used {idx.unique().numel()}")
        if quantized and step % restart_every == restart_every - 1 and step < steps * 0.85:
            z = encoder_latents(vq, rng, 32)
            with torch.no_grad():
                counts = torch.bincount((z @ F.normalize(emb, dim=1).t()).argmax(1), minlength=k)
                dead = (counts == 0).nonzero().flatten()
                if dead.numel():
                    pick = torch.from_numpy(rng.integers(0, z.shape[0], dead.numel()))
                    emb[dead] = z[pick] + 0.01 * torch.randn(dead.numel(), z.shape[1])
        if time.time() > t_end:
            log(f"vq: time budget reached at step {step}")
            break
    with torch.no_grad():  # HF encode (plain L2 argmin) = cosine argmax only on the unit sphere
        emb.copy_(F.normalize(emb, dim=1))
    vq.eval()


def train_decoder(model, steps, rng, t_end, bs=16):
    """Stage 1c: the VQ decoder (post_quant_conv + decoder) alone, the encoder and codebook frozen, so the
    codes (what the LM learns) do not change; half the pictures drawn in the text→image layout."""
    vq = model.model.vqmodel
    vq.eval()
    params = list(vq.post_quant_conv.parameters()) + list(vq.decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    t0 = time.time()
    budget = t_end - t0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(s / steps, (time.time() - t0) / budget)))))
    for step in range(steps):
        x = to_pixels(np.concatenate([batch(rng, bs // 2)[1], batch(rng, bs // 2, **T2I_LAYOUT)[1]]))
        with torch.no_grad():
            q, _, _ = vq_quantize(vq, vq.encoder(x))
        rec = vq.decoder(vq.post_quant_conv(q))
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"decoder {step}/{steps} rec {loss.item():.4f}")
        if time.time() > t_end:
            log(f"decoder: time budget reached at step {step}")
            break


@torch.no_grad()
def vq_codes(model, imgs) -> torch.Tensor:
    vq = model.model.vqmodel
    out = []
    for i in range(0, len(imgs), 64):
        _, idx, _ = vq_quantize(vq, vq.encoder(to_pixels(imgs[i:i + 64])))
        out.append(idx)
    return torch.cat(out)


# ---------------------------------------------------------------- stage 2: LM
def lm_step_t2i(model, tok, scenes, codes, rng):
    m = model.model
    rows = []
    for sc in scenes:
        ids = t2i_ids(tok, world.caption(*sc))
        rows.append(uncond(ids) if rng.random() < CFG_DROP else ids)
    L = len(rows[0])
    assert all(len(r) == L for r in rows)
    ids = torch.tensor(rows)
    text = m.language_model.embed_tokens(ids)
    img = m.generation_aligner(m.generation_embeddings(codes[:, :-1]))
    h = m.language_model(inputs_embeds=torch.cat([text, img], 1)).last_hidden_state
    logits = m.generation_head(h[:, L - 1:])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))


def lm_step_i2t(model, tok, scenes, imgs):
    prompt = i2t_prompt_ids(tok)
    ans = [enc(tok, " " + world.caption(*sc)) + [EOS] for sc in scenes]
    L = len(prompt) + max(len(a) for a in ans)
    ids = torch.full((len(scenes), L), PAD)
    labels = torch.full((len(scenes), L), -100)
    for i, a in enumerate(ans):
        seq = prompt + a
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(prompt): len(seq)] = torch.tensor(a)
    out = model(input_ids=ids, pixel_values=to_pixels(imgs))
    logits = out.logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def init_vision(model):
    """Unit-gain init of the vision tower and its aligner (std 1/sqrt(fan_in), position embeddings std 1):
    with HF's std-0.02 init the position signal is ~14× weaker than the patch content and the attention
    stays uniform, and the understanding path learned colour and background but never the shape."""
    m = model.model
    with torch.no_grad():
        for mod in list(m.vision_model.modules()) + list(m.aligner.modules()):
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                mod.weight.normal_(0.0, (1.0 / mod.weight[0].numel()) ** 0.5)
                mod.bias.zero_()
        m.vision_model.embeddings.position_embedding.weight.normal_(0.0, 1.0)


def train_lm(model, tok, steps, rng, t_end, bt2i=24, bi2t=12, fresh=True):
    if fresh:
        init_vision(model)
    vq = model.model.vqmodel
    for p in vq.parameters():
        p.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1.5e-3, betas=(0.9, 0.98), weight_decay=0.01)
    warm = 50
    t0 = time.time()
    budget = t_end - t0

    def lr_at(s):  # warm-up, then cosine over the run's progress (steps, or the time budget if that is shorter)
        prog = min(1.0, max(s / steps, (time.time() - t0) / budget))
        return min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    vq.eval()
    for step in range(steps):
        scenes, imgs = batch(rng, bt2i, **T2I_LAYOUT)
        codes = vq_codes(model, imgs)
        l1 = lm_step_t2i(model, tok, scenes, codes, rng)
        scenes2, imgs2 = batch(rng, bi2t, sizes=[32, 48, 64, 64, 96, 128, 200])
        l2 = lm_step_i2t(model, tok, scenes2, imgs2)
        loss = l1 + l2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == steps - 1:
            log(f"lm {step}/{steps} t2i {l1.item():.3f} i2t {l2.item():.3f} ({(time.time() - t0) / (step + 1):.2f} s/step)")
        if time.time() > t_end:
            log(f"lm: time budget reached at step {step}")
            break
    model.eval()


# ---------------------------------------------------------------- save
def save(model, tok, out: Path):
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                                               guidance_scale=5.0, generation_kwargs={"boi_token_id": BOI})
    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    model.to(torch.float32)
    tok.save(str(out / "tokenizer.json"), pretty=False)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIALS[BOS], "eos_token": SPECIALS[EOS],
        "pad_token": SPECIALS[PAD], "unk_token": "<unk>", "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, "model_max_length": 512}, indent=2, ensure_ascii=False) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps({
        "background_color": [127, 127, 127], "do_normalize": True, "do_pad": True, "do_rescale": True,
        "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "JanusImageProcessor",
        "image_std": [0.5, 0.5, 0.5], "min_size": 14, "resample": 3, "rescale_factor": 1 / 255,
        "size": {"height": S, "width": S}}, indent=2) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    log(f"saved {out} ({total / 1e6:.2f} MB)")


# ---------------------------------------------------------------- held-out scores with HF transformers
@torch.no_grad()
def vq_round_trip(model, seed: int, n: int = 100) -> int:
    """The VQ alone: HF encode → decode of fresh pictures, classified."""
    rng = np.random.default_rng(77_000 + seed)
    scenes, imgs = batch(rng, n)
    vq = model.model.vqmodel
    codes = vq.encode(to_pixels(imgs)).image_tokens.view(len(imgs), -1)
    rec = model.decode_image_tokens(codes)
    rec = ((rec.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).numpy()
    good = sum(world.classify(r) == sc for r, sc in zip(rec, scenes))
    mae = np.abs(rec.astype(np.float64) - imgs).mean()
    log(f"HELD-OUT VQ round trip (HF encode → decode, {n} fresh 64×64 pictures): {good}/{n} classified right, "
        f"mean abs error {mae:.1f} levels, {codes.unique().numel()} codes used")
    return good


@torch.no_grad()
def evaluate(out: Path, seed: int, n_i2t: int = 100):
    model = JanusForConditionalGeneration.from_pretrained(str(out), dtype=torch.float32)
    model.eval()
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    vq_round_trip(model, seed)
    # text→image: 54 prompts × 2 seeds, HF generate (CFG 5, sampled at temperature 1)
    ok, n, fails = 0, 0, []
    for s in range(2):
        torch.manual_seed(10_000 + seed * 7 + s)
        caps = world.all_captions()
        ids = torch.tensor([t2i_ids(tok, world.caption(*c)) for c in caps])
        codes = model.generate(ids, attention_mask=torch.ones_like(ids), generation_mode="image", do_sample=True,
                               guidance_scale=5.0)
        px = model.decode_image_tokens(codes)  # NHWC in [-1, 1]
        imgs = ((px.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).numpy()
        for c, im in zip(caps, imgs):
            got = world.classify(im)
            n += 1
            ok += got == c
            if got != c:
                fails.append((world.caption(*c), got))
    log(f"HELD-OUT text→image (HF generate, CFG 5, T=1, 54 prompts × 2 seeds): {ok}/{n} = {100 * ok / n:.1f} % "
        f"right in colour, shape and background; misses: {fails[:8]}")
    # image→text: fresh pictures of several sizes, HF generate greedy
    rng = np.random.default_rng(99_000 + seed)
    prompt = i2t_prompt_ids(tok)
    good = 0
    for i in range(n_i2t):
        sc = world.random_scene(rng)
        size = int(rng.choice([48, 64, 80, 100, 128, 160]))
        img = processor_resize(world.render(*sc, size, rng))
        ids = torch.tensor([prompt])
        seq = model.generate(ids, attention_mask=torch.ones_like(ids), pixel_values=to_pixels(img[None]),
                             max_new_tokens=16, do_sample=False, generation_mode="text")
        text = tok.decode(seq[0, len(prompt):].tolist(), skip_special_tokens=True).strip()
        good += text == world.caption(*sc)
    log(f"HELD-OUT image→text (HF generate, greedy, {n_i2t} fresh pictures of 48-160 px): {good}/{n_i2t} exact captions")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vq-steps", type=int, default=800)
    ap.add_argument("--lm-steps", type=int, default=600)
    ap.add_argument("--vq-minutes", type=float, default=10.0)
    ap.add_argument("--lm-minutes", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--vq-only", action="store_true", help="stop after stage 1 and its round-trip check")
    ap.add_argument("--decoder-only", action="store_true",
                    help="stage 1c alone: fine-tune the decoder of --work's vq2.pt (codes unchanged) into vq3.pt")
    ap.add_argument("--decoder-steps", type=int, default=1500)
    ap.add_argument("--decoder-minutes", type=float, default=12.0)
    ap.add_argument("--continue-lm", action="store_true", help="train the LM of the model in --out further")
    ap.add_argument("--set-vq", type=Path, help="put this VQ state (same codes, e.g. vq3.pt) into the model saved in --out and re-save it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/shapes-janus-work"), help="stage checkpoints")
    ap.add_argument("--reuse-vq", action="store_true", help="skip stage 1, load the VQ saved in --work")
    ap.add_argument("--continue-vq", action="store_true", help="train the VQ saved in --work further (stage 1b)")
    args = ap.parse_args()
    # 1 thread by default: on the shared 2-core machine two threads ran a VQ step 10× slower (16-30 s vs
    # 1.8 s) because of oversubscription; --threads 2 on an idle machine.
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    log(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if args.eval_only:
        evaluate(args.out, args.seed)
        return
    if args.continue_lm:  # stage 2 again, from the model saved in --out (time-limited)
        model = JanusForConditionalGeneration.from_pretrained(str(args.out), dtype=torch.float32)
        tok = Tokenizer.from_file(str(args.out / "tokenizer.json"))
        torch.manual_seed(args.seed)
        train_lm(model, tok, args.lm_steps, np.random.default_rng(args.seed + 2), time.time() + 60 * args.lm_minutes,
                 fresh=False)
        save(model, tok, args.out)
        return
    if args.set_vq:
        model = JanusForConditionalGeneration.from_pretrained(str(args.out), dtype=torch.float32)
        model.model.vqmodel.load_state_dict(torch.load(args.set_vq))
        tok = Tokenizer.from_file(str(args.out / "tokenizer.json"))
        save(model.eval(), tok, args.out)
        return
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tok = build_tokenizer()
    cap = world.caption("red", "circle", "white")
    log(f"tokenizer: {tok.get_vocab_size()} tokens; t2i prompt {len(t2i_ids(tok, cap))} ids, "
        f"i2t prompt {len(i2t_prompt_ids(tok))} ids, answer {enc(tok, ' ' + cap)}")
    assert tok.decode(enc(tok, " " + cap)) == " " + cap
    vocab = tok.get_vocab_size()
    model = JanusForConditionalGeneration(build_config(vocab))
    model.set_attn_implementation("sdpa")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f} M parameters")
    args.work.mkdir(parents=True, exist_ok=True)
    vq_ckpt = args.work / "vq.pt"
    if args.decoder_only:  # codes unchanged, so it can run beside (or after) the LM stage
        start = args.work / ("vq3.pt" if (args.work / "vq3.pt").exists() else "vq2.pt")  # a rerun goes on
        model.model.vqmodel.load_state_dict(torch.load(start))
        log(f"decoder fine-tune from {start}")
        train_decoder(model, args.decoder_steps, np.random.default_rng(args.seed + 1),
                      time.time() + 60 * args.decoder_minutes)
        torch.save(model.model.vqmodel.state_dict(), args.work / "vq3.pt")
        vq_round_trip(model.float(), args.seed)
        return
    if args.continue_vq:  # a second VQ stage from the saved one: L1 added, dead codes re-seeded every 10 steps
        model.model.vqmodel.load_state_dict(torch.load(vq_ckpt))
        log(f"VQ continued from {vq_ckpt}")
        train_vq(model, args.vq_steps, rng, time.time() + 60 * args.vq_minutes, resume=True, restart_every=10)
        torch.save(model.model.vqmodel.state_dict(), args.work / "vq2.pt")
    elif args.reuse_vq and vq_ckpt.exists():
        for later in ("vq2.pt", "vq3.pt"):  # stage 1b's / 1c's VQ when there is one
            if (args.work / later).exists():
                vq_ckpt = args.work / later
        model.model.vqmodel.load_state_dict(torch.load(vq_ckpt))
        log(f"VQ reused from {vq_ckpt}")
    else:
        train_vq(model, args.vq_steps, rng, time.time() + 60 * args.vq_minutes)
        torch.save(model.model.vqmodel.state_dict(), vq_ckpt)
        if not args.vq_only:  # stages 1b and 1c, as the committed model had them
            train_vq(model, 600, rng, time.time() + 300, resume=True, restart_every=10)
            torch.save(model.model.vqmodel.state_dict(), args.work / "vq2.pt")
            train_decoder(model, args.decoder_steps, np.random.default_rng(args.seed + 1),
                          time.time() + 60 * args.decoder_minutes)
            torch.save(model.model.vqmodel.state_dict(), args.work / "vq3.pt")
    vq_round_trip(model.float(), args.seed)
    if args.vq_only:
        return
    train_lm(model, tok, args.lm_steps, rng, time.time() + 60 * args.lm_minutes)
    save(model, tok, args.out)
    evaluate(args.out, args.seed)


if __name__ == "__main__":
    main()
