#!/usr/bin/env python3
"""Held-out scores of a demo model through OUR CLI (`target/release/any2any generate`), classified by world.py.

    cargo build --release
    /root/venvs/hf5/bin/python scripts/train_demo/eval_cli.py --model examples/models/shapes-janus

text→image: the 54 captions × 2 seeds (one CLI run per seed, the 54 prompts as one batch, the model's
defaults: CFG from generation_config.json, temperature 1); image→text: 100 freshly rendered pictures of
several sizes (seeded draws the training never saw), `Describe the image.`, greedy; the answer must equal
the caption. Optionally writes a grid PNG of the first seed's pictures (--grid).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import world  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def run(cli: Path, args: list[str]) -> str:
    r = subprocess.run([str(cli), "generate", *args, "--quiet"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"any2any failed ({r.returncode}): {r.stderr}")
    return r.stdout


def text_to_image(cli, model, seeds, tmp: Path, grid: Path | None):
    caps = world.all_captions()
    ok, n, misses, first = 0, 0, [], []
    attr = [0, 0, 0]  # colour, shape, background right
    for seed in seeds:
        out = tmp / f"t2i-{seed}.png"
        args = ["--model", str(model), "--to", "image", "--out", str(out), "--seed", str(seed)]
        for c in caps:
            args += ["--prompt", world.caption(*c)]
        run(cli, args)
        for i, c in enumerate(caps):
            img = np.asarray(Image.open(tmp / f"t2i-{seed}-{i}.png").convert("RGB"))
            if seed == seeds[0]:
                first.append(img)
            got = world.classify(img)
            for k in range(3):
                attr[k] += got is not None and got[k] == c[k]
            n += 1
            ok += got == c
            if got != c:
                misses.append((world.caption(*c), seed, got))
    if grid is not None:
        h, w = first[0].shape[:2]
        pad = 2
        rows, cols = 6, 9  # 54 = one row per colour, shapes × backgrounds across
        canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
        for i, img in enumerate(first):
            b, c, s = divmod(i, 18)[0], (i % 18) // 3, i % 3
            r, col = c, b * 3 + s
            canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
        Image.fromarray(canvas).quantize(64).save(grid, optimize=True)  # 64-colour palette: a small file
        print(f"grid of the seed-{seeds[0]} pictures: {grid} (rows: colours; columns: white, black, gray × circle, square, triangle)")
    print(f"  per attribute: colour {attr[0]}/{n}, shape {attr[1]}/{n}, background {attr[2]}/{n}")
    return ok, n, misses


def image_to_text(cli, model, n_images, seed, tmp: Path):
    rng = np.random.default_rng(seed)
    good, misses = 0, []
    attr = [0, 0, 0]
    for i in range(n_images):
        sc = world.random_scene(rng)
        size = int(rng.choice([48, 64, 80, 100, 128, 160]))
        p = tmp / f"i2t-{i}.png"
        Image.fromarray(world.render(*sc, size, rng)).save(p)
        text = run(cli, ["--model", str(model), "--image", str(p), "--prompt", world.QUESTION, "--to", "text",
                         "--max-new-tokens", "16"]).strip()
        good += text == world.caption(*sc)
        words = text.split()
        said = (words[1], words[2], words[5]) if len(words) == 7 else (None, None, None)
        for k in range(3):
            attr[k] += said[k] == sc[k]
        if text != world.caption(*sc):
            misses.append((world.caption(*sc), size, text))
    print(f"  per attribute: colour {attr[0]}/{n_images}, shape {attr[1]}/{n_images}, background {attr[2]}/{n_images}")
    return good, misses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=REPO / "examples/models/shapes-janus")
    ap.add_argument("--cli", type=Path, default=REPO / "target/release/any2any")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--i2t", type=int, default=100)
    ap.add_argument("--i2t-seed", type=int, default=2024)
    ap.add_argument("--grid", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ok, n, misses = text_to_image(args.cli, args.model, args.seeds, tmp, args.grid)
        print(f"text→image through the CLI ({len(world.all_captions())} prompts × seeds {args.seeds}): "
              f"{ok}/{n} = {100 * ok / n:.1f} % right in colour, shape and background")
        for m in misses[:12]:
            print("  miss:", m)
        if args.i2t:
            good, misses = image_to_text(args.cli, args.model, args.i2t, args.i2t_seed, tmp)
            print(f"image→text through the CLI ({args.i2t} fresh pictures, 48-160 px): {good}/{args.i2t} "
                  f"= {100 * good / args.i2t:.1f} % exact captions")
            for m in misses[:12]:
                print("  miss:", m)


if __name__ == "__main__":
    main()
