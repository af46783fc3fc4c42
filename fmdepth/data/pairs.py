"""Image pairs for registration: the one import point for synthesis, pair folders and video pairs.

Conventions (shared with :mod:`fmdepth.models.registration` and :mod:`fmdepth.metrics.registration`):

* images are float32 arrays/tensors in [0, 1], channels first ``(C, H, W)``, read by
  :func:`fmdepth.data.media.read_image` (``load_image`` here);
* a displacement ``flow`` is ``(2, H, W)`` in pixels **on the fixed-image grid**, ``flow[0]`` = dx
  (columns), ``flow[1]`` = dy (rows): fixed pixel ``p`` corresponds to moving pixel ``p + flow(p)``,
  so the registered image is ``warped(p) = moving(p + flow(p))`` (``fmdepth.geometry.flow_warp``);
* landmarks are ``(N, 2)`` arrays of ``(x, y)`` pixel coordinates (pixel centres at integers),
  stored as CSV files with one ``x,y`` line per landmark (an optional ``x,y`` header is allowed).

Where things live:

* :mod:`fmdepth.data.modalities` -- base images and the modality registry :data:`MODALITIES`;
* :mod:`fmdepth.data.warps` -- the random affine / smooth-field generator;
* :mod:`fmdepth.data.synthetic_pairs` -- :func:`make_pair` and the synthetic datasets;
* :mod:`fmdepth.data.pair_io` -- landmark files, 8-bit writing, resizing, pair folders
  (:class:`PairFolderDataset`, :func:`collate_pairs`);
* :mod:`fmdepth.data.video_pairs` -- :func:`read_frames`, :class:`FramePairDataset`.
"""
from .media import IMAGE_EXTS, VIDEO_EXTS, image_to_chw, iter_video_frames, to_gray, video_info
from .media import is_video_file as is_video
from .media import read_image as load_image
from .modalities import MODALITIES, SHIPPED_IMAGES, mni152_slice, modality_images, shipped_image, stereo_rgbd
from .pair_io import (PairBatch, PairFolderDataset, collate_pairs, read_landmarks, resize_array, save_image,
                      write_landmarks)
from .synthetic_pairs import (FastSyntheticPairDataset, RegistrationPair, SyntheticPairDataset, make_pair,
                              make_pair_folder, write_pair_folder)
from .video_pairs import FramePairDataset, check_video_pair, read_frames
from .warps import random_affine, random_smooth_flow, random_warp

__all__ = [
    "IMAGE_EXTS", "VIDEO_EXTS", "MODALITIES", "SHIPPED_IMAGES", "load_image", "image_to_chw", "to_gray",
    "save_image", "resize_array", "read_landmarks", "write_landmarks", "is_video", "video_info",
    "iter_video_frames", "shipped_image", "stereo_rgbd", "mni152_slice", "modality_images",
    "random_affine", "random_smooth_flow", "random_warp", "RegistrationPair", "make_pair",
    "write_pair_folder", "make_pair_folder", "PairBatch", "collate_pairs", "PairFolderDataset",
    "SyntheticPairDataset", "FastSyntheticPairDataset", "read_frames", "check_video_pair", "FramePairDataset",
]
