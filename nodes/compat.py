"""What differs between the ComfyUI releases the pack supports (0.3.64 to 0.33).

The nodes use ComfyUI's versioned API ``comfy_api.v0_0_2`` (present, with the same ``io`` / ``ui`` /
``ComfyExtension``, in every supported release). Newer schema features are switched on here only where the running
ComfyUI has them, so one node definition serves every release.
"""

from __future__ import annotations

import inspect
from typing import TypeVar

from comfy_api.v0_0_2 import io

InputT = TypeVar("InputT", bound=io.Input)

SUPPORTS_ADVANCED_INPUTS: bool = "advanced" in inspect.signature(io.Input.__init__).parameters
"""Whether this ComfyUI's schema can fold long-tail inputs away as "advanced" (0.33.0 can, 0.3.64 cannot)."""


def advanced(widget: InputT) -> InputT:
    """Mark an input as advanced (folded away by default) where the running ComfyUI supports it; unchanged
    elsewhere."""
    if SUPPORTS_ADVANCED_INPUTS:
        widget.advanced = True
    return widget
