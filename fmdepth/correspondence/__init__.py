"""Sparse and dense correspondence between images of different objects, styles or sensors.

* :func:`find_best_buddies` -- Neural Best-Buddies (training-free, VGG19 feature hierarchy).
* :func:`fit_affine` -- robust affine from point pairs (initialises registration).
* :mod:`fmdepth.correspondence.semantic` -- joint semantic alignment + landmark detection
  (learned, self-supervised on synthetically warped pairs).

Points are (x, y) pixels with pixel centres at integers (the :mod:`fmdepth.geometry` convention).
"""
from .affine import fit_affine, fit_affine_with_inliers
from .nbb import NBBResult, find_best_buddies, load_image

__all__ = ["find_best_buddies", "NBBResult", "fit_affine", "fit_affine_with_inliers", "load_image"]
