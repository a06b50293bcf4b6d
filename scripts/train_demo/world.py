"""The synthetic "shapes" world of the demo models (issue 11), and the program that checks a picture.

A square canvas of one background colour with one filled shape (circle, axis-aligned square, isosceles
triangle apex up) of one of six colours, its side or diameter 35-70 % of the canvas, fully inside.
Caption: ``a {colour} {shape} on a {background} background``; the understanding question is
``Describe the image.``. ``classify`` reads a picture back: background = the border's colour, shape
colour = the dominant colour away from it, shape = the fill ratio of its bounding box (circle ~ pi/4,
square ~ 1, triangle ~ 1/2). The Rust twin is ``any2any_test_util::shapes``.
"""

from __future__ import annotations

import numpy as np

BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
QUESTION = "Describe the image."


def caption(colour: str, shape: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def all_captions() -> list[tuple[str, str, str]]:
    return [(c, s, b) for b in BACKGROUNDS for c in COLOURS for s in SHAPES]


def render(colour: str, shape: str, background: str, size: int, rng: np.random.Generator,
           extent: tuple[float, float] = (0.35, 0.70), jitter: float | None = None) -> np.ndarray:
    """One picture, ``size``×``size`` RGB uint8 (hard edges, exact palette colours).

    ``extent`` narrows the shape's side/diameter range (fraction of the canvas) and ``jitter`` (a fraction of
    the canvas) places the shape at most that far from the centre instead of anywhere: a narrower draw of
    the same world, used for the text→image training pictures (see train_janus.py).
    """
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUNDS[background]
    d = int(round(rng.uniform(*extent) * size))
    d = max(d, 2)
    if jitter is None:
        x0 = int(rng.integers(0, size - d + 1))
        y0 = int(rng.integers(0, size - d + 1))
    else:
        c, j = (size - d) / 2, jitter * size
        x0, y0 = (int(round(np.clip(c + rng.uniform(-j, j), 0, size - d))) for _ in range(2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    u, v = xx - x0, yy - y0  # inside the d×d box: 0 < u, v < d
    if shape == "square":
        m = (u > 0) & (u < d) & (v > 0) & (v < d)
    elif shape == "circle":
        r = d / 2
        m = (u - r) ** 2 + (v - r) ** 2 <= r * r
    else:  # apex (d/2, 0), base v = d from u = 0 to u = d
        m = (v > 0) & (v < d) & (np.abs(u - d / 2) <= v / 2)
    img[m] = COLOURS[colour]
    return img


def random_scene(rng: np.random.Generator) -> tuple[str, str, str]:
    return (
        list(COLOURS)[int(rng.integers(6))],
        SHAPES[int(rng.integers(3))],
        list(BACKGROUNDS)[int(rng.integers(3))],
    )


def _nearest(px: np.ndarray, table: dict[str, tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    names = list(table)
    pal = np.array([table[n] for n in names], np.float64)
    d = ((px[..., None, :].astype(np.float64) - pal) ** 2).sum(-1)
    return d.argmin(-1), np.sqrt(d.min(-1))


def classify(img: np.ndarray) -> tuple[str, str, str] | None:
    """(colour, shape, background) of a picture, or None when no shape is found."""
    img = np.asarray(img)[..., :3]
    h, w = img.shape[:2]
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bidx, _ = _nearest(border, BACKGROUNDS)
    background = list(BACKGROUNDS)[int(np.bincount(bidx, minlength=3).argmax())]
    bg = np.array(BACKGROUNDS[background], np.float64)
    far = np.sqrt(((img.astype(np.float64) - bg) ** 2).sum(-1)) > 60
    if far.sum() < 4:
        return None
    cidx, cdist = _nearest(img, COLOURS)
    votes = np.bincount(cidx[far & (cdist < 80)], minlength=6)
    if votes.sum() == 0:
        return None
    ci = int(votes.argmax())
    colour = list(COLOURS)[ci]
    m = far & (cidx == ci) & (cdist < 80)
    rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    fill = m.sum() / area
    shape = "square" if fill > 0.89 else "circle" if fill > 0.64 else "triangle"
    return colour, shape, background
