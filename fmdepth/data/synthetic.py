"""Synthetic KITTI-layout driving sequences rendered by analytic ray casting.

The renderer builds a procedural street per drive -- a road plane with a dashed centre line,
raised sidewalks with curbs, grass behind them, building blocks on both sides with gaps,
parked cars, poles and (optionally) independently moving cars -- and ray-casts it for a
forward-moving stereo rig at KITTI's geometry. Every surface is an axis-aligned rectangle;
each rectangle is only tested against the rays inside its projected screen bounding box, so a
375x1242 frame with 2x2 supersampling renders in well under a second on one core (about 0.3 s
of CPU time). Supersampling is adaptive: all 2x2 sub-pixel rays are cast, pixels on geometric
edges average their shaded sub-samples, and surface interiors are shaded once at the pixel
centre with a mip level for the full pixel footprint (the textures are prefiltered).

Textures come from ``skimage.data`` (brick, gravel, grass and photographs) and are looked up in
*world* coordinates on each surface (with a mip-map level chosen from the pixel footprint), so
the same surface point has the same colour in every frame and in both cameras. Shading is
Lambertian with a fixed sun (view independent), which keeps brightness constancy exact up to
resampling. A fraction ``textureless`` of the surfaces are flat coloured.

Conventions:

* World frame: x right, y down, z forward along the street; the road plane is ``y = 1.65``
  (camera height). Camera frames are KITTI's rectified frames (x right, y down, z forward).
* Dense ground truth depth is the camera z (metres) at each pixel *centre* of image_02
  (``gt/<folder>/depth``) and image_03 (``gt/<folder>/depth_03``); **sky is 0** (invalid), as
  in KITTI's sparse ground truth.
* Velodyne scans are ray cast from the LiDAR; the returns inside image_02 are then placed for
  KITTI's 1-based pixel convention (:func:`kitti_convention_scan`), so the standard export
  (``fmdepth export-gt``, column ``round(u) - 1``) stores exactly the dense camera z there.
* Label maps (uint8) hold a surface class id, OR-ed with :data:`TEXTURELESS` (128) when the
  surface is flat coloured. Ids: see :data:`LABELS`.

Output layout (``render_dataset``)::

    <out>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt
    <out>/<date>/<date>_drive_NNNN_sync/image_02/data/0000000000.png   (+ timestamps.txt)
                                        image_03/data/...
                                        velodyne_points/data/0000000000.bin  (float32 x,y,z,r)
                                        oxts/data/0000000000.txt (+ timestamps.txt, dataformat.txt)
    <out>/sequences/NN/image_2/000000.png, image_3/, velodyne/, calib.txt, times.txt
    <out>/poses/NN.txt                      (3x4 row-major cam0-to-world, odometry convention)
    <out>/gt/<date>/<date>_drive_NNNN_sync/depth/0000000000.npy    (float32, camera-2 z, 0 = sky)
                                        labels/0000000000.npy   (uint8)
                                        depth_03/, labels_03/    (right camera)
                                        poses_02.txt, poses_03.txt (3x4 camera-to-world per frame)
    <out>/splits/{train,val,test}_files.txt  ("<date>/<drive> <frame> <l|r>")
    <out>/splits/odom/{train,val}_files.txt, test_files_NN.txt
    <out>/synth_info.json

The output is written to a temporary sibling folder and renamed into place at the end, so a
half-written dataset never sits at ``out``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# ------------------------------------------------------------------------------------ constants
#: Surface class ids written to the label maps (OR-ed with TEXTURELESS for flat surfaces).
LABELS: Dict[int, str] = {
    0: "sky",
    1: "road",
    2: "lane_marking",
    3: "sidewalk",
    4: "curb",
    5: "grass",
    6: "building",
    7: "parked_car",
    8: "moving_car",
    9: "pole",
}
LABEL_IDS = {name: i for i, name in LABELS.items()}
#: Bit set in a label when the surface is flat coloured (no texture).
TEXTURELESS = 128
#: ``label & CLASS_MASK`` is the class id without the textureless bit.
CLASS_MASK = TEXTURELESS - 1

CAMERA_HEIGHT = 1.65  # metres above the road (rectified cam0)
CURB_HEIGHT = 0.15
CAM2_X = -0.06  # camera centres in the rectified cam0 frame (KITTI: cam2 6 cm left of cam0)
CAM3_X = 0.48  # -> stereo baseline image_02 / image_03 = 0.54 m
GRAY_BASELINE = 0.54  # cam0 -> cam1
FAR_GROUND = 1000.0  # the ground is modelled up to this distance; beyond is "sky"
VELO_MAX_RANGE = 120.0

# KITTI's real extrinsics (2011_09_26 calibration files).
KITTI_R_RECT_00 = np.array([[9.999239e-01, 9.837760e-03, -7.445048e-03],
                            [-9.869795e-03, 9.999421e-01, -4.278459e-03],
                            [7.402527e-03, 4.351614e-03, 9.999631e-01]])
KITTI_R_VELO_TO_CAM = np.array([[7.533745e-03, -9.999714e-01, -6.166020e-04],
                                [1.480249e-02, 7.280733e-04, -9.998902e-01],
                                [9.998621e-01, 7.523790e-03, 1.480755e-02]])
KITTI_T_VELO_TO_CAM = np.array([-4.069766e-03, -7.631618e-02, -2.717806e-01])
KITTI_R_IMU_TO_VELO = np.array([[9.999976e-01, 7.553071e-04, -2.035826e-03],
                                [-7.854027e-04, 9.998898e-01, -1.482298e-02],
                                [2.024406e-03, 1.482454e-02, 9.998881e-01]])
KITTI_T_IMU_TO_VELO = np.array([-8.086759e-01, 3.195559e-01, -7.997231e-01])

_SUN = np.array([-0.45, -0.80, 0.40]) / np.linalg.norm([-0.45, -0.80, 0.40])
_MIP_LEVELS = 6


def kitti_intrinsics(height: int, width: int) -> np.ndarray:
    """KITTI-like pinhole K (3, 3): fx = 0.58 W, fy = 1.92 H, principal point at the centre."""
    return np.array([[0.58 * width, 0.0, (width - 1) / 2.0],
                     [0.0, 1.92 * height, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def _hom(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def velo_to_rect_cam0() -> np.ndarray:
    """(4, 4) transform velodyne -> rectified cam0: R_rect_00 @ Tr_velo_to_cam."""
    return _hom(KITTI_R_RECT_00, np.zeros(3)) @ _hom(KITTI_R_VELO_TO_CAM, KITTI_T_VELO_TO_CAM)


def imu_to_velo() -> np.ndarray:
    return _hom(KITTI_R_IMU_TO_VELO, KITTI_T_IMU_TO_VELO)


# ------------------------------------------------------------------------------------- textures
@dataclass
class _Atlas:
    data: np.ndarray  # (N, 3) float32 texels of every (texture, level), concatenated
    base: np.ndarray  # (T, L) int64 offsets
    w: np.ndarray  # (T, L) int64
    h: np.ndarray  # (T, L) int64
    names: List[str]

    def __post_init__(self):
        self.w32 = self.w.astype(np.int32)
        self.h32 = self.h.astype(np.int32)


# name, tint (None = photo colours)
_TEXTURES: List[Tuple[str, Optional[Tuple[float, float, float]]]] = [
    ("gravel", (0.42, 0.42, 0.44)),  # 0 road
    ("brick", (0.78, 0.74, 0.66)),  # 1 sidewalk
    ("grass", (0.35, 0.62, 0.25)),  # 2 grass
    ("brick", (0.80, 0.45, 0.35)),  # 3 facade brick
    ("astronaut", None),  # 4
    ("coffee", None),  # 5
    ("chelsea", None),  # 6
    ("rocket", None),  # 7
    ("hubble_deep_field", None),  # 8
    ("immunohistochemistry", None),  # 9
    ("camera", (0.75, 0.72, 0.70)),  # 10
    ("moon", (0.70, 0.70, 0.75)),  # 11
    ("coins", (0.85, 0.80, 0.60)),  # 12
    ("gravel", (0.60, 0.60, 0.62)),  # 13 concrete (curb, poles)
    ("cat", None),  # 14
]
_PHOTOS = [4, 5, 6, 7, 8, 9, 14]
_GRAYS = [3, 10, 11, 12]


@lru_cache(maxsize=1)
def _atlas() -> _Atlas:
    from skimage import data as skdata

    chunks, base, ws, hs = [], [], [], []
    offset = 0
    for name, tint in _TEXTURES:
        img = np.asarray(getattr(skdata, name)(), dtype=np.float32) / 255.0
        if img.ndim == 2:
            img = img[..., None] * np.ones(3, np.float32)
            img = img / max(float(img.mean()), 1e-3) * 0.5  # normalise brightness before tinting
            img = np.clip(img * np.asarray(tint, np.float32) * 2.0, 0.0, 1.0)  # mean -> tint
        # crop to a multiple of 2**(levels-1) so that every mip level tiles with the same period
        m = 2 ** (_MIP_LEVELS - 1)
        img = img[: img.shape[0] // m * m, : img.shape[1] // m * m, :3]
        b_row, w_row, h_row = [], [], []
        level = img
        for _ in range(_MIP_LEVELS):
            h, w = level.shape[:2]
            chunks.append(level.reshape(-1, 3))
            b_row.append(offset)
            w_row.append(w)
            h_row.append(h)
            offset += h * w
            h2, w2 = max(h // 2, 1), max(w // 2, 1)
            level = level[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2, 3).mean(axis=(1, 3))
        base.append(b_row)
        ws.append(w_row)
        hs.append(h_row)
    return _Atlas(np.ascontiguousarray(np.concatenate(chunks).astype(np.float32)),
                  np.asarray(base, np.int64), np.asarray(ws, np.int64), np.asarray(hs, np.int64),
                  [n for n, _ in _TEXTURES])


# --------------------------------------------------------------------------------------- scene
@dataclass
class _Material:
    texture: int  # index into _TEXTURES, -1 = flat colour
    colour: Tuple[float, float, float]  # flat colour (texture < 0) or multiplier
    texel: float  # metres per texel at mip level 0
    offset: Tuple[float, float]  # texture-space offset (metres)
    label: int  # class id (TEXTURELESS added automatically for flat materials)
    reflectance: float  # simulated LiDAR intensity


@dataclass
class _Box:
    lo: np.ndarray  # (3,) world
    hi: np.ndarray
    materials: List[_Material]  # one per face: x-, x+, y-, y+, z-, z+
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # metres per frame

    def at(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.lo + self.velocity * frame, self.hi + self.velocity * frame


@dataclass
class _Street:
    road_half_width: float
    sidewalk_width: float
    boxes: List[_Box]
    road_material: _Material
    sidewalk_material: _Material
    grass_material: _Material
    curb_material: _Material


def _pick_material(rng, label: int, textureless: float, textures: Sequence[int], texel_range,
                   reflectance=(0.1, 0.5)) -> _Material:
    colour = tuple(float(c) for c in rng.uniform(0.15, 0.9, size=3))
    tex = int(rng.choice(textures)) if rng.uniform() >= textureless else -1
    return _Material(tex, colour, float(rng.uniform(*texel_range)),
                     (float(rng.uniform(0, 50)), float(rng.uniform(0, 50))), label,
                     float(rng.uniform(*reflectance)))


def _build_street(rng: np.random.Generator, length: float, textureless: float, moving_cars: int,
                  frames: int) -> _Street:
    G = CAMERA_HEIGHT
    top = G - CURB_HEIGHT
    rw = float(rng.uniform(5.5, 7.0))
    sw = float(rng.uniform(2.0, 3.5))
    mat = lambda label, tex, texel, refl=(0.1, 0.5): _pick_material(rng, label, textureless, tex, texel, refl)  # noqa: E731
    road = mat(LABEL_IDS["road"], [0], (0.008, 0.012), (0.05, 0.15))
    sidewalk = mat(LABEL_IDS["sidewalk"], [1, 13], (0.005, 0.008))
    grass = mat(LABEL_IDS["grass"], [2], (0.006, 0.01))
    curb = mat(LABEL_IDS["curb"], [13], (0.004, 0.006))
    boxes: List[_Box] = []
    z_start = -40.0
    for side in (-1.0, 1.0):
        # buildings with gaps
        z = z_start
        while z < length:
            if rng.uniform() < 0.25:
                z += float(rng.uniform(4.0, 12.0))  # gap
                continue
            w = float(rng.uniform(8.0, 20.0))
            h = float(rng.uniform(6.0, 20.0))
            depth = float(rng.uniform(8.0, 15.0))
            setback = float(rng.uniform(0.0, 1.5))
            x0 = rw + sw + setback
            xs = sorted([side * x0, side * (x0 + depth)])
            facade = mat(LABEL_IDS["building"], _PHOTOS + _GRAYS, (0.015, 0.03))
            other = mat(LABEL_IDS["building"], _GRAYS, (0.01, 0.02))
            roof = mat(LABEL_IDS["building"], [13, 11], (0.01, 0.02))
            faces = [other, other, roof, other, other, other]
            faces[0 if side > 0 else 1] = facade  # the face looking at the road
            boxes.append(_Box(np.array([xs[0], top - h, z]), np.array([xs[1], top, z + w]), faces))
            z += w
        # parked cars
        z = z_start + float(rng.uniform(0, 10))
        while z < length:
            if rng.uniform() < 0.6:
                boxes.append(_car(rng, side, rw, z, textureless, LABEL_IDS["parked_car"]))
            z += float(rng.uniform(6.0, 20.0))
        # poles
        z = z_start + float(rng.uniform(0, 15))
        while z < length:
            h = float(rng.uniform(4.0, 7.0))
            x = side * (rw + 0.5)
            pm = mat(LABEL_IDS["pole"], [13, 11], (0.003, 0.005))
            boxes.append(_Box(np.array([x - 0.1, top - h, z - 0.1]), np.array([x + 0.1, top, z + 0.1]),
                              [pm] * 6))
            z += float(rng.uniform(15.0, 30.0))
    for _ in range(moving_cars):
        towards = rng.uniform() < 0.5
        speed = float(rng.uniform(0.5, 1.5))
        z0 = float(rng.uniform(10.0, max(length - 20.0, 20.0)))
        car = _car(rng, -1.0, rw, z0, textureless, LABEL_IDS["moving_car"], lane_x=-(rw - 3.25))
        car.velocity = np.array([0.0, 0.0, -speed if towards else speed])
        boxes.append(car)
    return _Street(rw, sw, boxes, road, sidewalk, grass, curb)


def _car(rng, side, rw, z, textureless, label, lane_x=None) -> _Box:
    G = CAMERA_HEIGHT
    length = float(rng.uniform(3.8, 4.8))
    width = float(rng.uniform(1.6, 1.9))
    height = float(rng.uniform(1.4, 1.7))
    if lane_x is None:
        x_in = side * (rw - 0.3 - width)
        x_out = side * (rw - 0.3)
    else:
        x_in, x_out = lane_x - width / 2, lane_x + width / 2
    xs = sorted([x_in, x_out])
    body = _pick_material(rng, label, textureless, _PHOTOS + [10, 12], (0.006, 0.012), (0.3, 0.8))
    top = _pick_material(rng, label, textureless, _PHOTOS, (0.006, 0.012), (0.3, 0.8))
    return _Box(np.array([xs[0], G - height, z]), np.array([xs[1], G, z + length]),
                [body, body, top, body, body, body])


# ---------------------------------------------------------------------------------------- rects
# A rect is an axis-aligned rectangle: normal axis a, plane value, extents on axes (a+1)%3 and
# (a+2)%3, outward normal sign, material index.
@dataclass
class _Rects:
    axis: np.ndarray  # (R,) int
    value: np.ndarray  # (R,)
    lo: np.ndarray  # (R, 2) extents on axes (a+1)%3, (a+2)%3
    hi: np.ndarray
    sign: np.ndarray  # (R,) outward normal sign along axis
    material: List[_Material]


def _scene_rects(street: _Street, frame: int, origin: np.ndarray, reach: float) -> _Rects:
    """Rectangles facing ``origin`` within ``reach`` metres (along z) of it at time ``frame``."""
    G = CAMERA_HEIGHT
    top = G - CURB_HEIGHT
    rw, sw = street.road_half_width, street.sidewalk_width
    z0, z1 = origin[2] - reach, origin[2] + reach
    axis, value, lo, hi, sign, mats = [], [], [], [], [], []

    def add(a, v, l1, h1, l2, h2, s, m):
        axis.append(a), value.append(v), lo.append((l1, l2)), hi.append((h1, h2)), sign.append(s)
        mats.append(m)

    # ground: axis 1 (y), extents on z (axis 2) and x (axis 0)
    if origin[1] < G:
        add(1, G, z0, z1, -rw, rw, -1.0, street.road_material)
    if origin[1] < top:
        far = 2.0 * reach
        add(1, top, z0, z1, rw, rw + sw, -1.0, street.sidewalk_material)
        add(1, top, z0, z1, -rw - sw, -rw, -1.0, street.sidewalk_material)
        add(1, top, z0, z1, rw + sw, far, -1.0, street.grass_material)
        add(1, top, z0, z1, -far, -rw - sw, -1.0, street.grass_material)
    # curbs: axis 0 (x), extents on y (axis 1) and z (axis 2)
    if origin[0] < rw:
        add(0, rw, top, G, z0, z1, -1.0, street.curb_material)
    if origin[0] > -rw:
        add(0, -rw, top, G, z0, z1, 1.0, street.curb_material)
    for box in street.boxes:
        blo, bhi = box.at(frame)
        if bhi[2] < z0 or blo[2] > z1:
            continue
        for a in range(3):
            a1, a2 = (a + 1) % 3, (a + 2) % 3
            if origin[a] < blo[a]:
                add(a, blo[a], blo[a1], bhi[a1], blo[a2], bhi[a2], -1.0, box.materials[2 * a])
            elif origin[a] > bhi[a]:
                add(a, bhi[a], blo[a1], bhi[a1], blo[a2], bhi[a2], 1.0, box.materials[2 * a + 1])
    return _Rects(np.asarray(axis, np.int64), np.asarray(value, np.float64),
                  np.asarray(lo, np.float64).reshape(-1, 2), np.asarray(hi, np.float64).reshape(-1, 2),
                  np.asarray(sign, np.float64), mats)


def _rect_corners(rects: _Rects, k: int) -> np.ndarray:
    a = int(rects.axis[k])
    a1, a2 = (a + 1) % 3, (a + 2) % 3
    out = np.empty((4, 3))
    for i, (e1, e2) in enumerate(((0, 0), (1, 0), (1, 1), (0, 1))):
        out[i, a] = rects.value[k]
        out[i, a1] = (rects.lo[k, 0], rects.hi[k, 0])[e1]
        out[i, a2] = (rects.lo[k, 1], rects.hi[k, 1])[e2]
    return out


def _screen_bbox(corners_cam: np.ndarray, K: np.ndarray, height: int, width: int,
                 near: float = 0.05) -> Optional[Tuple[int, int, int, int]]:
    """Pixel bbox (u0, u1, v0, v1), end exclusive, of a convex quad (4, 3) in camera coordinates,
    clipped at the near plane; None if not visible."""
    pts = []
    for i in range(4):
        p, q = corners_cam[i], corners_cam[(i + 1) % 4]
        if p[2] > near:
            pts.append(p)
        if (p[2] > near) != (q[2] > near):
            s = (near - p[2]) / (q[2] - p[2])
            pts.append(p + s * (q - p))
    if not pts:
        return None
    pts = np.asarray(pts)
    u = K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2]
    v = K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]
    u0, u1 = int(math.floor(u.min())) - 1, int(math.ceil(u.max())) + 2
    v0, v1 = int(math.floor(v.min())) - 1, int(math.ceil(v.max())) + 2
    u0, v0 = max(u0, 0), max(v0, 0)
    u1, v1 = min(u1, width), min(v1, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return u0, u1, v0, v1


def _cast(origin, dirs, inv, rects: _Rects, boxes_px=None):
    """Nearest hit of rays ``origin + t * dirs`` (dirs (3, ...)) with ``rects``.

    ``boxes_px``: optional per-rect index tuples (slices of the ray arrays) that can contain hits.
    Returns t (inf = miss) and rect index (-1 = miss), both shaped like dirs[0].
    """
    shape = dirs.shape[1:]
    t_best = np.full(shape, np.inf, dtype=np.float32)
    rid = np.full(shape, -1, dtype=np.int32)
    for k in range(len(rects.axis)):
        sl = (Ellipsis,) if boxes_px is None else boxes_px[k]
        if sl is None:
            continue
        a = int(rects.axis[k])
        a1, a2 = (a + 1) % 3, (a + 2) % 3
        t = (np.float32(rects.value[k] - origin[a])) * inv[a][sl]
        b = np.float32(origin[a1]) + t * dirs[a1][sl]
        c = np.float32(origin[a2]) + t * dirs[a2][sl]
        tb = t_best[sl]
        hit = (t > 1e-4) & (t < tb)
        hit &= (b >= rects.lo[k, 0]) & (b <= rects.hi[k, 0])
        hit &= (c >= rects.lo[k, 1]) & (c <= rects.hi[k, 1])
        tb[hit] = t[hit]
        rid[sl][hit] = k
    return t_best, rid


@dataclass
class _RectTables:
    tex: np.ndarray  # (R+1,) texture index, -1 flat; row R = "no surface"
    colour: np.ndarray  # (R+1, 3)
    texel: np.ndarray
    off: np.ndarray  # (R+1, 2)
    label: np.ndarray  # (R+1,) uint8 (TEXTURELESS included)
    shade: np.ndarray  # (R+1,) Lambertian factor
    axis: np.ndarray  # (R+1,)


def _tables(rects: _Rects) -> _RectTables:
    R = len(rects.axis)
    mats = rects.material
    normal = np.zeros((R + 1, 3))
    normal[np.arange(R), rects.axis] = rects.sign
    return _RectTables(
        np.array([m.texture for m in mats] + [-1], np.int32),
        np.array([m.colour for m in mats] + [(0, 0, 0)], np.float32),
        np.array([m.texel for m in mats] + [1.0], np.float32),
        np.array([m.offset for m in mats] + [(0, 0)], np.float32),
        np.array([m.label + (TEXTURELESS if m.texture < 0 else 0) for m in mats] + [0], np.uint8),
        (0.72 + 0.28 * np.clip(normal @ _SUN, 0.0, 1.0)).astype(np.float32),
        np.append(rects.axis, 0).astype(np.int8),
    )


def _shade(points, footprint, cos, rid, tables: _RectTables, colour: bool = True):
    """Colour (N, 3) (None if not ``colour``) and label (N,) of hit points (3, N) on rects ``rid``.

    ``footprint`` (N,): size in metres of one (super)sample at the hit (selects the mip level);
    ``cos`` (N,): |cosine| between the ray and the surface normal.
    """
    lab = tables.label[rid]
    road = np.nonzero(lab == LABEL_IDS["road"])[0]
    mark = None
    if road.size:
        x, z = points[0, road], points[2, road]
        mark = road[(np.abs(x) < 0.08) & (np.mod(z, 6.0) < 3.0)]  # dashed centre line
        lab[mark] = LABEL_IDS["lane_marking"]
    if not colour:
        return None, lab
    atlas = _atlas()
    out = tables.colour[rid]
    tx = tables.tex[rid]
    idx = np.nonzero(tx >= 0)[0]
    if idx.size:
        r = rid[idx]
        ti = tx[idx]
        ax = tables.axis[r]
        p0, p1, p2 = points[0, idx], points[1, idx], points[2, idx]
        ca = np.where(ax == 0, p1, np.where(ax == 1, p2, p0)) + tables.off[r, 0]
        cb = np.where(ax == 0, p2, np.where(ax == 1, p0, p1)) + tables.off[r, 1]
        texel = tables.texel[r]
        fp = footprint[idx] / np.sqrt(np.maximum(cos[idx], 0.05))
        lev = np.log2(np.maximum(fp / texel, 1e-6))
        lev = np.clip(lev + 0.5, 0, _MIP_LEVELS - 1).astype(np.int32)  # floor for values >= 0
        scale = np.ldexp(texel, lev)
        w = atlas.w32[ti, lev]
        h = atlas.h32[ti, lev]
        # bilinear texel interpolation (texel centres at half-integers), wrapping at the tile edge
        fu = ca / scale - 0.5
        fv = cb / scale - 0.5
        c0 = np.floor(fu)
        r0 = np.floor(fv)
        au = (fu - c0)[:, None]
        av = (fv - r0)[:, None]
        c0 = c0.astype(np.int32) % w
        r0 = r0.astype(np.int32) % h
        c1 = c0 + 1
        c1[c1 == w] = 0
        r1 = r0 + 1
        r1[r1 == h] = 0
        base = atlas.base[ti, lev]
        row0 = base + r0 * w
        row1 = base + r1 * w
        data = atlas.data
        top = data[row0 + c0] * (1 - au) + data[row0 + c1] * au
        bot = data[row1 + c0] * (1 - au) + data[row1 + c1] * au
        out[idx] = top * (1 - av) + bot * av
    out *= tables.shade[rid][:, None]
    if mark is not None and mark.size:
        out[mark] = 0.92 * tables.shade[rid[mark]][:, None]
    return out, lab


def _sky(dirs_world: np.ndarray) -> np.ndarray:
    """Sky colour (N, 3) from world ray directions (3, N): a horizon-to-zenith gradient."""
    d = dirs_world / np.linalg.norm(dirs_world, axis=0, keepdims=True)
    up = np.clip(-d[1], 0.0, 1.0)[:, None]
    horizon = np.array([0.85, 0.88, 0.92], np.float32)
    zenith = np.array([0.35, 0.55, 0.85], np.float32)
    return (horizon + (zenith - horizon) * np.sqrt(up)).astype(np.float32)


def render_view(street: _Street, frame: int, world_T_cam: np.ndarray, K: np.ndarray, height: int,
                width: int, supersample: int = 2) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one camera.

    Args:
        world_T_cam: (4, 4) camera-to-world pose.
        K: (3, 3) intrinsics of the (height, width) image.

    Returns:
        image (H, W, 3) float32 in [0, 1]; depth (H, W) float32 camera z at pixel centres
        (0 = sky); label (H, W) uint8.
    """
    s = int(supersample)
    offs = (np.arange(s) + 0.5) / s - 0.5
    ou, ov = np.meshgrid(offs, offs)
    ou = np.append(ou.ravel(), 0.0)  # last sample: the pixel centre (depth, label)
    ov = np.append(ov.ravel(), 0.0)
    S = ou.size
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    xs = ((np.arange(width)[None, :] + ou[:, None] - cx) / fx).astype(np.float32)  # (S, W)
    ys = ((np.arange(height)[None, :] + ov[:, None] - cy) / fy).astype(np.float32)  # (S, H)
    R = world_T_cam[:3, :3].astype(np.float32)
    C = world_T_cam[:3, 3].astype(np.float64)
    # world ray directions (unnormalised, camera z = 1): d = R @ (x, y, 1)
    dirs = np.empty((3, S, height, width), np.float32)
    for i in range(3):
        dirs[i] = R[i, 0] * xs[:, None, :] + R[i, 1] * ys[:, :, None] + R[i, 2]
    with np.errstate(divide="ignore"):
        inv = 1.0 / dirs
    rects = _scene_rects(street, frame, C, FAR_GROUND)
    cam_T_world = np.linalg.inv(world_T_cam)
    boxes = []
    for k in range(len(rects.axis)):
        corners = _rect_corners(rects, k)
        cc = corners @ cam_T_world[:3, :3].T + cam_T_world[:3, 3]
        bb = _screen_bbox(cc, K, height, width)
        boxes.append(None if bb is None else (slice(None), slice(bb[2], bb[3]), slice(bb[0], bb[1])))
    t, rid = _cast(C, dirs, inv, rects, boxes)

    tables = _tables(rects)
    C32 = C[:, None].astype(np.float32)

    def colour_of(d, t_hit, r, pixel_size):
        """Colours (N, 3) of rays d (3, N) with hits (t, rect) -- sky where r < 0."""
        out = np.empty((r.size, 3), np.float32)
        hi = np.nonzero(r >= 0)[0]
        if hi.size:
            d_hit = d[:, hi]
            th = t_hit[hi]
            pts = C32 + d_hit * th
            ax = rects.axis[r[hi]]
            cos = np.abs(d_hit[ax, np.arange(hi.size)]) / np.linalg.norm(d_hit, axis=0)
            # footprint of one sample on a fronto-parallel surface: z * pixel_size / f
            out[hi], _ = _shade(pts, th * np.float32(pixel_size / fx), cos, r[hi], tables)
        mi = np.nonzero(r < 0)[0]
        if mi.size:
            out[mi] = _sky(d[:, mi])
        return out

    # Adaptive 2x2 supersampling: pixels whose sub-samples all hit the centre's surface are shaded
    # once at the centre with a mip level for the whole pixel footprint (textures are prefiltered);
    # pixels on geometric edges average their s x s shaded sub-samples.
    image = np.empty((height * width, 3), np.float32)
    rid_c = rid[S - 1]
    edge = (rid[: S - 1] != rid_c[None]).any(axis=0).reshape(-1)
    inner = np.nonzero(~edge)[0]
    image[inner] = colour_of(dirs[:, S - 1].reshape(3, -1)[:, inner], t[S - 1].reshape(-1)[inner],
                             rid_c.reshape(-1)[inner], 1.0)
    ei = np.nonzero(edge)[0]
    if ei.size:
        n_sub = S - 1
        d_sub = dirs[:, : S - 1].reshape(3, n_sub, -1)[:, :, ei].reshape(3, -1)
        t_sub = t[: S - 1].reshape(n_sub, -1)[:, ei].reshape(-1)
        r_sub = rid[: S - 1].reshape(n_sub, -1)[:, ei].reshape(-1)
        image[ei] = colour_of(d_sub, t_sub, r_sub, 1.0 / s).reshape(n_sub, ei.size, 3).mean(axis=0)
    image = image.reshape(height, width, 3)

    # depth and label at the pixel centres
    tcen, rcen = t[S - 1], rid[S - 1]
    depth = np.where(rcen >= 0, tcen, 0.0).astype(np.float32)
    label = np.zeros((height, width), np.uint8)
    ci = np.nonzero(rcen.reshape(-1) >= 0)[0]
    if ci.size:
        dcen = dirs[:, S - 1].reshape(3, -1)[:, ci]
        pts = C[:, None].astype(np.float32) + dcen * tcen.reshape(-1)[ci]
        _, lab = _shade(pts, None, None, rcen.reshape(-1)[ci], tables, colour=False)
        label.reshape(-1)[ci] = lab
    return np.clip(image, 0.0, 1.0), depth, label


