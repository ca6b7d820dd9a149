"""ComfyUI-ReCARE: erase a concept from a diffusion model while keeping the concepts that co-occur with it.

ComfyUI imports this file at start-up. It must import fast and never raise: the node modules (and with them
torch-heavy code) load only when ComfyUI calls :func:`comfy_entrypoint`, and optional libraries (open_clip,
spaCy) load only when a node that needs them runs.
"""

from __future__ import annotations

import logging


async def comfy_entrypoint():
    """Return the pack's ComfyUI V3 extension (called by ComfyUI's custom-node loader)."""
    from .nodes import ReCAREExtension

    return ReCAREExtension()


__all__ = ["comfy_entrypoint"]
logging.getLogger(__name__).debug("ComfyUI-ReCARE entry point loaded")
