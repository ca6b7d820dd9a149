"""ReCARE core: CARE-set construction, guidance maths, erasure training and CARE score.

Pure torch + numpy. Nothing in this package imports ComfyUI; models are reached only through
:class:`recare_core.backend.DiffusionBackend`.
"""

__version__ = "0.1.0"
