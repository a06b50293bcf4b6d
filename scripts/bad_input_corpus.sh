#!/usr/bin/env bash
# The bad-input corpus of issue 10, bigger than the CI suite (tests/bad_input.rs): every
# corruption below over every family fixture in tests/fixtures/, run through the release CLI.
# Prints one row per corruption, one column per fixture: `ok` (a clean error naming the
# culprit, exit 1/2, no file left or replaced), `NAMELESS` (an error that does not name it),
# `PANIC`, `ABORT` (killed by a signal, e.g. out of memory), `GARBAGE` (exit 0 on a corrupt
# input), `CLOBBER` (a file left behind or replaced). Ends with the totals.
#
# Usage: scripts/bad_input_corpus.sh [path/to/any2any]   (default target/release/any2any)
# ONLY_FIXTURES="a b" / ONLY_CASES="c d" restrict the run to those fixtures / cases.
# Each run is capped at 60 s and 8 GiB of address space (ulimit -v) so an abort cannot take the
# machine down.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/target/release/any2any}"
FIX="$ROOT/tests/fixtures"
PY="${PYTHON:-python3}"
FIXTURES=(janus-tiny chameleon-tiny chameleon-swin-tiny chameleon-raw-tiny emu3-tiny lumina-tiny showo-tiny
  janusflow-tiny transfusion-tiny transfusion-vae-tiny emu2-tiny)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
declare -A CELL
TOTAL=0; BAD=0

