"""Trainable systems: networks + geometry + losses composed into one objective (no I/O).

``depth``: the self-supervised depth/pose system with the feature-metric loss.
"""
from .depth import DepthSystem, build_depth_system, colorize

__all__ = ["DepthSystem", "build_depth_system", "colorize"]
