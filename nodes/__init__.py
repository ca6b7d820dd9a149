"""ComfyUI adapters of the pack (V3 schema). The only package that imports ``comfy``."""

from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io

from . import careset_nodes, clip_nodes, erasure_nodes, score_nodes, unlearn_nodes


class ReCAREExtension(ComfyExtension):
    """Registers every ReCARE node with ComfyUI."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*clip_nodes.NODES, *careset_nodes.NODES, *unlearn_nodes.NODES, *erasure_nodes.NODES,
                *score_nodes.NODES]
