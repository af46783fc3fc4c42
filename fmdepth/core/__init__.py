"""The contract every trainable thing meets (layer 0: imports only torch and the standard library).

* :mod:`fmdepth.core.system`: the ``System`` protocol and ``StepOutput``.
* :mod:`fmdepth.core.task`: ``Task``, what the training loop receives.
* :mod:`fmdepth.core.checkpoint`: atomic, ``weights_only``-loadable checkpoints.
"""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: F401
from .system import StepOutput, System, check_system  # noqa: F401
from .task import Task, Validate  # noqa: F401
