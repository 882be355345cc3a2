"""Synthetic aerial scenes for the demo dataset: houses with shaded, tiled roofs, trees, roads and
cars, and the exact roof mask of each.

Scenes are drawn with numpy + OpenCV at SS x the output size and area-averaged down, so masks get
DIDA's anti-aliased edges. Only data.demo uses this module, and only when it generates images, so
the app's first page never pays for OpenCV.
"""
from __future__ import annotations

import cv2
import numpy as np

SS = 2  # supersampling factor: draw hard edges at SS*size, area-average down to anti-alias
SUN_AZIMUTH = 0.75 * np.pi  # sun roughly from the upper left, as in a morning scene

ROOFS = [(165, 80, 60), (140, 65, 50), (178, 105, 75), (120, 70, 55),  # red/brown tiles
         (110, 108, 110), (145, 142, 138), (72, 72, 78), (55, 58, 66), (100, 85, 70)]  # grey, dark
TILED = 4  # ROOFS[:TILED] get visible rows of tiles
GRASS, DRY = np.float32([72, 92, 48]), np.float32([128, 118, 88])
PAVING = [(150, 146, 138), (170, 160, 140), (120, 118, 115)]
TREE = np.float32([42, 64, 34])


def _noise(rng, n, cells):
    """Smooth value noise in about [0, 1]: a cells x cells random grid upsampled to n x n."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (n, n), interpolation=cv2.INTER_CUBIC)


def _cover(shape, poly):
    """Anti-aliased coverage of a polygon in its tight box: (box slices, float32 0..1) or None."""
    pts = np.asarray(poly, np.float64).reshape(-1, 2)
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 2, [shape[1], shape[0]])
    if x0 >= x1 or y0 >= y1:
        return None
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    # shift=4: 1/16 px vertex precision, so thin rotated shapes keep their true area
    cv2.fillPoly(m, [np.round((pts - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return (slice(y0, y1), slice(x0, x1)), m.astype(np.float32) / 255


def _paint(img, poly, colour, tex=None, amp=0.0, mul=None):
    """Blend an RGB colour (mottled by tex, amp) into img over poly; with mul, darken instead."""
    c = _cover(img.shape, poly)
    if c is None:
        return
    box, a = c[0], c[1][..., None]
    if mul is not None:  # shadows: darken whatever is already there
        img[box] *= 1 - a * (1 - mul)
        return
    col = np.float32(colour) * (1 + amp * (tex[box][..., None] - 0.5) if tex is not None else 1)
    img[box] = img[box] * (1 - a) + col * a


def _rect(c, u, length, width):
    """Corners of a rectangle centred at c with its length along unit vector u."""
    v = np.array([-u[1], u[0]])
    return np.array([c + s * u * length / 2 + t * v * width / 2
                     for s, t in [(-1, -1), (1, -1), (1, 1), (-1, 1)]])


def _roof_planes(c, u, length, width, kind):
    """Roof planes as (polygon, horizontal downhill direction) pairs plus ridge lines."""
    v = np.array([-u[1], u[0]])
    a, b, cc, d = _rect(c, u, length, width)  # -u-v, +u-v, +u+v, -u+v
    if kind == "flat":
        return [(np.array([a, b, cc, d]), np.zeros(2))], []
    r = max(length - width, 0) / 2 if kind == "hip" else length / 2  # hip ridge ends at 45 degrees
    p1, p2 = c - u * r, c + u * r  # ridge ends
    planes = [(np.array([a, b, p2, p1]), -v), (np.array([d, cc, p2, p1]), v)]
    lines = [(p1, p2)]
    if kind == "hip":
        planes += [(np.array([b, cc, p2]), u), (np.array([a, d, p1]), -u)]
        lines += [(p1, a), (p1, d), (p2, b), (p2, cc)]
    return planes, lines


def _draw_roof(img, part, colour, sun, tex, size_px, rng):
    """Draw one roof part: shaded planes, tile rows, ridge/hip lines, maybe a chimney or panels."""
    c, u, length, width, kind = part
    planes, lines = _roof_planes(c, u, length, width, kind)
    period = max(2.0, size_px / 110)  # tile rows every ~2.3 output px at 256 px
    tiled = colour in ROOFS[:TILED]
    for poly, n in planes:
        shade = 1 + 0.38 * float(n @ sun)  # planes facing the sun are brighter
        cov = _cover(img.shape, poly)
        if cov is None:
            continue
        box, a = cov
        ys, xs = np.mgrid[box[0], box[1]].astype(np.float32)
        rows = np.sin((xs * n[0] + ys * n[1]) * (2 * np.pi / period)) if tiled else 0
        g = shade * (1 + 0.12 * rows + 0.25 * (tex[box] - 0.5))
        img[box] = img[box] * (1 - a[..., None]) + np.float32(colour) * (g * a)[..., None]
    edge = tuple(float(x) for x in np.clip(np.float32(colour) * 1.25 + 10, 0, 255))
    for p, q in lines:
        cv2.line(img, tuple(np.round(p * 16).astype(int)), tuple(np.round(q * 16).astype(int)),
                 edge, max(1, round(size_px / 200)), cv2.LINE_AA, shift=4)
    if kind == "flat":  # parapet: a darker inner field
        _paint(img, _rect(c, u, length - width * 0.12, width * 0.88), np.float32(colour) * 0.85,
               tex, 0.3)
    v = np.array([-u[1], u[0]])
    side = v if float(v @ sun) > 0 else -v
    if kind != "flat" and rng.random() < 0.3:  # solar panels on the sunny plane
        pc = c + side * width / 4 + u * rng.uniform(-0.2, 0.2) * length
        panel = _rect(pc, u, length * rng.uniform(0.3, 0.55), width * 0.3)
        _paint(img, panel, (38, 46, 72), tex, 0.5)
    if rng.random() < 0.4:  # chimney with its own small shadow
        cc = c + u * rng.uniform(-0.35, 0.35) * length + side * rng.uniform(-0.3, 0.3) * width
        ch = _rect(cc, u, width * 0.1, width * 0.1)
        _paint(img, ch - sun * width * 0.08, None, mul=0.55)
        _paint(img, ch, (110, 70, 60))


def _draw_crown(img, ctr, r, poly, sun, tex, tone):
    """A tree crown: lit on the sun side like a ball, leafy from the shared fine texture."""
    cov = _cover(img.shape, poly)
    if cov is not None:
        box, a = cov
        ys, xs = np.mgrid[box[0], box[1]].astype(np.float32)
        lit = 1 + 0.45 * ((xs - ctr[0]) * sun[0] + (ys - ctr[1]) * sun[1]) / r
        g = TREE * tone * (lit * (0.6 + 0.8 * tex[box]))[..., None]
        img[box] = img[box] * (1 - a[..., None]) + g * a[..., None]


def _road(img, occ, rng, n, width):
    """A straight or gently curved road across the scene, with kerbs, dashes and a few cars."""
    ang = rng.uniform(0, np.pi)
    d = np.array([np.cos(ang), np.sin(ang)])
    p0, p2 = n / 2 + (rng.uniform(-0.35, 0.35, 2) * n) - d * n, n / 2 + d * n
    p1 = (p0 + p2) / 2 + rng.normal(0, 0.15 * n, 2) * (rng.random() < 0.5)  # curved half the time
    t = np.linspace(0, 1, 120)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t ** 2 * p2
    ipts = [np.round(pts * 16).astype(np.int32)]
    cv2.polylines(occ, [np.round(pts).astype(np.int32)], False, 1, int(width * 1.6))
    cv2.polylines(img, ipts, False, (165, 160, 150), int(width * 1.15), cv2.LINE_AA, shift=4)
    grey = rng.uniform(80, 110)
    cv2.polylines(img, ipts, False, (grey, grey, grey * 1.02), int(width), cv2.LINE_AA, shift=4)
    for k in range(0, len(pts) - 3, 6):  # dashed centre line
        cv2.line(img, tuple(ipts[0][k]), tuple(ipts[0][k + 3]), (205, 205, 195),
                 max(1, int(width / 25)), cv2.LINE_AA, shift=4)
    for k in rng.choice(len(pts) - 1, rng.integers(0, 5), replace=False):  # parked cars
        tang = pts[k + 1] - pts[k]
        tang /= np.linalg.norm(tang) + 1e-9
        off = np.array([-tang[1], tang[0]]) * width * 0.3 * rng.choice([-1, 1])
        _paint(img, _rect(pts[k] + off, tang, width * 0.4, width * 0.18), rng.uniform(30, 220, 3))
    return ang


def _free(occ, poly):
    """True when poly covers no occupied pixel (roads, planned houses and their margins)."""
    box, cov = _cover(occ.shape, poly)
    return not occ[box][cov > 0.5].any()


def _place(occ, rng, n, length, width, ang, margin):
    """Find a free spot for a length x width footprint near angle ang; None after 40 tries."""
    for _ in range(40):
        c = rng.uniform(0.08, 0.92, 2) * n
        a = ang + rng.normal(0, 0.08) if rng.random() < 0.75 else rng.uniform(0, np.pi)
        u = np.array([np.cos(a), np.sin(a)])
        if _free(occ, _rect(c, u, length + margin, width + margin)):
            return c, u
        length, width = length * 0.97, width * 0.97
    return None


def _plan_houses(rng, n, occ, mask, ang):
    """Footprints until the roof fraction reaches a DIDA-like target; fills occ and mask (0..1).

    Returns [(parts, roof colour, height)], each part (centre, long-axis unit vector, length,
    width, roof kind); an L-shaped house has a perpendicular gable wing as a second part.
    """
    count, target = rng.integers(1, 7), rng.uniform(0.07, 0.24)
    houses, tries = [], 0
    while len(houses) < 6 and tries < 12 and (len(houses) < count or mask.mean() < 0.05):
        tries += 1
        aspect = rng.uniform(1.15, 1.9)
        width = np.sqrt(target / count / aspect) * n * rng.uniform(0.85, 1.15)
        spot = _place(occ, rng, n, width * aspect, width, ang, 0.25 * width)
        if spot is None:
            continue
        c, u = spot
        kind = rng.choice(["gable", "hip", "flat"], p=[0.5, 0.38, 0.12])
        parts = [(c, u, width * aspect, width, kind)]
        if rng.random() < 0.35 and kind != "flat":  # L-shape: a perpendicular wing on one end
            v = np.array([-u[1], u[0]])
            ww, ext = width * rng.uniform(0.6, 0.9), width * rng.uniform(0.3, 0.8)
            s1, s2 = rng.choice([-1, 1], 2)
            wc = c + u * s1 * (width * aspect - ww) / 2 + v * s2 * (width / 2 + ext) / 2
            if _free(occ, _rect(wc, v, width / 2 + ext + 0.25 * width, ww + 0.25 * width)):
                parts.append((wc, v * s2, width / 2 + ext, ww, "gable"))
        for pc, pu, pl, pw, _ in parts:
            box, cov = _cover(occ.shape, _rect(pc, pu, pl + 0.3 * width, pw + 0.3 * width))
            occ[box] |= cov > 0
            box, cov = _cover(mask.shape, _rect(pc, pu, pl, pw))
            mask[box] = np.maximum(mask[box], cov)
        houses.append((parts, ROOFS[rng.integers(len(ROOFS))], rng.uniform(0.25, 0.5) * width))
        if mask.mean() > 0.3:
            break
    return houses


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One aerial scene: ((size, size, 4) uint8 RGBA, (size, size) uint8 roof mask, 0-255)."""
    n = size * SS
    sun_ang = SUN_AZIMUTH + rng.normal(0, 0.15)
    sun = np.array([np.cos(sun_ang), -np.sin(sun_ang)])  # image coords: y points down
    # ground: grass/dry-soil mix at a coarse scale, brightness mottling at two finer scales
    mix = np.clip((_noise(rng, n, 3) - 0.5) * 2.5 + rng.uniform(-0.3, 0.5), 0, 1)[..., None]
    img = GRASS * (1 - mix) + DRY * mix
    tex = _noise(rng, n, max(8, size // 3))  # fine texture shared by ground, roofs, trees, paving
    img *= (0.7 + 0.4 * _noise(rng, n, 12) + 0.15 * _noise(rng, n, 48) + 0.25 * tex)[..., None]
    occ = np.zeros((n, n), np.uint8)  # where houses may no longer go
    mask = np.zeros((n, n), np.float32)
    ang = rng.uniform(0, np.pi)
    for _ in range(rng.choice(3, p=[0.2, 0.6, 0.2])):
        ang = _road(img, occ, rng, n, rng.uniform(0.06, 0.1) * n)
    houses = _plan_houses(rng, n, occ, mask, ang)
    for parts, _, _ in houses:  # paving beside houses: grey like some roofs, but no roof
        c, u, length, width, _ = parts[0]
        if rng.random() < 0.6:
            v = np.array([-u[1], u[0]]) * rng.choice([-1, 1])
            _paint(img, _rect(c + v * width * 0.85, u, length * rng.uniform(0.3, 0.8), width * 0.5),
                   PAVING[rng.integers(len(PAVING))], tex, 0.3)
    for _ in range(rng.integers(0, 4)):  # sheds, garages: small flat roofs DIDA leaves unlabelled
        w = rng.uniform(0.04, 0.07) * n
        spot = _place(occ, rng, n, w * 1.4, w, ang, 0.1 * w)
        if spot is not None:
            shed = _rect(spot[0], spot[1], w * 1.4, w)
            _paint(img, shed - sun * w * 0.3, None, mul=0.5)
            _paint(img, shed, np.full(3, rng.uniform(150, 215)), tex, 0.2)
    trees = []
    for _ in range(rng.integers(2, 22)):
        r = rng.uniform(0.02, 0.055) * n
        if houses and rng.random() < 0.3:  # next to a house, sometimes overlapping its edge
            c, u, length, width, _ = houses[rng.integers(len(houses))][0][0]
            ctr = c + _rect(np.zeros(2), u, length, width)[rng.integers(4)] * rng.uniform(1.0, 1.4)
        else:
            ctr = rng.uniform(0, n, 2)
        k = np.arange(14) * (2 * np.pi / 14)
        rad = r * rng.uniform(0.8, 1.1, 14)
        trees.append((ctr, r, ctr + np.stack([np.cos(k) * rad, np.sin(k) * rad], 1)))
    # shadows fall away from the sun, all before any roof or crown is drawn over them
    for parts, _, height in houses:
        for pc, pu, pl, pw, _ in parts:
            foot = _rect(pc, pu, pl, pw)
            _paint(img, cv2.convexHull(np.vstack([foot, foot - sun * height]).astype(np.float32)),
                   None, mul=0.45)
    for ctr, r, poly in trees:
        _paint(img, poly - sun * r * 0.9, None, mul=0.55)
    for parts, colour, _ in houses:
        for part in parts:
            _draw_roof(img, part, colour, sun, tex, n, rng)
    for ctr, r, poly in trees:
        _draw_crown(img, ctr, r, poly, sun, tex, rng.uniform(0.8, 1.25))
    img = cv2.GaussianBlur(img, (0, 0), 0.6 * SS / 2)  # slight optical blur
    rgb = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    rgb = np.clip(rgb + rng.normal(0, 2.5, rgb.shape).astype(np.float32), 0, 255)  # sensor noise
    rgba = np.dstack([np.round(rgb).astype(np.uint8), np.full((size, size), 255, np.uint8)])
    if rng.random() < 0.7:  # DIDA-style redactions: black, alpha 0; often against an edge
        for _ in range(rng.integers(1, 3)):
            w, h = (rng.uniform(0.08, 0.3, 2) * size).astype(int) + 2
            x, y = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
            if rng.random() < 0.6:
                x = 0 if rng.random() < 0.5 else size - w
            rgba[y:y + h, x:x + w] = 0
    roof = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return rgba, np.round(roof * 255).astype(np.uint8)
