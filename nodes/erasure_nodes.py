"""Erasures as artifacts: apply with a strength (stackable, removable), save, load."""

from __future__ import annotations

import json
import os

import folder_paths
from comfy_api.latest import io

from ..recare_core.erasure_io import load_erasure, next_free_path, save_erasure
from .erasure_patch import apply_erasure
from .types import CATEGORY, ErasureType

ERASURE_FOLDER = "loras"


class ApplyErasedUNet(io.ComfyNode):
    """Patch an erasure into a model clone, like a LoRA."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApplyErasedUNet",
            display_name="Apply Erased UNet",
            category=f"{CATEGORY}/erasure",
            description=(
                "Applies an erasure to a model as removable patches on a copy (the input model is never changed). "
                "Strength 0 gives the original model exactly; chain several to stack erasures, and drop one to bring "
                "its concept back."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to apply the erasure to (the architecture it was trained for)."),
                ErasureType.Input("erasure", tooltip="The erasure from ReCAREUnlearn or LoadErasure."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How strongly to apply the erasure: 1 as trained, 0 not at all."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The model with the erasure patched in.")],
        )

    @classmethod
    def execute(cls, model, erasure, strength) -> io.NodeOutput:
        return io.NodeOutput(apply_erasure(model, erasure, strength))


class SaveErasure(io.ComfyNode):
    """Write an erasure to models/loras (with a counter; never overwrites)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveErasure",
            display_name="Save Erasure",
            category=f"{CATEGORY}/erasure",
            description=(
                "Saves an erasure as a .safetensors file in models/loras with a counter, never overwriting. The file "
                "also loads in the stock LoraLoaderModelOnly; its header records the erased concept, the CARE-set, "
                "every training setting, the base model and the adversarial embeddings."
            ),
            inputs=[
                ErasureType.Input("erasure", tooltip="The erasure to save."),
                io.String.Input("filename_prefix", default="recare/erasure",
                                tooltip="File name prefix inside models/loras; a subfolder may be given with '/'."),
            ],
            outputs=[io.String.Output(display_name="file", tooltip="The saved file, relative to models/loras.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, erasure, filename_prefix) -> io.NodeOutput:
        root = folder_paths.get_folder_paths(ERASURE_FOLDER)[0]
        path = save_erasure(erasure, next_free_path(root, filename_prefix.strip() or "recare/erasure"))
        relative = path.relative_to(root).as_posix()
        return io.NodeOutput(relative, ui={"text": [f"Saved {relative} to models/loras"]})


class LoadErasure(io.ComfyNode):
    """Read an erasure file from models/loras."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoadErasure",
            display_name="Load Erasure",
            category=f"{CATEGORY}/erasure",
            description="Loads an erasure saved by SaveErasure from models/loras, with its metadata.",
            inputs=[
                io.Combo.Input("name", options=_erasure_files(),
                               tooltip="An erasure file in models/loras (.safetensors)."),
            ],
            outputs=[
                ErasureType.Output(display_name="erasure", tooltip="The loaded erasure."),
                io.String.Output(display_name="info", tooltip="The erased concept and the settings it was trained with."),
            ],
        )

    @classmethod
    def execute(cls, name) -> io.NodeOutput:
        erasure = load_erasure(folder_paths.get_full_path_or_raise(ERASURE_FOLDER, name))
        info = f"erased concept: {erasure.concept}\n{len(erasure.increments)} weight increments\n" + json.dumps(
            {k: v for k, v in erasure.metadata.items() if k != "care_set"}, indent=1, default=str)
        return io.NodeOutput(erasure, info)

    @classmethod
    def fingerprint_inputs(cls, name) -> str:
        """Re-run when the file on disk changes."""
        path = folder_paths.get_full_path(ERASURE_FOLDER, name)
        return f"{name}:{os.path.getmtime(path) if path else 'missing'}"


def _erasure_files() -> list[str]:
    return [name for name in folder_paths.get_filename_list(ERASURE_FOLDER) if name.endswith(".safetensors")]


NODES = [ApplyErasedUNet, SaveErasure, LoadErasure]