# prepare <fixture> <case> <dir>: copies the fixture into dir and applies the corruption.
# Prints the extra CLI arguments and the needle the error must contain, tab-separated;
# prints "skip" when the case does not apply to that fixture.
prepare() {
  local fx="$1" case="$2" dir="$3"
  cp -r "$FIX/$fx" "$dir"
  "$PY" - "$fx" "$case" "$dir" <<'PYEOF'
import json, os, struct, sys, glob
fx, case, d = sys.argv[1:]
def cfgs():
    for p in glob.glob(d + "/**/*.json", recursive=True):
        if "tokenizer" in p or "parity" in p: continue
        yield p
def set_all(key, value):
    n = 0
    for p in cfgs():
        v = json.load(open(p))
        def walk(o):
            nonlocal n
            if isinstance(o, dict):
                if key in o: o[key] = value; n += 1
                for c in o.values(): walk(c)
        walk(v); json.dump(v, open(p, "w"))
    return n
weights = next(p for p in [d + "/model.safetensors", d + "/models/7b/consolidated.pth",
                            *sorted(glob.glob(d + "/multimodal_encoder/*.safetensors"))] if os.path.exists(p))
text = "--raw-ids 1,2,3 --to text --max-new-tokens 2 --temperature 0"
latent = fx in ("janusflow-tiny", "transfusion-tiny", "transfusion-vae-tiny", "emu2-tiny")
image = "--prompt a --to image --steps 1 --offline"
head = {"janusflow-tiny": "language_model.lm_head.weight", "emu2-tiny": "model.decoder.lm.lm_head.weight",
        "transfusion-tiny": "to_text_logits.weight", "transfusion-vae-tiny": "to_text_logits.weight"}.get(fx, "lm_head.weight")
def component(name):
    p = d + "/" + name
    return p if os.path.isdir(p) else None
if fx == "showo-tiny": text += " --image " + d + "/image.png"
out = ""
def emit(args, needle): print(args + "\t" + needle); sys.exit(0)
def skip(): print("skip"); sys.exit(0)
if case == "weights-truncated":
    b = open(weights, "rb").read(); open(weights, "wb").write(b[: len(b) // 2]); emit(text, os.path.basename(weights))
if case == "weights-zero":
    open(weights, "wb").write(b""); emit(text, os.path.basename(weights))
if case == "weights-garbage":
    n = os.path.getsize(weights); open(weights, "wb").write(os.urandom(n)); emit(text, os.path.basename(weights))
if case == "weights-header-huge":
    if not weights.endswith(".safetensors"): skip()
    b = bytearray(open(weights, "rb").read()); b[:8] = struct.pack("<Q", 1 << 62); open(weights, "wb").write(b); emit(text, os.path.basename(weights))
if case in ("weights-nan-head", "weights-i64-head", "weights-nan-decoder"):
    if not weights.endswith(".safetensors"): skip()
    import torch
    from safetensors.torch import load_file, save_file
    files = sorted(glob.glob(d + "/**/*.safetensors", recursive=True))
    suffix = "decoder.conv_out.bias" if case == "weights-nan-decoder" else head
    for f in files:
        t = load_file(f)
        k = [k for k in t if k.endswith(suffix)]
        if not k: continue
        t[k[0]] = t[k[0]].to(torch.int64) if case == "weights-i64-head" else torch.full_like(t[k[0]], float("nan"))
        save_file(t, f)
        if case == "weights-nan-decoder":
            if latent: emit(image, "decoded pixels")  # the VAE: through one whole image
            emit("decode --codes 0,0,0,0 --height 2 --width 2", "decoded pixels")
        emit(text, "I64" if case == "weights-i64-head" else "NaN")
    skip()
fields = {
    "maxpos-huge": ("max_position_embeddings", 10**12, "max_position_embeddings"),
    "maxpos-zero": ("max_position_embeddings", 0, "max_position_embeddings"),
    "eps-negative": ("rms_norm_eps", -1, "eps"),
    "ln-eps-negative": ("layer_norm_eps", -1, "eps"),
    "rope-theta-zero": ("rope_theta", 0, "rope_theta"),
    "vocab-zero": ("vocab_size", 0, "vocab_size"),
    "hidden-zero": ("hidden_size", 0, "hidden_size"),
    "heads-zero": ("num_attention_heads", 0, "num_attention_heads"),
    "image-std-zero": ("image_std", [0, 0, 0], "image_std"),
    "channel-mult-empty": ("channel_multiplier", [], "channel_multiplier"),
    "num-vq-tokens-zero": ("num_vq_tokens", 0, "num_vq_tokens"),
    "resolution-zero": ("vq_config.resolution", 0, "resolution"),
    "architectures-empty": ("architectures", [], "architectures"),
    "mask-image-logits-str": ("mask_image_logits", "yes", "mask_image_logits"),
    "min-pixels-huge": ("min_pixels", 10**9, "min_pixels"),
}
if case in fields:
    k, v, needle = fields[case]
    if "." in k:  # a field of one section only (Show-o's MAGVIT states an unused resolution)
        sec, k = k.split(".")
        p = d + "/config.json"
        if not os.path.exists(p): skip()
        c = json.load(open(p))
        if k not in c.get(sec, {}): skip()
        c[sec][k] = v; json.dump(c, open(p, "w")); emit(text, needle)
    if set_all(k, v) == 0: skip()
    emit(text, needle)
if case in ("preproc-array", "gen-array", "procconf-array", "config-array", "config-broken"):
    name = {"preproc-array": "preprocessor_config.json", "gen-array": "generation_config.json",
            "procconf-array": "processor_config.json"}.get(case, "config.json")
    p = d + "/" + name
    if not os.path.exists(p): skip()
    open(p, "w").write("{broken" if case == "config-broken" else "[]"); emit(text, name)
if case == "tokenizer-broken":
    p = d + "/tokenizer.json" if os.path.exists(d + "/tokenizer.json") else d + "/tokenizer/text_tokenizer.json"
    if not os.path.exists(p): skip()
    open(p, "w").write('{"model": 3}'); emit(text, "tokenizer")
if case.startswith("shard-"):
    if not weights.endswith(".safetensors"): skip()
    shard = {"shard-dotdot": "../../etc/passwd", "shard-abs": "/etc/passwd", "shard-sep": "a/b.safetensors"}[case]
    os.rename(weights, d + "/../moved.safetensors")
    json.dump({"weight_map": {"x": shard}}, open(d + "/model.safetensors.index.json", "w")); emit(text, shard)
if case == "image-empty":
    open(d + "/bad.png", "wb").write(b""); emit(text + " --image " + d + "/bad.png", "bad.png")
if case == "image-text":
    open(d + "/bad.png", "w").write("not an image"); emit(text + " --image " + d + "/bad.png", "bad.png")
if case == "image-bomb":
    import zlib
    w = h = 20000
    raw = zlib.compress(b"\0" * (1 + 3 * w) * 64)
    def chunk(t, b): return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    open(d + "/bomb.png", "wb").write(png); emit(text + " --image " + d + "/bomb.png", "bomb.png")
if case == "mask-wrong-size":
    from PIL import Image
    Image.new("RGB", (3, 5)).save(d + "/m.png")
    emit("--raw-ids 1,2,3 --to image --image " + d + "/image.png --mask " + d + "/m.png", "mask")
# component folders, noise files and diffusion configs (the latent families)
if case == "vae-missing":
    if not component("vae"): skip()
    import shutil; shutil.rmtree(d + "/vae")
    emit(image, "vae")
if case == "vae-config-broken":
    if not component("vae"): skip()
    open(d + "/vae/config.json", "w").write("{broken"); emit(text, "config.json")
if case == "vae-weights-truncated":
    if not component("vae"): skip()
    w = d + "/vae/diffusion_pytorch_model.safetensors"
    b = open(w, "rb").read(); open(w, "wb").write(b[: len(b) // 2]); emit(text, "diffusion_pytorch_model.safetensors")
if case == "vae-latent-channels":
    if not component("vae"): skip()
    c = json.load(open(d + "/vae/config.json")); c["latent_channels"] = 3
    json.dump(c, open(d + "/vae/config.json", "w")); emit(image, "latent")
if case == "vae-groups-bad":
    if not component("vae"): skip()
    c = json.load(open(d + "/vae/config.json")); c["norm_num_groups"] = 5
    json.dump(c, open(d + "/vae/config.json", "w")); emit(text, "norm_num_groups")
if case == "unet-missing":
    if not component("unet"): skip()
    import shutil; shutil.rmtree(d + "/unet"); emit(image, "unet")
if case == "unet-config-bad":
    if not component("unet"): skip()
    c = json.load(open(d + "/unet/config.json")); c["block_out_channels"] = [16]
    json.dump(c, open(d + "/unet/config.json", "w")); emit(text, "unet")
if case == "scheduler-broken":
    if not component("scheduler"): skip()
    open(d + "/scheduler/scheduler_config.json", "w").write("[]"); emit(text, "scheduler_config.json")
if case == "noise-wrong-shape":
    if not latent: skip()
    import numpy as np
    np.save(d + "/n.npy", np.zeros(7, dtype=np.float32)); emit(image + " --noise-normal " + d + "/n.npy", "noise-normal")
if case == "noise-nan":
    if not latent: skip()
    import numpy as np
    np.save(d + "/n.npy", np.full(1 << 16, np.nan, dtype=np.float32)); emit(image + " --noise-normal " + d + "/n.npy", "noise-normal")
if case == "steps-zero":
    if not latent: skip()
    emit(image.replace("--steps 1", "--steps 0"), "steps")
if case == "tf-config-latent-zero":
    if not fx.startswith("transfusion"): skip()
    c = json.load(open(d + "/config.json")); c["dim_latent"] = 0
    json.dump(c, open(d + "/config.json", "w")); emit(text, "dim_latent")
if case == "tf-config-shape-bad":
    if not fx.startswith("transfusion"): skip()
    c = json.load(open(d + "/config.json")); c["modality_default_shape"] = [0, 4]
    json.dump(c, open(d + "/config.json", "w")); emit(image, "modality_default_shape")
args = {
    "num-zero": ("--num 0", "`num`"), "num-huge": ("--num 1000000", "`num`"), "num-negative": ("--num -1", "--num"),
    "top-k-negative": ("--top-k -1", "--top-k"), "top-k-zero": ("--top-k 0", "top-k"),
    "top-p-two": ("--top-p 2", "top-p"), "temperature-nan": ("--temperature NaN", "temperature"),
    "max-new-huge": ("--max-new-tokens 1000000000000", "max-new-tokens"),
    "steps-huge": ("--steps 1000000000", "steps"), "cfg-inf": ("--cfg inf", "cfg"),
    "size-huge": ("--size 100000x100000", "size"), "noise-missing": ("--noise-uniform " + d + "/none.npy", "noise-uniform"),
}
if case in args:
    a, needle = args[case]
    base = text.replace("--max-new-tokens 2", "") if "max-new" in case else text
    emit(base + " " + a, needle)
skip()
PYEOF
}

CASES=(weights-truncated weights-zero weights-garbage weights-header-huge weights-nan-head weights-i64-head weights-nan-decoder
  maxpos-huge maxpos-zero eps-negative ln-eps-negative rope-theta-zero vocab-zero hidden-zero heads-zero image-std-zero
  channel-mult-empty num-vq-tokens-zero resolution-zero architectures-empty mask-image-logits-str min-pixels-huge
  preproc-array gen-array procconf-array config-array config-broken tokenizer-broken shard-dotdot shard-abs shard-sep
  image-empty image-text image-bomb mask-wrong-size num-zero num-huge num-negative top-k-negative top-k-zero top-p-two
  temperature-nan max-new-huge steps-huge cfg-inf size-huge noise-missing
  vae-missing vae-config-broken vae-weights-truncated vae-latent-channels vae-groups-bad unet-missing unet-config-bad
  scheduler-broken noise-wrong-shape noise-nan steps-zero tf-config-latent-zero tf-config-shape-bad
  out-symlink out-fifo out-dir out-device json-symlink)

run_case() {
  local fx="$1" case="$2" dir="$WORK/$fx-$case" outdir="$WORK/out-$fx-$case"
  mkdir -p "$outdir"
  local extra needle target="" sub=generate
  if [[ "$case" == out-* || "$case" == json-* ]]; then
    cp -r "$FIX/$fx" "$dir"
    extra="--raw-ids 1,2,3 --to text --max-new-tokens 2 --quiet"
    [[ "$fx" == showo-tiny ]] && extra="$extra --image $dir/image.png"
    echo keep > "$outdir/victim"
    case "$case" in
      out-symlink) ln -s "$outdir/victim" "$outdir/t.txt"; extra="$extra --out t.txt"; needle="symbolic link";;
      json-symlink) ln -s "$outdir/victim" "$outdir/t.json"; extra="$extra --json t.json"; needle="symbolic link";;
      out-fifo) mkfifo "$outdir/t.txt"; extra="$extra --out t.txt"; needle="FIFO";;
      out-dir) mkdir "$outdir/t.txt"; extra="$extra --out t.txt"; needle="directory";;
      out-device) extra="$extra --out /dev/null"; needle="device";;
    esac
  else
    local line; line="$(prepare "$fx" "$case" "$dir")"
    [[ "$line" == skip ]] && { CELL[$case,$fx]="-"; return; }
    extra="${line%%$'\t'*}"; needle="${line#*$'\t'}"
    if [[ "$extra" == decode* ]]; then sub=decode; extra="${extra#decode } --out o.png"
    else extra="$extra --out o.png --json o.json --quiet"; fi
  fi
  local before; before="$(cd "$outdir" && ls -la --time-style=+%s | sort)"
  local err rc
  # shellcheck disable=SC2086
  err="$(cd "$outdir" && ulimit -v 8388608 && timeout 60 "$BIN" "$sub" --model "$dir" $extra 2>&1 >/dev/null)"; rc=$?
  local after; after="$(cd "$outdir" && ls -la --time-style=+%s | sort)"
  local verdict=ok
  if [[ "$err" == *panicked* || $rc -eq 101 ]]; then verdict=PANIC
  elif (( rc > 128 || rc == 124 )); then verdict=ABORT
  elif (( rc == 0 )); then verdict=GARBAGE
  elif [[ "$err" != *"$needle"* ]]; then verdict=NAMELESS
  elif [[ "$before" != "$after" ]] || [[ "$(cat "$outdir/victim" 2>/dev/null || echo keep)" != keep ]]; then verdict=CLOBBER
  fi
  CELL[$case,$fx]="$verdict"
  TOTAL=$((TOTAL + 1))
  if [[ $verdict != ok ]]; then
    BAD=$((BAD + 1))
    echo "$verdict $fx $case (rc $rc): ${err:0:300}" >&2
  fi
  rm -rf "$dir" "$outdir" "$WORK/moved.safetensors"
}

[[ -n "${ONLY_FIXTURES:-}" ]] && read -ra FIXTURES <<< "$ONLY_FIXTURES"
[[ -n "${ONLY_CASES:-}" ]] && read -ra CASES <<< "$ONLY_CASES"
for case in "${CASES[@]}"; do
  for fx in "${FIXTURES[@]}"; do
    run_case "$fx" "$case"
  done
done

printf '%-24s' case; for fx in "${FIXTURES[@]}"; do printf ' %-20s' "$fx"; done; echo
for case in "${CASES[@]}"; do
  printf '%-24s' "$case"
  for fx in "${FIXTURES[@]}"; do printf ' %-20s' "${CELL[$case,$fx]}"; done
  echo
done
echo "runs: $TOTAL, not ok: $BAD"
[[ $BAD -eq 0 ]]
