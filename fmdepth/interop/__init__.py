"""Interoperability: import the field's published weights, export networks for deployment.

* :func:`import_monodepth2` -- a Monodepth2 model folder -> fmdepth DepthNet (+ PoseNet) weights.
* :func:`import_featdepth` -- a FeatDepth checkpoint -> DepthNet / PoseNet / FeatureNet weights.
* :func:`write_checkpoint` -- an :class:`ImportReport` as an fmdepth checkpoint (the engine's format).
* :func:`export_network` -- a checkpoint's DepthNet or PoseNet as ONNX or TorchScript.

Layer 4 (wiring): uses ``networks``, ``config`` and the engine's checkpoint writer.
"""
from .common import ImportReport, ImportWeightsError, read_torch_file, write_checkpoint  # noqa: F401
from .featdepth import import_featdepth  # noqa: F401
from .monodepth2 import import_monodepth2  # noqa: F401

SOURCES = ("monodepth2", "featdepth")


def export_network(*args, **kwargs):
    """See :func:`fmdepth.interop.export.export_network` (imported lazily)."""
    from .export import export_network as _export

    return _export(*args, **kwargs)
