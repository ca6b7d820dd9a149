"""ComfyUI adapters of the pack (V3 schema). The only package that imports ``comfy``."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io


class ReCAREExtension(ComfyExtension):
    """Registers every ReCARE node with ComfyUI."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return []
