"""ReCARE core: CARE-set construction, guidance maths, erasure training and CARE score.

Pure torch + numpy. Nothing in this package imports ComfyUI; models are reached only through
:class:`recare_core.training.backend.DiffusionBackend`.
"""

__version__ = "0.2.0"
