"""The synthetic street: rig constants, surface labels, procedural scenes and trajectories.

A drive is a procedural street -- a road plane with a dashed centre line, raised sidewalks with
curbs, grass behind them, building blocks on both sides with gaps, parked cars, poles and
(optionally) independently moving cars -- made only of axis-aligned boxes and rectangles.
:func:`scene_rects` lists the rectangles one viewpoint can see and :func:`cast` intersects rays
with them; the camera renderer (:mod:`.render`) and the LiDAR simulation (:mod:`.lidar`) both
ray cast through these two.

World frame: x right, y down, z forward along the street; the road plane is ``y = 1.65``
(camera height). Camera frames are KITTI's rectified frames (x right, y down, z forward).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
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
#: x of the centres of cam0..cam3 in the rectified cam0 frame (metres).
CAMERA_X = (0.0, GRAY_BASELINE, CAM2_X, CAM3_X)
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


def kitti_intrinsics(height: int, width: int) -> np.ndarray:
    """KITTI-like pinhole K (3, 3): fx = 0.58 W, fy = 1.92 H, principal point at the centre."""
    return np.array([[0.58 * width, 0.0, (width - 1) / 2.0],
                     [0.0, 1.92 * height, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def rigid_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) homogeneous transform of rotation ``R`` (3, 3) and translation ``t`` (3,)."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def velo_to_rect_cam0() -> np.ndarray:
    """(4, 4) transform velodyne -> rectified cam0: R_rect_00 @ Tr_velo_to_cam."""
    return (rigid_transform(KITTI_R_RECT_00, np.zeros(3))
            @ rigid_transform(KITTI_R_VELO_TO_CAM, KITTI_T_VELO_TO_CAM))


def imu_to_velo() -> np.ndarray:
    """(4, 4) transform IMU -> velodyne (KITTI's ``calib_imu_to_velo``)."""
    return rigid_transform(KITTI_R_IMU_TO_VELO, KITTI_T_IMU_TO_VELO)


# -------------------------------------------------------------------------------------- textures
#: ``skimage.data`` images used as textures: (name, tint; None = photo colours). Materials
#: refer to them by index.
TEXTURES: List[Tuple[str, Optional[Tuple[float, float, float]]]] = [
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


# --------------------------------------------------------------------------------------- scene
@dataclass
class Material:
    """How a surface looks (texture or flat colour), what it is (label) and how it reflects LiDAR."""

    texture: int  # index into TEXTURES, -1 = flat colour
    colour: Tuple[float, float, float]  # flat colour (texture < 0) or multiplier
    texel: float  # metres per texel at mip level 0
    offset: Tuple[float, float]  # texture-space offset (metres)
    label: int  # class id (TEXTURELESS added automatically for flat materials)
    reflectance: float  # simulated LiDAR intensity


@dataclass
class Box:
    """An axis-aligned box, one material per face, moving at a constant ``velocity``."""

    lo: np.ndarray  # (3,) world
    hi: np.ndarray
    materials: List[Material]  # one per face: x-, x+, y-, y+, z-, z+
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # metres per frame

    def at(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        """Corners ``lo``, ``hi`` (3,) of the box at time ``frame``."""
        return self.lo + self.velocity * frame, self.hi + self.velocity * frame


@dataclass
class Street:
    """One drive's scene: road, sidewalks, curbs and grass (infinite along z) and the boxes."""

    road_half_width: float
    sidewalk_width: float
    boxes: List[Box]
    road_material: Material
    sidewalk_material: Material
    grass_material: Material
    curb_material: Material


def _pick_material(rng, label: int, textureless: float, textures: Sequence[int], texel_range,
                   reflectance=(0.1, 0.5)) -> Material:
    colour = tuple(float(c) for c in rng.uniform(0.15, 0.9, size=3))
    tex = int(rng.choice(textures)) if rng.uniform() >= textureless else -1
    return Material(tex, colour, float(rng.uniform(*texel_range)),
                    (float(rng.uniform(0, 50)), float(rng.uniform(0, 50))), label,
                    float(rng.uniform(*reflectance)))


def build_street(rng: np.random.Generator, length: float, textureless: float, moving_cars: int) -> Street:
    """A street ``length`` metres long (z from -40 m); ``textureless``: fraction of flat materials."""
    G = CAMERA_HEIGHT
    top = G - CURB_HEIGHT
    rw = float(rng.uniform(5.5, 7.0))
    sw = float(rng.uniform(2.0, 3.5))
    mat = lambda label, tex, texel, refl=(0.1, 0.5): _pick_material(rng, label, textureless, tex, texel, refl)  # noqa: E731
    road = mat(LABEL_IDS["road"], [0], (0.008, 0.012), (0.05, 0.15))
    sidewalk = mat(LABEL_IDS["sidewalk"], [1, 13], (0.005, 0.008))
    grass = mat(LABEL_IDS["grass"], [2], (0.006, 0.01))
    curb = mat(LABEL_IDS["curb"], [13], (0.004, 0.006))
    boxes: List[Box] = []
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
            boxes.append(Box(np.array([xs[0], top - h, z]), np.array([xs[1], top, z + w]), faces))
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
            boxes.append(Box(np.array([x - 0.1, top - h, z - 0.1]), np.array([x + 0.1, top, z + 0.1]),
                             [pm] * 6))
            z += float(rng.uniform(15.0, 30.0))
    for _ in range(moving_cars):
        towards = rng.uniform() < 0.5
        speed = float(rng.uniform(0.5, 1.5))
        z0 = float(rng.uniform(10.0, max(length - 20.0, 20.0)))
        car = _car(rng, -1.0, rw, z0, textureless, LABEL_IDS["moving_car"], lane_x=-(rw - 3.25))
        car.velocity = np.array([0.0, 0.0, -speed if towards else speed])
        boxes.append(car)
    return Street(rw, sw, boxes, road, sidewalk, grass, curb)


def _car(rng, side, rw, z, textureless, label, lane_x=None) -> Box:
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
    return Box(np.array([xs[0], G - height, z]), np.array([xs[1], G, z + length]),
               [body, body, top, body, body, body])


# ---------------------------------------------------------------------------------------- rects
# A rect is an axis-aligned rectangle: normal axis a, plane value, extents on axes (a+1)%3 and
# (a+2)%3, outward normal sign, material index.
@dataclass
class Rects:
    """Rectangles as parallel arrays (R rectangles)."""

    axis: np.ndarray  # (R,) int
    value: np.ndarray  # (R,)
    lo: np.ndarray  # (R, 2) extents on axes (a+1)%3, (a+2)%3
    hi: np.ndarray
    sign: np.ndarray  # (R,) outward normal sign along axis
    material: List[Material]


def scene_rects(street: Street, frame: int, origin: np.ndarray, reach: float) -> Rects:
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
    return Rects(np.asarray(axis, np.int64), np.asarray(value, np.float64),
                 np.asarray(lo, np.float64).reshape(-1, 2), np.asarray(hi, np.float64).reshape(-1, 2),
                 np.asarray(sign, np.float64), mats)


def rect_corners(rects: Rects, k: int) -> np.ndarray:
    """(4, 3) world corners of rectangle ``k``, in order around its edge."""
    a = int(rects.axis[k])
    a1, a2 = (a + 1) % 3, (a + 2) % 3
    out = np.empty((4, 3))
    for i, (e1, e2) in enumerate(((0, 0), (1, 0), (1, 1), (0, 1))):
        out[i, a] = rects.value[k]
        out[i, a1] = (rects.lo[k, 0], rects.hi[k, 0])[e1]
        out[i, a2] = (rects.lo[k, 1], rects.hi[k, 1])[e2]
    return out


def cast(origin: np.ndarray, dirs: np.ndarray, inv: np.ndarray, rects: Rects,
         windows: Sequence[Sequence[tuple]], t_min: float,
         t_max: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest hit of the rays ``origin + t * dirs`` with ``rects``.

    Args:
        origin: (3,) world ray origin.
        dirs: (3, ...) float32 world ray directions; ``inv``: ``1 / dirs``.
        windows: per rect, the index tuples (basic slices of ``dirs[0]``) of the rays that can hit
            it (empty: none).
        t_min, t_max: a hit needs ``t_min < t`` (and ``t < t_max``).

    Returns:
        t (float32, inf = miss) and rect index (int32, -1 = miss), both shaped like ``dirs[0]``.
    """
    shape = dirs.shape[1:]
    t_best = np.full(shape, np.inf, dtype=np.float32)
    rid = np.full(shape, -1, dtype=np.int32)
    for k in range(len(rects.axis)):
        a = int(rects.axis[k])
        a1, a2 = (a + 1) % 3, (a + 2) % 3
        for sl in windows[k]:
            t = np.float32(rects.value[k] - origin[a]) * inv[a][sl]
            b = np.float32(origin[a1]) + t * dirs[a1][sl]
            c = np.float32(origin[a2]) + t * dirs[a2][sl]
            tb = t_best[sl]
            hit = (t > t_min) & (t < tb)
            if t_max is not None:
                hit &= t < t_max
            hit &= (b >= rects.lo[k, 0]) & (b <= rects.hi[k, 0])
            hit &= (c >= rects.lo[k, 1]) & (c <= rects.hi[k, 1])
            tb[hit] = t[hit]
            rid[sl][hit] = k
    return t_best, rid


# ----------------------------------------------------------------------------------- trajectory
def _rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def trajectory(rng: np.random.Generator, frames: int) -> List[np.ndarray]:
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
        poses.append(rigid_transform(_rot_y(yaw) @ _rot_x(pitch), np.array([x, 0.0, z])))
        z += v0 + va * math.sin(2 * np.pi * i / tv + pv)
    return poses

