"""MNIST-like handwritten-style digits rendered by avel, for the embedded CG-MNIST set (no download).

Each digit is drawn in one of the TrueType fonts that matplotlib ships (DejaVu Sans/Serif/Mono, STIX,
Computer Modern, in their upright, bold and italic cuts), then distorted like handwriting: a random affine
map (rotation, shear, anisotropic scale, shift), a random stroke width (dilation or erosion) and a blur, and
placed as MNIST places its digits: fitted into a 20×20 box and centred by its centre of mass in 28×28.
Every image draws from its own generator seeded by (seed, index): a seed gives the same images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CANVAS = 64  # drawing resolution before the MNIST-style fit
# matplotlib's bundled fonts whose digits are ordinary glyphs
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
)


@lru_cache(maxsize=1)
def fonts() -> tuple[ImageFont.FreeTypeFont, ...]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = tuple(ImageFont.truetype(str(folder / n), 44) for n in FONT_FILES if (folder / n).is_file())
    if not found:
        raise FileNotFoundError(f"no TrueType font found in {folder} (matplotlib's bundled fonts)")
    return found


def _affine(rng: np.random.Generator, strength: float) -> tuple[float, ...]:
    """Inverse affine coefficients (PIL's convention) of rotation, shear, scale about the canvas centre."""
    rot = np.deg2rad(rng.uniform(-15, 15) * strength)
    shear = rng.uniform(-0.35, 0.35) * strength
    sx, sy = np.exp(rng.uniform(-0.2, 0.2, 2) * strength)
    a = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]]) @ np.array(
        [[1.0, shear], [0.0, 1.0]]
    )
    a = a @ np.diag([sx, sy])
    inv = np.linalg.inv(a)
    c = np.array([CANVAS / 2, CANVAS / 2])
    offset = c - inv @ c
    return (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])


def mnist_fit(img: np.ndarray) -> np.ndarray:
    """MNIST's placement: the bounding box scaled to fit 20×20 (aspect kept), centred by mass in 28×28."""
    ys, xs = np.nonzero(img > 10)
    if len(ys) == 0:
        return np.zeros((28, 28), np.uint8)
    crop = Image.fromarray(img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    w, h = crop.size
    s = 20.0 / max(w, h)
    crop = crop.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    small = np.asarray(crop, dtype=np.float64)
    out = np.zeros((28, 28))
    total = small.sum()
    cy, cx = (np.indices(small.shape) * small).reshape(2, -1).sum(1) / max(total, 1e-9)
    y0, x0 = int(round(14 - cy)), int(round(14 - cx))
    y0, x0 = min(max(y0, 0), 28 - small.shape[0]), min(max(x0, 0), 28 - small.shape[1])
    out[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    out *= 255.0 / max(out.max(), 1e-9)  # MNIST strokes reach full intensity
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render_digit(digit: int, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """One (28, 28) uint8 digit, white on black like MNIST."""
    font = fonts()[rng.integers(len(fonts()))]
    img = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((0, 0), str(digit), font=font)
    x = (CANVAS - (box[2] - box[0])) / 2 - box[0]
    y = (CANVAS - (box[3] - box[1])) / 2 - box[1]
    draw.text((x, y), str(digit), fill=255, font=font)
    img = img.transform(img.size, Image.Transform.AFFINE, _affine(rng, strength), Image.Resampling.BILINEAR)
    stroke = rng.integers(-1, 3)  # -1 thinner, 0 as drawn, 1-2 thicker
    if stroke > 0:
        img = img.filter(ImageFilter.MaxFilter(2 * int(stroke) + 1))
    elif stroke < 0:
        img = img.filter(ImageFilter.MinFilter(3))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return mnist_fit(np.asarray(img))


RENDER_VERSION = 1  # bump when the rendering changes: cached digits of another version are not reused
PROGRESS_EVERY = 500  # images between progress callbacks


def render_digits(
    labels: np.ndarray,
    seed: int,
    offset: int = 0,
    strength: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(N, 28, 28) uint8 images of ``labels``; image i draws from the generator seeded (seed, offset + i).
    ``progress(n)`` is called with the images rendered since its last call."""
    out = np.empty((len(labels), 28, 28), np.uint8)
    for i, d in enumerate(labels):
        out[i] = render_digit(int(d), np.random.default_rng([seed, offset + i]), strength)
        if progress is not None and (i + 1) % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    if progress is not None and len(labels) % PROGRESS_EVERY:
        progress(len(labels) % PROGRESS_EVERY)
    return out


def cache_dir() -> Path:
    """Where rendered digits are kept: $AVEL_CACHE, else $XDG_CACHE_HOME/avel, else ~/.cache/avel."""
    if os.environ.get("AVEL_CACHE"):
        return Path(os.environ["AVEL_CACHE"]) / "digits"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "avel" / "digits"


def cached_render(
    labels: np.ndarray, seed: int, offset: int = 0, progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """``render_digits`` through a cache: the same labels, seed, offset and renderer version read the .npy
    written the first time (rendering is the costly part: ~0.5 ms a digit); an unreadable cache file is
    rendered again. Writes are atomic (a temporary file renamed)."""
    labels = np.asarray(labels, dtype=np.int64)
    key = hashlib.sha256(labels.tobytes() + f"{seed},{offset},{RENDER_VERSION}".encode()).hexdigest()[:24]
    path = cache_dir() / f"digits-{len(labels)}-{key}.npy"
    try:
        cached = np.load(path)
        if cached.shape == (len(labels), 28, 28) and cached.dtype == np.uint8:
            if progress is not None:
                progress(len(labels))
            return cached
    except (OSError, ValueError):
        pass
    images = render_digits(labels, seed, offset, progress=progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, images)
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only costs the next run the rendering again
    return images
