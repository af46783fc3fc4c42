"""Sparse and dense correspondence between images of different objects, styles or sensors.

* :func:`find_best_buddies` -- Neural Best-Buddies (training-free, VGG19 feature hierarchy).
* :func:`fit_affine` -- robust affine from point pairs (initialises registration).

The learned joint semantic alignment + landmark detection lives by layer: the network in
:mod:`fmdepth.networks.semantic`, its system in :mod:`fmdepth.models.semantic`, its pairs in
:mod:`fmdepth.data.semantic` (trained with ``fmdepth train --config configs/semantic_synthetic.yaml``).

Points are (x, y) pixels with pixel centres at integers (the :mod:`fmdepth.geometry` convention).
"""
from .affine import fit_affine, fit_affine_with_inliers
from .nbb import NBBResult, find_best_buddies, load_image

__all__ = ["find_best_buddies", "NBBResult", "fit_affine", "fit_affine_with_inliers", "load_image"]
