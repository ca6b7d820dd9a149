"""LoadCAREClip: the joint image-text CLIP (open_clip) used to build the CARE-set and to score CARE."""

from __future__ import annotations

import os

from comfy_api.v0_0_2 import io

import comfy.model_management
import folder_paths

from ..recare_core.careset.clip_loading import (
    CONFIG_FILE_NAME,
    FROM_CONFIG,
    clip_architectures,
    load_care_clip,
    pretrained_tags,
)
from ..recare_core.safe_files import require_inside
from .file_inputs import check_choice, model_file
from .types import CATEGORY, CareClipType

OPEN_CLIP_FOLDER = "open_clip"
WEIGHT_EXTENSIONS = {".safetensors", ".bin", ".pt", ".pth"}
DEFAULT_ARCHITECTURE = "ViT-B-32"
DEFAULT_WEIGHTS = "openai"
QUICK_GELU = {"auto": None, "on": True, "off": False}
DEVICES = ("auto", "cpu")


def register_open_clip_folder() -> None:
    """Make ``models/open_clip/`` a ComfyUI model folder (kept when extra_model_paths.yaml already names one)."""
    default = os.path.join(folder_paths.models_dir, OPEN_CLIP_FOLDER)
    entry = folder_paths.folder_names_and_paths.get(OPEN_CLIP_FOLDER)
    if entry is None:
        folder_paths.folder_names_and_paths[OPEN_CLIP_FOLDER] = ([default], set(WEIGHT_EXTENSIONS))
        return
    paths, extensions = entry
    if default not in paths:
        paths.append(default)
    if not extensions:  # registered by a path file without extensions: list weight files only
        folder_paths.folder_names_and_paths[OPEN_CLIP_FOLDER] = (paths, set(WEIGHT_EXTENSIONS))


register_open_clip_folder()


def weight_choices() -> list[str]:
    """Files in the open_clip model folders, then open_clip's pretrained names (downloaded when online)."""
    return folder_paths.get_filename_list(OPEN_CLIP_FOLDER) + pretrained_tags()


class LoadCAREClip(io.ComfyNode):
    """Loads an open_clip CLIP (architecture + weights) as a CARE_CLIP."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoadCAREClip",
            display_name="Load CARE CLIP",
            category=f"{CATEGORY}/care-set",
            description=(
                "Loads the joint image-text CLIP that builds the CARE-set and scores CARE (the paper uses ViT-B-32 "
                "with OpenAI weights). Works offline from a weights file in ComfyUI/models/open_clip/ (for the "
                "paper's CLIP: open_clip_model.safetensors from huggingface.co/timm/vit_base_patch32_clip_224.openai)"
                "; a pretrained name such as 'openai' is downloaded by open_clip when the machine is online."
            ),
            inputs=[
                io.Combo.Input("weights", options=weight_choices(), default=DEFAULT_WEIGHTS,
                               tooltip="A weights file from ComfyUI/models/open_clip/ (.safetensors/.bin/.pt, read "
                                       "without running code from it), or an open_clip pretrained name, downloaded "
                                       "when online."),
                io.Combo.Input("architecture", options=[FROM_CONFIG, *clip_architectures()],
                               default=DEFAULT_ARCHITECTURE,
                               tooltip="The open_clip architecture the weights were made for. "
                                       f"'{FROM_CONFIG}' reads it from the open_clip_config.json next to the file "
                                       "(as in open_clip's Hugging Face repositories)."),
                io.Combo.Input("quick_gelu", options=list(QUICK_GELU), default="auto",
                               tooltip="OpenAI's CLIP weights need the QuickGELU activation. 'auto' turns it on for "
                                       "'-quickgelu' architectures, for the 'openai' pretrained name and for files "
                                       "whose name or folder name contains 'openai'; set 'on' for OpenAI weights "
                                       "saved under another name."),
                io.Combo.Input("device", options=list(DEVICES), default="auto",
                               tooltip="'auto' runs CLIP on ComfyUI's device (the GPU when there is one)."),
            ],
            outputs=[CareClipType.Output(display_name="care_clip", tooltip="The CLIP for BuildCARESet and CAREScore.")],
        )

    @classmethod
    def execute(cls, weights: str, architecture: str, quick_gelu: str, device: str) -> io.NodeOutput:
        check_choice(architecture, [FROM_CONFIG, *clip_architectures()], "architecture")
        check_choice(quick_gelu, QUICK_GELU, "quick_gelu")
        check_choice(device, DEVICES, "device")
        source = _weights_source(weights, architecture)
        torch_device = comfy.model_management.get_torch_device() if device == "auto" else "cpu"
        clip = load_care_clip(architecture, source, device=torch_device, quick_gelu=QUICK_GELU[quick_gelu])
        return io.NodeOutput(clip)


def _weights_source(weights: object, architecture: str) -> str:
    """A file of models/open_clip (inside it once links are followed, with the open_clip_config.json beside it
    when the architecture is read from there), or one of open_clip's pretrained names: nothing else is looked up."""
    files = folder_paths.get_filename_list(OPEN_CLIP_FOLDER)
    if weights not in files:
        return check_choice(weights, pretrained_tags(), "weights")
    path = model_file(OPEN_CLIP_FOLDER, weights, "weights", files)
    config = path.parent / CONFIG_FILE_NAME
    if architecture == FROM_CONFIG and os.path.lexists(config):
        require_inside(config, folder_paths.get_folder_paths(OPEN_CLIP_FOLDER),
                       f"the {CONFIG_FILE_NAME} beside {weights!r}", "models/open_clip")
    return str(path)


NODES = [LoadCAREClip]
