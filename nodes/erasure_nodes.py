"""Erasures as artifacts: apply with a strength (stackable, removable), save, load (also the paper's released
full-UNet checkpoints), hand over as ComfyUI's LORA_MODEL, compress to a LoRA of a chosen rank."""

from __future__ import annotations

import json
import os
from pathlib import Path

import comfy.model_management
import folder_paths
from comfy_api.v0_0_2 import io

from ..recare_core.erasure.io import TORCH_EXTENSIONS, erasure_to_lora_model, load_erasure, save_numbered_erasure
from ..recare_core.erasure.lora_compress import compress_erasure
from .diffusers_import import resolve_against_model
from .erasure_patch import apply_erasure
from .file_inputs import model_file
from .training_context import ComfyProgress, interrupted, stops_as_comfy_interrupt
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
                "its concept back. A full UNet checkpoint (the paper's ReCARE-Diffusers-UNet.pt) is applied as its "
                "difference to this model."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to apply the erasure to (the architecture it was trained "
                                                "for; for an imported full UNet, the base model it was trained from)."),
                ErasureType.Input("erasure", tooltip="The erasure from ReCAREUnlearn or LoadErasure."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How strongly to apply the erasure: 1 as trained, 0 not at all."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the erasure patched in."),
                ErasureType.Output(display_name="erasure", tooltip=(
                    "The erasure as changes to this model: the input erasure unchanged, or for an imported full "
                    "UNet its difference to this model (ready for SaveErasure, CompressErasure, ErasureToLoraModel).")),
            ],
        )

    @classmethod
    def execute(cls, model, erasure, strength) -> io.NodeOutput:
        resolved = resolve_against_model(model, erasure)
        return io.NodeOutput(apply_erasure(model, resolved, strength), resolved)


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
                                tooltip="File name prefix inside models/loras; subfolders may be given with '/'. "
                                        "Absolute paths, '..', hidden names and links leading out of models/loras "
                                        "are refused."),
            ],
            outputs=[io.String.Output(display_name="file", tooltip="The saved file, relative to models/loras.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, erasure, filename_prefix) -> io.NodeOutput:
        root = folder_paths.get_folder_paths(ERASURE_FOLDER)[0]
        path = save_numbered_erasure(erasure, root, filename_prefix, "filename_prefix", "models/loras")
        relative = path.relative_to(Path(root).resolve()).as_posix()
        return io.NodeOutput(relative, ui={"text": [f"Saved {relative} to models/loras"]})


class LoadErasure(io.ComfyNode):
    """Read an erasure file from models/loras."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoadErasure",
            display_name="Load Erasure",
            category=f"{CATEGORY}/erasure",
            description=(
                "Loads an erasure saved by SaveErasure from models/loras, with its metadata. Also imports a released "
                "full diffusers-format UNet (the paper's ReCARE-Diffusers-UNet.pt) placed in models/loras: it is "
                "read weights-only (a file with pickled code is refused) and becomes its difference to the model "
                "it is applied to in ApplyErasedUNet."
            ),
            inputs=[
                io.Combo.Input("name", options=_erasure_files(), tooltip=(
                    "A file in models/loras: a .safetensors erasure, or a diffusers UNet state dict "
                    "(.pt/.pth/.bin/.ckpt saved with torch.save, or .safetensors).")),
            ],
            outputs=[
                ErasureType.Output(display_name="erasure", tooltip="The loaded erasure."),
                io.String.Output(display_name="info",
                                 tooltip="The erased concept and the settings it was trained with."),
            ],
        )

    @classmethod
    def execute(cls, name) -> io.NodeOutput:
        erasure = load_erasure(model_file(ERASURE_FOLDER, name, "name", _erasure_files()))
        if erasure.needs_base_model:
            contents = (f"full diffusers UNet with {len(erasure.diffusers_unet)} weights; applied as its difference "
                        "to the model given to ApplyErasedUNet")
        else:
            contents = f"{len(erasure.increments)} weight increments"
        info = f"erased concept: {erasure.concept}\n{contents}\n" + json.dumps(
            {k: v for k, v in erasure.metadata.items() if k != "care_set"}, indent=1, default=str)
        return io.NodeOutput(erasure, info)

    @classmethod
    def fingerprint_inputs(cls, name) -> str:
        """Re-run when the file on disk changes."""
        path = folder_paths.get_full_path(ERASURE_FOLDER, name) if name in _erasure_files() else None
        return f"{name}:{os.path.getmtime(path) if path else 'missing'}"


class ErasureToLoraModel(io.ComfyNode):
    """Hand an erasure over to ComfyUI's own LoRA training nodes."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ErasureToLoraModel",
            display_name="Erasure to LoRA Model",
            category=f"{CATEGORY}/erasure",
            description=(
                "Turns an erasure into ComfyUI's LORA_MODEL (the weights only, no metadata), which the core "
                "nodes SaveLoRA and LoraModelLoader accept."
            ),
            inputs=[ErasureType.Input("erasure", tooltip="The erasure to hand over as a LORA_MODEL.")],
            outputs=[io.LoraModel.Output(display_name="lora", tooltip="The erasure's weight changes as a LoRA.")],
        )

    @classmethod
    def execute(cls, erasure) -> io.NodeOutput:
        return io.NodeOutput(erasure_to_lora_model(erasure))


class CompressErasure(io.ComfyNode):
    """Full weight deltas -> LoRA of a chosen rank (truncated SVD), with the error it introduces."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CompressErasure",
            display_name="Compress Erasure to LoRA",
            category=f"{CATEGORY}/erasure",
            description=(
                "Makes an erasure smaller to share: every full weight change becomes a LoRA of the chosen rank "
                "(its best approximation, by SVD). Reports the relative error this introduces, overall and for "
                "the worst layers; biases and layers a LoRA would not shrink stay exact."
            ),
            inputs=[
                ErasureType.Input("erasure", tooltip="The erasure to compress."),
                io.Int.Input("rank", default=32, min=1, max=1024, tooltip=(
                    "LoRA rank: higher keeps more of the erasure (smaller error) but gives a bigger file.")),
            ],
            outputs=[
                ErasureType.Output(display_name="erasure", tooltip="The compressed erasure (LoRA increments)."),
                io.String.Output(display_name="report", tooltip="Relative error introduced, overall and per layer."),
            ],
        )

    @classmethod
    def execute(cls, erasure, rank) -> io.NodeOutput:
        erasure.require_increments("compress it to a LoRA")
        with stops_as_comfy_interrupt():
            compressed, report = compress_erasure(
                erasure, rank, device=comfy.model_management.get_torch_device(),
                progress=ComfyProgress(len(erasure.increments)), should_stop=interrupted)
        return io.NodeOutput(compressed, report.summary(), ui={"text": [report.summary()]})


def _erasure_files() -> list[str]:
    extensions = (".safetensors", *TORCH_EXTENSIONS)
    return [name for name in folder_paths.get_filename_list(ERASURE_FOLDER) if name.lower().endswith(extensions)]


NODES = [ApplyErasedUNet, SaveErasure, LoadErasure, ErasureToLoraModel, CompressErasure]
