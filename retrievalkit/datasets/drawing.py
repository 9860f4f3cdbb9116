"""Drawing the mini benchmark's views: photo windows, projective warps, occluders, clutter and
photometric changes (see :mod:`retrievalkit.datasets.mini`). Randomness comes from the caller's
``numpy.random.Generator``."""
from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Photos = dict[str, Image.Image]
Pool = list[tuple[str, tuple[float, ...]]]  # (photo, window as fractions x1, y1, x2, y2)


def recolour(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    """A grey ("L") image mapped between two random colours; a colour image given a colour cast."""
    v = np.arange(256) / 255.0
    if img.mode == "L":
        lo, hi = rng.uniform(0.0, 0.5, 3), rng.uniform(0.5, 1.0, 3)
        lut = lo[:, None] + v[None, :] * (hi - lo)[:, None]
        img = img.convert("RGB")
    else:
        lut = rng.uniform(0.6, 1.2, 3)[:, None] * v[None, :]
    return img.point(np.clip(lut * 255, 0, 255).round().astype(int).ravel().tolist())


def random_crop(rng: np.random.Generator, img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A random window of ``img`` with the aspect of ``size`` (30-100% of the largest), resized to it."""
    W, H = img.size
    aspect = size[0] / size[1]
    w = min(W, H * aspect) * rng.uniform(0.3, 1.0)
    h = w / aspect
    x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
    return img.resize(size, Image.Resampling.BILINEAR, box=(x, y, x + w, y + h))


def window_of(photos: Photos, entry: tuple[str, tuple[float, ...]]) -> Image.Image:
    name, frac = entry
    sw, sh = photos[name].size
    return photos[name].crop(tuple(int(round(f * d)) for f, d in zip(frac, (sw, sh, sw, sh))))


def background(rng: np.random.Generator, photos: Photos, pool: Pool, size: tuple[int, int]) -> Image.Image:
    """A recoloured crop of the ``pool``, a third of the time blended with a second one."""
    bg = recolour(rng, random_crop(rng, window_of(photos, pool[int(rng.integers(len(pool)))]), size))
    if rng.random() < 0.3:
        other = recolour(rng, random_crop(rng, window_of(photos, pool[int(rng.integers(len(pool)))]), size))
        bg = Image.blend(bg, other, float(rng.uniform(0.3, 0.6)))
    return bg


def corners(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def homography(rng: np.random.Generator, box: np.ndarray, size: tuple[int, int], area: float,
                rotation: float, perspective: float, centre: np.ndarray) -> tuple[np.ndarray, float]:
    """The 3x3 map from source to canvas pixels, and its similarity scale.

    The ``box`` (x1, y1, x2, y2) is scaled to cover ``area`` of the canvas, tilted like a plane
    seen from one side (the far edge shortened by ``perspective`` and moved in by half that,
    corners jittered by a quarter of it), turned by ``rotation`` degrees and centred on ``centre``.
    """
    from skimage.transform import ProjectiveTransform

    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    k = math.sqrt(area * size[0] * size[1] / (bw * bh))
    local = np.array([[-bw, -bh], [bw, -bh], [bw, bh], [-bw, bh]], dtype=np.float64) * (k / 2)
    axis, far = int(rng.integers(2)), float(rng.choice([-1.0, 1.0]))
    on_far = np.sign(local[:, axis]) == far
    local[on_far, 1 - axis] *= 1 - perspective
    local[on_far, axis] *= 1 - perspective / 2
    local += rng.uniform(-1, 1, (4, 2)) * (perspective / 4) * np.array([bw, bh]) * k
    t = math.radians(rotation)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return ProjectiveTransform.from_estimate(corners(box), local @ R.T + centre).params, k


def apply(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ H.T
    return p[:, :2] / p[:, 2:]


def polygon_mask(size: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    m = Image.new("L", size, 0)
    ImageDraw.Draw(m).polygon([(float(x), float(y)) for x, y in pts], fill=255)
    return np.asarray(m) > 0


def shoelace(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def warp(canvas: Image.Image, img: Image.Image, window: np.ndarray, H: np.ndarray, scale: float,
          keep: np.ndarray | None = None) -> np.ndarray:
    """Paint the ``window`` (x1, y1, x2, y2) of ``img`` mapped by ``H`` on ``canvas``, except over
    ``keep``; return where it landed. Shrinking warps read a box-filtered reduction of ``img``."""
    factor = max(1, int(1 / scale))
    A = np.diag([1 / factor, 1 / factor, 1.0]) @ np.linalg.inv(H)  # canvas -> reduced source
    coeffs = tuple(float(c) for c in (A / A[2, 2]).ravel()[:8])
    warped = img.reduce(factor).transform(canvas.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
    mask = polygon_mask(canvas.size, apply(H, corners(window)))
    paint = mask if keep is None else mask & ~keep
    canvas.paste(warped, (0, 0), Image.fromarray(paint.astype(np.uint8) * 255))
    return mask


def occlude(rng: np.random.Generator, canvas: Image.Image, photos: Photos, pool: Pool, target: np.ndarray,
             fraction: float) -> np.ndarray:
    """Cover about ``fraction`` of the ``target`` mask with a band from one side of its bounding box
    (``fraction > 0.5``) or with one to three blobs inside it; return the occluders' mask."""
    ys, xs = np.nonzero(target)
    x1, x2, y1, y2 = float(xs.min()), float(xs.max() + 1), float(ys.min()), float(ys.max() + 1)
    W, H = canvas.size
    if fraction > 0.5:
        f, side = fraction * rng.uniform(1.0, 1.1), int(rng.integers(4))
        w, h = (x2 - x1) * f, (y2 - y1) * f
        bands = [(x1, y1, x1 + w, y2), (x2 - w, y1, x2, y2), (x1, y1, x2, y1 + h), (x1, y2 - h, x2, y2)]
        shapes = [("rectangle", bands[side])]
    else:
        n = int(rng.integers(1, 4))
        shapes = []
        for _ in range(n):
            a = fraction * target.sum() / n * rng.uniform(1.0, 1.4)
            aspect = rng.uniform(0.5, 2.0)
            w, h = math.sqrt(a * aspect), math.sqrt(a / aspect)
            cx, cy = x1 + rng.random() * (x2 - x1), y1 + rng.random() * (y2 - y1)
            kind = ("rectangle", "ellipse")[int(rng.integers(2))]
            shapes.append((kind, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
    occluded = np.zeros((H, W), dtype=bool)
    for kind, (bx1, by1, bx2, by2) in shapes:
        m = Image.new("L", (W, H), 0)
        getattr(ImageDraw.Draw(m), kind)([bx1, by1, max(bx2, bx1 + 1), max(by2, by1 + 1)], fill=255)
        if rng.random() < 0.3:
            fill = Image.new("RGB", (W, H), tuple(int(c) for c in rng.integers(0, 256, 3)))
        else:
            fill = random_crop(rng, piece(rng, photos, pool), (W, H))
        canvas.paste(fill, (0, 0), m)
        occluded |= np.asarray(m) > 0
    return occluded


def piece(rng: np.random.Generator, photos: Photos, pool: Pool) -> Image.Image:
    """A recoloured random crop (30-100% of each side) of a random window of the ``pool``."""
    window = window_of(photos, pool[int(rng.integers(len(pool)))])
    fw, fh = rng.uniform(0.3, 1.0, 2)
    x, y = rng.random() * (1 - fw) * window.width, rng.random() * (1 - fh) * window.height
    box = (int(x), int(y), int(x + max(1.0, fw * window.width)), int(y + max(1.0, fh * window.height)))
    return recolour(rng, window.crop(box))


def clutter(rng: np.random.Generator, canvas: Image.Image, photos: Photos, pool: Pool,
             keep: np.ndarray | None = None) -> None:
    """Paint one to three large and up to four small warped pieces of the ``pool`` on ``canvas``
    (not over ``keep``)."""
    for area in [(0.04, 0.25)] * int(rng.integers(1, 4)) + [(0.005, 0.03)] * int(rng.integers(0, 5)):
        paste_piece(rng, canvas, photos, pool, area, keep)


def paste_piece(rng: np.random.Generator, canvas: Image.Image, photos: Photos, pool: Pool,
                 area: tuple[float, float], keep: np.ndarray | None) -> None:
    img = piece(rng, photos, pool)
    box = np.array([0.0, 0.0, *img.size])
    centre = np.array(canvas.size) * rng.uniform(0.1, 0.9, 2)
    H, k = homography(rng, box, canvas.size, rng.uniform(*area), rng.uniform(-40, 40), rng.uniform(0, 0.25), centre)
    warp(canvas, img, box, H, k, keep)


def finish(rng: np.random.Generator, canvas: Image.Image, p: dict[str, Any]) -> Image.Image:
    """Gamma, contrast and colour cast (one lookup table per channel), a light gradient, then
    Gaussian blur and a JPEG round trip."""
    v = np.arange(256) / 255.0
    lut = ((v ** p["gamma"] - 0.5) * rng.uniform(0.8, 1.2) + 0.5)[None, :] * rng.uniform(0.9, 1.1, 3)[:, None]
    out = canvas.point(np.clip(lut * 255, 0, 255).round().astype(int).ravel().tolist())
    W, H = out.size
    t = rng.uniform(0, 2 * math.pi)
    ramp = ((np.arange(W)[None, :] - W / 2) * math.cos(t) + (np.arange(H)[:, None] - H / 2) * math.sin(t)) / max(W, H)
    shade = (1 + 2 * p["light"] * ramp).astype(np.float32)[..., None]
    out = Image.fromarray(np.clip(np.asarray(out, dtype=np.float32) * shade, 0, 255).round().astype(np.uint8))
    if p["blur"] > 0:
        out = out.filter(ImageFilter.GaussianBlur(p["blur"]))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(p["jpeg"]))
    with Image.open(buf) as im:
        return im.convert("RGB")
