"""fmdepth: self-supervised monocular depth and ego-motion with a feature-metric loss.

Sub-packages (see DESIGN.md): ``geometry`` (the shared warping core), ``losses``,
``networks``, ``models``, ``correspondence``, ``data``, ``metrics``, ``engine``.
Import them explicitly; this top-level module stays light so ``fmdepth --help`` is fast.
"""
__version__ = "0.1.0"
