"""Synthetic KITTI-layout driving sequences rendered by analytic ray casting.

Each drive is a procedural street (:mod:`.scene`: road, sidewalks, buildings, parked and moving
cars, poles; a forward-moving stereo rig at KITTI's geometry), ray cast into colour images, dense
depth and labels (:mod:`.render`) and into 64-beam velodyne scans (:mod:`.lidar`), and written in
the KITTI raw and odometry layouts (:mod:`.dataset`). A fraction ``textureless`` of the surfaces
are flat coloured.

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
from .dataset import DriveInfo, render_dataset
from .lidar import kitti_convention_scan, render_velodyne
from .render import render_view
from .scene import (CAM2_X, CAM3_X, CAMERA_HEIGHT, CAMERA_X, CLASS_MASK, CURB_HEIGHT, FAR_GROUND, GRAY_BASELINE,
                    KITTI_R_IMU_TO_VELO, KITTI_R_RECT_00, KITTI_R_VELO_TO_CAM, KITTI_T_IMU_TO_VELO,
                    KITTI_T_VELO_TO_CAM, LABEL_IDS, LABELS, TEXTURELESS, VELO_MAX_RANGE, Street, build_street,
                    imu_to_velo, kitti_intrinsics, trajectory, velo_to_rect_cam0)

__all__ = [
    "render_dataset", "DriveInfo",
    "render_view", "render_velodyne", "kitti_convention_scan",
    "LABELS", "LABEL_IDS", "TEXTURELESS", "CLASS_MASK",
    "CAMERA_HEIGHT", "CURB_HEIGHT", "CAM2_X", "CAM3_X", "GRAY_BASELINE", "CAMERA_X", "FAR_GROUND", "VELO_MAX_RANGE",
    "KITTI_R_RECT_00", "KITTI_R_VELO_TO_CAM", "KITTI_T_VELO_TO_CAM", "KITTI_R_IMU_TO_VELO", "KITTI_T_IMU_TO_VELO",
    "kitti_intrinsics", "velo_to_rect_cam0", "imu_to_velo", "Street", "build_street", "trajectory",
]
