"""fmdepth.data -- KITTI raw/odometry readers, image-folder/video reader, the synthetic
KITTI-layout renderer, augmentation, split handling and ground-truth export.

Every depth dataset returns :class:`DepthSample` items; :func:`collate_depth` stacks them into a
:class:`DepthBatch` (field shapes documented in :mod:`fmdepth.data.batch`).
"""
from .batch import DepthBatch, DepthSample, collate_depth
from .kitti import KittiOdometryDataset, KittiRawDataset, MonoSequenceDataset
from .splits import fetch_split, read_split

__all__ = [
    "DepthBatch", "DepthSample", "collate_depth",
    "KittiRawDataset", "KittiOdometryDataset", "MonoSequenceDataset",
    "read_split", "fetch_split",
]
from .folder import ImageFolderDataset  # noqa: E402

__all__ += ["ImageFolderDataset"]