# ------------------------------------------------------------------------------------- velodyne
def _velodyne_dirs(azimuth_step_deg: float = 0.2) -> np.ndarray:
    """(3, 64, A) unit beam directions in the velodyne frame (x forward, y left, z up)."""
    elev = np.deg2rad(np.linspace(2.0, -24.8, 64))
    az = np.deg2rad(np.arange(0.0, 360.0, azimuth_step_deg) - 180.0)
    e, a = np.meshgrid(elev, az, indexing="ij")
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)]).astype(np.float32)


def render_velodyne(street: _Street, frame: int, world_T_velo: np.ndarray,
                    azimuth_step_deg: float = 0.2) -> np.ndarray:
    """Simulated 64-beam scan: (N, 4) float32 x, y, z, reflectance in velodyne coordinates."""
    dv = _velodyne_dirs(azimuth_step_deg)  # (3, 64, A)
    A = dv.shape[2]
    R = world_T_velo[:3, :3]
    O = world_T_velo[:3, 3]
    dw = np.einsum("ij,jea->iea", R.astype(np.float32), dv)
    with np.errstate(divide="ignore"):
        inv = 1.0 / dw
    rects = _scene_rects(street, frame, O, VELO_MAX_RANGE)
    velo_T_world = np.linalg.inv(world_T_velo)
    step = 2 * np.pi / A
    slices = []
    for k in range(len(rects.axis)):
        corners = _rect_corners(rects, k) @ velo_T_world[:3, :3].T + velo_T_world[:3, 3]
        ang = np.arctan2(corners[:, 1], corners[:, 0])
        mid = math.atan2(corners[:, 1].mean(), corners[:, 0].mean())
        rel = np.angle(np.exp(1j * (ang - mid)))
        if np.ptp(rel) > np.deg2rad(170) or np.hypot(*corners[:, :2].mean(0)) < 1e-6:
            slices.append([(Ellipsis,)])
            continue
        c0 = int(math.floor((mid + rel.min() + np.pi) / step)) - 1
        c1 = int(math.ceil((mid + rel.max() + np.pi) / step)) + 2
        if c0 < 0:
            slices.append([(slice(None), slice(c0 % A, A)), (slice(None), slice(0, min(c1, A)))])
        elif c1 > A:
            slices.append([(slice(None), slice(c0, A)), (slice(None), slice(0, c1 - A))])
        else:
            slices.append([(slice(None), slice(c0, c1))])
    t_best = np.full(dv.shape[1:], np.inf, np.float32)
    rid = np.full(dv.shape[1:], -1, np.int32)
    for k in range(len(rects.axis)):
        a = int(rects.axis[k])
        a1, a2 = (a + 1) % 3, (a + 2) % 3
        for sl in slices[k]:
            t = np.float32(rects.value[k] - O[a]) * inv[a][sl]
            b = np.float32(O[a1]) + t * dw[a1][sl]
            c = np.float32(O[a2]) + t * dw[a2][sl]
            tb = t_best[sl]
            hit = (t > 1e-3) & (t < tb) & (t < VELO_MAX_RANGE)
            hit &= (b >= rects.lo[k, 0]) & (b <= rects.hi[k, 0])
            hit &= (c >= rects.lo[k, 1]) & (c <= rects.hi[k, 1])
            tb[hit] = t[hit]
            rid[sl][hit] = k
    ok = rid >= 0
    pts = (dv[:, ok] * t_best[ok]).T  # (N, 3) velodyne frame (unit directions: t = range)
    refl = np.array([m.reflectance for m in rects.material], np.float32)[rid[ok]]
    return np.concatenate([pts, refl[:, None]], axis=1).astype(np.float32)


