"""Dataset assembly: synthetic drives rendered and written in the KITTI raw and odometry layouts.

:func:`render_dataset` renders every drive (:mod:`.scene`, :mod:`.render`, :mod:`.lidar`), writes
the KITTI files with :mod:`fmdepth.data.kitti_write`, the dense ground truth under ``gt/`` and the
split files (layout: :mod:`fmdepth.data.synthetic`).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..kitti_io import RawCalibration, odometry_frame_name, raw_frame_name
from ..kitti_write import (link_or_copy, write_cam_to_cam, write_imu_to_velo, write_odometry_calib,
                           write_odometry_times, write_oxts, write_png, write_poses, write_timestamps,
                           write_velo_to_cam, write_velodyne, write_velodyne_timestamps)
from ..splits import write_split
from .lidar import kitti_convention_scan, render_velodyne
from .render import render_view
from .scene import (CAM2_X, CAM3_X, CAMERA_HEIGHT, CAMERA_X, KITTI_R_IMU_TO_VELO, KITTI_R_RECT_00,
                    KITTI_R_VELO_TO_CAM, KITTI_T_IMU_TO_VELO, KITTI_T_VELO_TO_CAM, LABELS, TEXTURELESS, Street,
                    build_street, imu_to_velo, kitti_intrinsics, rigid_transform, trajectory, velo_to_rect_cam0)

_CALIB_TIME = "01-Jan-2000 00:00:00 (fmdepth synthetic)"
_EXTRINSICS_TIME = "01-Jan-2000 00:00:00 (fmdepth synthetic; KITTI 2011_09_26 extrinsics)"
_BASE_TIME = dt.datetime(2011, 9, 26, 13, 0, 0)  # timestamp of every drive's first frame
# world (x right, y down, z forward) -> ENU (east = z, north = -x, up = -y)
_ENU_FROM_WORLD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass
class DriveInfo:
    """One rendered drive, as listed in ``synth_info.json``."""

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
    write_cam_to_cam(date_dir, K, height, width, CAMERA_X, KITTI_R_RECT_00, _CALIB_TIME)
    write_velo_to_cam(date_dir, KITTI_R_VELO_TO_CAM, KITTI_T_VELO_TO_CAM, _EXTRINSICS_TIME)
    write_imu_to_velo(date_dir, KITTI_R_IMU_TO_VELO, KITTI_T_IMU_TO_VELO, _EXTRINSICS_TIME)
    # the export's projection, from the calibration text as written (same rounding)
    velo_to_image_02 = RawCalibration(date_dir, need_velodyne=True).velo_to_image("02") if velodyne else None
    n_test = max(1, drives // 4)
    seeds = np.random.SeedSequence(seed).spawn(drives)
    infos: List[DriveInfo] = []
    bar = tqdm(total=drives * frames, desc="fmdepth synth", unit="frame", disable=not progress)
    for d in range(drives):
        rng = np.random.default_rng(seeds[d])
        info = DriveInfo(f"{date}/{date}_drive_{d + 1:04d}_sync", d, frames,
                         "test" if d >= drives - n_test else "train")
        infos.append(info)
        poses0 = trajectory(rng, frames)
        street = build_street(rng, poses0[-1][2, 3] + 60.0, textureless, moving_cars)
        _write_drive(root, info, street, poses0, K, height, width, supersample, velo_to_image_02, bar.update)
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


def _write_drive(root: str, info: DriveInfo, street: Street, poses0: List[np.ndarray], K: np.ndarray,
                 height: int, width: int, supersample: int, velo_to_image_02: Optional[np.ndarray],
                 frame_done) -> None:
    """Render and write one drive: raw folder, odometry sequence, ground truth (no velodyne scans
    when ``velo_to_image_02`` is None). ``poses0``: world_T_cam0 (4, 4) per frame."""
    frames = info.frames
    velodyne = velo_to_image_02 is not None
    drive_dir = os.path.join(root, info.folder)
    gt_dir = os.path.join(root, "gt", info.folder)
    seq_dir = os.path.join(root, "sequences", f"{info.sequence:02d}")
    for sub in ("image_02/data", "image_03/data"):
        os.makedirs(os.path.join(drive_dir, sub))
    for sub in ("depth", "labels", "depth_03", "labels_03"):
        os.makedirs(os.path.join(gt_dir, sub))
    for sub in ("image_2", "image_3"):
        os.makedirs(os.path.join(seq_dir, sub))
    if velodyne:
        os.makedirs(os.path.join(drive_dir, "velodyne_points", "data"))
        os.makedirs(os.path.join(seq_dir, "velodyne"))
    T_c0_velo = velo_to_rect_cam0()
    T_velo_imu = imu_to_velo()
    inv0 = np.linalg.inv(poses0[0])
    T_c0_c2 = rigid_transform(np.eye(3), np.array([CAM2_X, 0, 0]))
    T_c0_c3 = rigid_transform(np.eye(3), np.array([CAM3_X, 0, 0]))
    cams = {"02": ("image_02", "image_2", "depth", "labels", T_c0_c2),
            "03": ("image_03", "image_3", "depth_03", "labels_03", T_c0_c3)}
    poses_out = {"02": [], "03": []}
    imu_poses = []
    for i in range(frames):
        for cam, (raw_sub, odo_sub, dsub, lsub, T_c0_c) in cams.items():
            world_T_cam = poses0[i] @ T_c0_c
            poses_out[cam].append(inv0 @ world_T_cam)
            image, depth, label = render_view(street, i, world_T_cam, K, height, width, supersample)
            png = os.path.join(drive_dir, raw_sub, "data", raw_frame_name(i, ".png"))
            write_png(png, image)
            link_or_copy(png, os.path.join(seq_dir, odo_sub, odometry_frame_name(i, ".png")))
            np.save(os.path.join(gt_dir, dsub, raw_frame_name(i, ".npy")), depth)
            np.save(os.path.join(gt_dir, lsub, raw_frame_name(i, ".npy")), label)
            if cam == "02":
                depth_02 = depth
        world_T_velo = poses0[i] @ T_c0_velo
        imu_poses.append(world_T_velo @ T_velo_imu)
        if velodyne:
            scan = kitti_convention_scan(render_velodyne(street, i, world_T_velo), depth_02, velo_to_image_02)
            binp = os.path.join(drive_dir, "velodyne_points", "data", raw_frame_name(i, ".bin"))
            write_velodyne(binp, scan)
            link_or_copy(binp, os.path.join(seq_dir, "velodyne", odometry_frame_name(i, ".bin")))
        frame_done(1)
    for sub in ("image_02", "image_03"):
        write_timestamps(os.path.join(drive_dir, sub, "timestamps.txt"), _BASE_TIME, frames)
    if velodyne:
        write_velodyne_timestamps(os.path.join(drive_dir, "velodyne_points"), _BASE_TIME, frames)
    write_oxts(os.path.join(drive_dir, "oxts"), imu_poses, _ENU_FROM_WORLD, _BASE_TIME)
    for cam in ("02", "03"):
        write_poses(os.path.join(gt_dir, f"poses_{cam}.txt"), poses_out[cam])
    poses_dir = os.path.join(root, "poses")
    os.makedirs(poses_dir, exist_ok=True)
    write_poses(os.path.join(poses_dir, f"{info.sequence:02d}.txt"), [inv0 @ p for p in poses0])
    write_odometry_calib(seq_dir, K, CAMERA_X, T_c0_velo)
    write_odometry_times(seq_dir, frames)


def _write_splits(root: str, infos: List[DriveInfo], val_fraction: float, seed: int) -> None:
    """Split files: test = every frame of the test drives (left camera); the train drives' frames
    with both neighbours (both cameras) go to val with probability ``val_fraction``, else train."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    train, val, test = [], [], []
    odo_train, odo_val, odo_test = [], [], {}
    for info in infos:
        seq = str(info.sequence)
        if info.split == "test":
            test += [(info.folder, i, "l") for i in range(info.frames)]
            odo_test[info.sequence] = [(seq, i, "l") for i in range(info.frames)]
            continue
        for i in range(1, info.frames - 1):  # both neighbours exist
            is_val = rng.uniform() < val_fraction
            for side in ("l", "r"):
                (val if is_val else train).append((info.folder, i, side))
                (odo_val if is_val else odo_train).append((seq, i, side))
    if not val and train:  # always provide a non-empty validation split
        val, odo_val = train[-2:], odo_train[-2:]
        train, odo_train = train[:-2], odo_train[:-2]
    split_dir = os.path.join(root, "splits")
    for name, entries in (("train_files.txt", train), ("val_files.txt", val), ("test_files.txt", test),
                          ("odom/train_files.txt", odo_train), ("odom/val_files.txt", odo_val)):
        write_split(os.path.join(split_dir, name), entries)
    for seq, entries in odo_test.items():
        write_split(os.path.join(split_dir, "odom", f"test_files_{seq:02d}.txt"), entries)