def kitti_convention_scan(scan: np.ndarray, depth: np.ndarray, velo_to_image: np.ndarray) -> np.ndarray:
    """Make a simulated scan agree with the KITTI pixel convention of the standard export.

    The standard Eigen export (:func:`~fmdepth.data.kitti_io.velodyne_depth_map`, ``pixel="kitti"``)
    reads ``P_rect`` as giving 1-based pixel coordinates: a return projecting to (u, v) measures the
    0-based pixel (row ``round(v) - 1``, column ``round(u) - 1``). The renderer's depth is the
    camera z at 0-based pixel centres of ``K = P_rect[:, :3]``, so a physical beam hit would be
    stored one pixel off (metres at depth edges, ~2 m per row on the far road). Every return that
    the export would keep is therefore moved onto the ray through (c + 1, r + 1) of the pixel it is
    assigned to, at camera z ``depth[r, c]`` -- the export then stores exactly the dense depth
    there (``camera-z``; float32 rounding only). Returns landing on sky (depth 0, LiDAR/camera
    parallax), behind the camera or, once moved, beyond the LiDAR's range are removed; returns
    outside the image are kept unchanged.

    Args:
        scan: (N, 4) float32 velodyne x, y, z, reflectance.
        depth: (H, W) camera z of image_02 at pixel centres, 0 = sky.
        velo_to_image: (3, 4) ``P_rect_02 @ R_rect_00 @ Tr_velo_to_cam`` as parsed from the
            calibration files written (the export's matrix, so rounding agrees).

    Returns:
        (M, 4) float32 scan.
    """
    H, W = depth.shape
    M = np.asarray(velo_to_image, np.float64)
    pts = scan[:, :3].astype(np.float64)
    proj = np.dot(M, np.c_[pts, np.ones(len(pts))].T).T  # (N, 3)
    z = proj[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.round(proj[:, 0] / z) - 1
        r = np.round(proj[:, 1] / z) - 1
    kept = (pts[:, 0] >= 0) & (c >= 0) & (r >= 0) & (c < W) & (r < H)  # what the export keeps
    idx = np.nonzero(kept)[0]
    ci, ri = c[idx].astype(np.int64), r[idx].astype(np.int64)
    d = depth[ri, ci].astype(np.float64)
    good = (z[idx] > 1e-6) & (d > 0)
    idx, ci, ri, d = idx[good], ci[good], ri[good], d[good]
    # solve A X + b = d * (c + 1, r + 1, 1) for the velodyne point X
    A, b = M[:, :3], M[:, 3]
    rhs = np.stack([d * (ci + 1), d * (ri + 1), d]) - b[:, None]  # (3, n)
    moved = np.linalg.solve(A, rhs).T.astype(np.float32)  # (n, 3)
    in_range = np.linalg.norm(moved, axis=1) <= VELO_MAX_RANGE
    idx, moved = idx[in_range], moved[in_range]
    out = scan.copy()
    out[idx, :3] = moved
    drop = np.zeros(len(scan), bool)
    drop[kept] = True
    drop[idx] = False
    return out[~drop]


# ----------------------------------------------------------------------------------- trajectory
def _rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _trajectory(rng: np.random.Generator, frames: int) -> List[np.ndarray]:
    """world_T_cam0 (rectified cam0) per frame: forward 0.5-1.5 m/frame, smooth yaw + drift."""
    v0 = rng.uniform(0.8, 1.2)
    va = rng.uniform(0.0, min(0.3, 1.5 - v0, v0 - 0.5))
    tv, ty, tx = rng.uniform(20, 60), rng.uniform(30, 80), rng.uniform(25, 70)
    pv, py, px, pp = rng.uniform(0, 2 * np.pi, size=4)
    yaw_amp = np.deg2rad(rng.uniform(1.0, 4.0))
    drift_amp = rng.uniform(0.2, 0.5)
    pitch_amp = np.deg2rad(rng.uniform(0.0, 0.5))
    poses, z = [], 0.0
    for i in range(frames):
        yaw = yaw_amp * math.sin(2 * np.pi * i / ty + py)
        pitch = pitch_amp * math.sin(2 * np.pi * i / 17.0 + pp)
        x = drift_amp * math.sin(2 * np.pi * i / tx + px)
        poses.append(_hom(_rot_y(yaw) @ _rot_x(pitch), np.array([x, 0.0, z])))
        z += v0 + va * math.sin(2 * np.pi * i / tv + pv)
    return poses


# ------------------------------------------------------------------------------------ file I/O
def _fmt(values) -> str:
    return " ".join(f"{float(v) + 0.0:.6e}" for v in np.asarray(values).ravel())


def _calib_cam_to_cam(K: np.ndarray, height: int, width: int) -> str:
    lines = ["calib_time: 01-Jan-2000 00:00:00 (fmdepth synthetic)", "corner_dist: 9.950000e-02"]
    offsets = {0: 0.0, 1: GRAY_BASELINE, 2: CAM2_X, 3: CAM3_X}  # camera centres, rect. cam0 frame
    for cam, cx_m in offsets.items():
        P = np.zeros((3, 4))
        P[:, :3] = K
        P[0, 3] = -K[0, 0] * cx_m
        lines += [
            f"S_{cam:02d}: {_fmt([width, height])}",
            f"K_{cam:02d}: {_fmt(K)}",
            f"D_{cam:02d}: {_fmt(np.zeros(5))}",
            f"R_{cam:02d}: {_fmt(np.eye(3))}",
            f"T_{cam:02d}: {_fmt([-cx_m, 0.0, 0.0])}",
            f"S_rect_{cam:02d}: {_fmt([width, height])}",
            f"R_rect_{cam:02d}: {_fmt(KITTI_R_RECT_00)}",
            f"P_rect_{cam:02d}: {_fmt(P)}",
        ]
    return "\n".join(lines) + "\n"


def _projection(K: np.ndarray, cam_x: float) -> np.ndarray:
    P = np.zeros((3, 4))
    P[:, :3] = K
    P[0, 3] = -K[0, 0] * cam_x
    return P


def _write_png(path: str, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray((np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8)).save(path)


def _timestamp(base: _dt.datetime, i: int, offset_s: float = 0.0) -> str:
    t = base + _dt.timedelta(seconds=0.1 * i + offset_s)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f") + "000"


_OXTS_FORMAT = """lat:   latitude of the oxts-unit (deg)
lon:   longitude of the oxts-unit (deg)
alt:   altitude of the oxts-unit (m)
roll:  roll angle (rad),  0 = level, positive = left side up (-pi..pi)
pitch: pitch angle (rad), 0 = level, positive = front down (-pi/2..pi/2)
yaw:   heading (rad),     0 = east,  positive = counter clockwise (-pi..pi)
vn:    velocity towards north (m/s)
ve:    velocity towards east (m/s)
vf:    forward velocity, i.e. parallel to earth-surface (m/s)
vl:    leftward velocity, i.e. parallel to earth-surface (m/s)
vu:    upward velocity, i.e. perpendicular to earth-surface (m/s)
ax:    acceleration in x, i.e. in direction of vehicle front (m/s^2)
ay:    acceleration in y, i.e. in direction of vehicle left (m/s^2)
az:    acceleration in z, i.e. in direction of vehicle top (m/s^2)
af:    forward acceleration (m/s^2)
al:    leftward acceleration (m/s^2)
au:    upward acceleration (m/s^2)
wx:    angular rate around x (rad/s)
wy:    angular rate around y (rad/s)
wz:    angular rate around z (rad/s)
wf:    angular rate around forward axis (rad/s)
wl:    angular rate around leftward axis (rad/s)
wu:    angular rate around upward axis (rad/s)
pos_accuracy:  position accuracy (north/east in m)
vel_accuracy:  velocity accuracy (north/east in m/s)
navstat:       navigation status (see navstat_to_string)
numsats:       number of satellites tracked by primary GPS receiver
posmode:       position mode of primary GPS receiver (see gps_mode_to_string)
velmode:       velocity mode of primary GPS receiver (see gps_mode_to_string)
orimode:       orientation mode of primary GPS receiver (see gps_mode_to_string)
"""

# world (x right, y down, z forward) -> ENU (east = z, north = -x, up = -y)
_ENU_FROM_WORLD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _oxts_rows(world_T_imu: List[np.ndarray], lat0: float = 49.0, lon0: float = 8.4) -> List[str]:
    """OXTS packets (30 values) from IMU poses (KITTI's Mercator projection, 10 Hz)."""
    r_earth = 6378137.0
    scale = math.cos(math.radians(lat0))
    mx0 = scale * r_earth * math.radians(lon0)
    my0 = scale * r_earth * math.log(math.tan(math.pi * (90.0 + lat0) / 360.0))
    enu_R, enu_p = [], []
    for T in world_T_imu:
        enu_R.append(_ENU_FROM_WORLD @ T[:3, :3])
        enu_p.append(_ENU_FROM_WORLD @ T[:3, 3])
    enu_p = np.asarray(enu_p)
    n = len(world_T_imu)
    vel = np.gradient(enu_p, 0.1, axis=0) if n > 1 else np.zeros((n, 3))
    acc = np.gradient(vel, 0.1, axis=0) if n > 1 else np.zeros((n, 3))
    rows = []
    for i in range(n):
        Rm = enu_R[i]
        yaw = math.atan2(Rm[1, 0], Rm[0, 0])
        pitch = math.asin(-max(-1.0, min(1.0, Rm[2, 0])))
        roll = math.atan2(Rm[2, 1], Rm[2, 2])
        east, north, up = enu_p[i]
        lon = math.degrees((mx0 + east) / (scale * r_earth))
        lat = math.degrees(2.0 * math.atan(math.exp((my0 + north) / (scale * r_earth)))) - 90.0
        v_body = Rm.T @ vel[i]  # x forward, y left, z up
        a_body = Rm.T @ acc[i]
        if 0 < i < n - 1:
            dR = enu_R[i - 1].T @ enu_R[i + 1]
            w = np.array([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]]) / 2.0 / 0.2
        else:
            w = np.zeros(3)
        vals = [lat, lon, 116.0 + up, roll, pitch, yaw, vel[i, 1], vel[i, 0], v_body[0], v_body[1],
                v_body[2], a_body[0], a_body[1], a_body[2] + 9.81, a_body[0], a_body[1],
                a_body[2] + 9.81, w[0], w[1], w[2], w[0], w[1], w[2]]
        text = " ".join(repr(float(v)) for v in vals) + " 0.05 0.02 4 10 5 5 6"
        rows.append(text)
    return rows


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# ------------------------------------------------------------------------------------------ api
@dataclass
class DriveInfo:
    folder: str  # "<date>/<date>_drive_NNNN_sync"
    sequence: int  # odometry sequence number
    frames: int
    split: str  # train | test


def render_dataset(out: str, drives: int = 3, frames: int = 40, seed: int = 0, textureless: float = 0.1,
                   height: int = 375, width: int = 1242, moving_cars: int = 0, supersample: int = 2,
                   velodyne: bool = True, val_fraction: float = 0.1, date: str = "2011_09_26",
                   overwrite: bool = False, progress: bool = True) -> str:
    """Render ``drives`` synthetic drives of ``frames`` frames in the KITTI raw and odometry layouts.

    Args:
        out: output folder; must not exist unless ``overwrite``.
        drives: number of drives (>= 2: the last ``max(1, drives // 4)`` form the test split).
        frames: frames per drive (>= 3: train/val frames need both neighbours).
        seed: everything (scene, trajectory, textures placement) is a function of the seed.
        textureless: fraction in [0, 1] of surfaces rendered flat-coloured.
        height, width: image size (KITTI: 375 x 1242).
        moving_cars: independently moving cars per drive (in the opposite lane).
        supersample: per-axis supersampling factor for the colour images.
        velodyne: also write simulated 64-beam velodyne scans (needed by ``export-gt``).
        val_fraction: fraction of the train drives' frames put into the validation split.

    Returns:
        ``out`` (absolute path). The folder appears only when complete (atomic rename).
    """
    from tqdm import tqdm

    if drives < 2:
        raise ValueError(f"drives must be >= 2 (train and disjoint test drives), got {drives}")
    if frames < 3:
        raise ValueError(f"frames must be >= 3 (train/val frames need both neighbours), got {frames}")
    if not 0.0 <= textureless <= 1.0:
        raise ValueError(f"textureless must be in [0, 1], got {textureless}")
    if height < 8 or width < 8:
        raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if moving_cars < 0:
        raise ValueError(f"moving_cars must be >= 0, got {moving_cars}")
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"output folder already exists: {out} (choose another --out or use --overwrite)")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.incomplete-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        _render_into(tmp, drives, frames, seed, textureless, height, width, moving_cars, supersample,
                     velodyne, val_fraction, date, progress, tqdm)
        if os.path.exists(out):
            old = os.path.join(parent, f".{os.path.basename(out)}.old-{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _render_into(root, drives, frames, seed, textureless, height, width, moving_cars, supersample,
                 velodyne, val_fraction, date, progress, tqdm):
    K = kitti_intrinsics(height, width)
    date_dir = os.path.join(root, date)
    os.makedirs(date_dir)
    with open(os.path.join(date_dir, "calib_cam_to_cam.txt"), "w") as fh:
        fh.write(_calib_cam_to_cam(K, height, width))
    with open(os.path.join(date_dir, "calib_velo_to_cam.txt"), "w") as fh:
        fh.write("calib_time: 01-Jan-2000 00:00:00 (fmdepth synthetic; KITTI 2011_09_26 extrinsics)\n"
                 f"R: {_fmt(KITTI_R_VELO_TO_CAM)}\nT: {_fmt(KITTI_T_VELO_TO_CAM)}\n"
                 "delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n")
    with open(os.path.join(date_dir, "calib_imu_to_velo.txt"), "w") as fh:
        fh.write("calib_time: 01-Jan-2000 00:00:00 (fmdepth synthetic; KITTI 2011_09_26 extrinsics)\n"
                 f"R: {_fmt(KITTI_R_IMU_TO_VELO)}\nT: {_fmt(KITTI_T_IMU_TO_VELO)}\n")
    n_test = max(1, drives // 4)
    seeds = np.random.SeedSequence(seed).spawn(drives)
    infos: List[DriveInfo] = []
    T_c0_velo = velo_to_rect_cam0()
    T_velo_imu = imu_to_velo()
    if velodyne:
        from .kitti_io import RawCalibration

        # the export's projection, from the calibration text as written (same rounding)
        velo_to_image_02 = RawCalibration(date_dir, need_velodyne=True).velo_to_image("02")
    bar = tqdm(total=drives * frames, desc="fmdepth synth", unit="frame", disable=not progress)
    base_time = _dt.datetime(2011, 9, 26, 13, 0, 0)
    for d in range(drives):
        rng = np.random.default_rng(seeds[d])
        folder = f"{date}/{date}_drive_{d + 1:04d}_sync"
        info = DriveInfo(folder, d, frames, "test" if d >= drives - n_test else "train")
        infos.append(info)
        poses0 = _trajectory(rng, frames)
        length = poses0[-1][2, 3] + 60.0
        street = _build_street(rng, length, textureless, moving_cars, frames)
        drive_dir = os.path.join(root, folder)
        gt_dir = os.path.join(root, "gt", folder)
        seq_dir = os.path.join(root, "sequences", f"{d:02d}")
        for sub in ("image_02/data", "image_03/data", "oxts/data"):
            os.makedirs(os.path.join(drive_dir, sub))
        for sub in ("depth", "labels", "depth_03", "labels_03"):
            os.makedirs(os.path.join(gt_dir, sub))
        for sub in ("image_2", "image_3"):
            os.makedirs(os.path.join(seq_dir, sub))
        if velodyne:
            os.makedirs(os.path.join(drive_dir, "velodyne_points", "data"))
            os.makedirs(os.path.join(seq_dir, "velodyne"))
        inv0 = np.linalg.inv(poses0[0])
        T_c0_c2 = _hom(np.eye(3), np.array([CAM2_X, 0, 0]))
        T_c0_c3 = _hom(np.eye(3), np.array([CAM3_X, 0, 0]))
        cams = {"02": ("image_02", "image_2", "depth", "labels", T_c0_c2),
                "03": ("image_03", "image_3", "depth_03", "labels_03", T_c0_c3)}
        poses_out = {"02": [], "03": []}
        imu_poses = []
        for i in range(frames):
            for cam, (raw_sub, odo_sub, dsub, lsub, T_c0_c) in cams.items():
                world_T_cam = poses0[i] @ T_c0_c
                poses_out[cam].append((inv0 @ world_T_cam)[:3].ravel())
                image, depth, label = render_view(street, i, world_T_cam, K, height, width, supersample)
                png = os.path.join(drive_dir, raw_sub, "data", f"{i:010d}.png")
                _write_png(png, image)
                _link_or_copy(png, os.path.join(seq_dir, odo_sub, f"{i:06d}.png"))
                np.save(os.path.join(gt_dir, dsub, f"{i:010d}.npy"), depth)
                np.save(os.path.join(gt_dir, lsub, f"{i:010d}.npy"), label)
                if cam == "02":
                    depth_02 = depth
            world_T_velo = poses0[i] @ T_c0_velo
            imu_poses.append(world_T_velo @ T_velo_imu)
            if velodyne:
                scan = kitti_convention_scan(render_velodyne(street, i, world_T_velo), depth_02,
                                             velo_to_image_02)
                binp = os.path.join(drive_dir, "velodyne_points", "data", f"{i:010d}.bin")
                scan.tofile(binp)
                _link_or_copy(binp, os.path.join(seq_dir, "velodyne", f"{i:06d}.bin"))
            bar.update(1)
        # timestamps, oxts, poses, odometry calibration
        stamps = "\n".join(_timestamp(base_time, i) for i in range(frames)) + "\n"
        for sub in ("image_02", "image_03", "oxts"):
            with open(os.path.join(drive_dir, sub, "timestamps.txt"), "w") as fh:
                fh.write(stamps)
        if velodyne:
            vdir = os.path.join(drive_dir, "velodyne_points")
            for name, off in (("timestamps.txt", 0.0), ("timestamps_start.txt", -0.05),
                              ("timestamps_end.txt", 0.05)):
                with open(os.path.join(vdir, name), "w") as fh:
                    fh.write("\n".join(_timestamp(base_time, i, off) for i in range(frames)) + "\n")
        with open(os.path.join(drive_dir, "oxts", "dataformat.txt"), "w") as fh:
            fh.write(_OXTS_FORMAT)
        for i, row in enumerate(_oxts_rows(imu_poses)):
            with open(os.path.join(drive_dir, "oxts", "data", f"{i:010d}.txt"), "w") as fh:
                fh.write(row + "\n")
        for cam in ("02", "03"):
            np.savetxt(os.path.join(gt_dir, f"poses_{cam}.txt"), np.asarray(poses_out[cam]), fmt="%.9e")
        poses_dir = os.path.join(root, "poses")
        os.makedirs(poses_dir, exist_ok=True)
        np.savetxt(os.path.join(poses_dir, f"{d:02d}.txt"),
                   np.asarray([(inv0 @ p)[:3].ravel() for p in poses0]), fmt="%.9e")
        with open(os.path.join(seq_dir, "calib.txt"), "w") as fh:
            for name, cx_m in (("P0", 0.0), ("P1", GRAY_BASELINE), ("P2", CAM2_X), ("P3", CAM3_X)):
                fh.write(f"{name}: {_fmt(_projection(K, cx_m))}\n")
            fh.write(f"Tr: {_fmt(T_c0_velo[:3])}\n")
        with open(os.path.join(seq_dir, "times.txt"), "w") as fh:
            fh.write("".join(f"{0.1 * i:.6e}\n" for i in range(frames)))
    bar.close()
    _write_splits(root, infos, val_fraction, seed)
    meta = {
        "generator": "fmdepth synth",
        "seed": seed, "drives": drives, "frames": frames, "textureless": textureless,
        "height": height, "width": width, "moving_cars": moving_cars, "supersample": supersample,
        "velodyne": velodyne, "date": date,
        "K": K.tolist(), "baseline_m": CAM3_X - CAM2_X, "camera_height_m": CAMERA_HEIGHT,
        "depth": "camera z in metres at pixel centres; 0 = sky (no surface)",
        "labels": {str(k): v for k, v in LABELS.items()}, "textureless_flag": TEXTURELESS,
        "drives_info": [info.__dict__ for info in infos],
    }
    with open(os.path.join(root, "synth_info.json"), "w") as fh:
        json.dump(meta, fh, indent=1)


def _write_splits(root: str, infos: List[DriveInfo], val_fraction: float, seed: int) -> None:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    train, val, test = [], [], []
    odo_train, odo_val, odo_test = [], [], {}
    for info in infos:
        if info.split == "test":
            test += [f"{info.folder} {i} l" for i in range(info.frames)]
            odo_test[info.sequence] = [f"{info.sequence} {i} l" for i in range(info.frames)]
            continue
        inner = list(range(1, info.frames - 1))  # both neighbours exist
        for i in inner:
            is_val = rng.uniform() < val_fraction
            for side in ("l", "r"):
                (val if is_val else train).append(f"{info.folder} {i} {side}")
                (odo_val if is_val else odo_train).append(f"{info.sequence} {i} {side}")
    if not val and train:  # always provide a non-empty validation split
        val, odo_val = train[-2:], odo_train[-2:]
        train, odo_train = train[:-2], odo_train[:-2]
    split_dir = os.path.join(root, "splits")
    os.makedirs(os.path.join(split_dir, "odom"))
    for name, lines in (("train_files.txt", train), ("val_files.txt", val), ("test_files.txt", test),
                        ("odom/train_files.txt", odo_train), ("odom/val_files.txt", odo_val)):
        with open(os.path.join(split_dir, name), "w") as fh:
            fh.write("".join(line + "\n" for line in lines))
    for seq, lines in odo_test.items():
        with open(os.path.join(split_dir, "odom", f"test_files_{seq:02d}.txt"), "w") as fh:
            fh.write("".join(line + "\n" for line in lines))
