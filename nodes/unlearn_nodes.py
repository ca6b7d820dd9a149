"""Erasure-method nodes: ReCAREUnlearn, ESDUnlearn and UCEErase, on the MODEL / CLIP / VAE a ComfyUI user already
has loaded. Each finds its method in :mod:`recare_core.methods.registry`, builds its widgets from the shared
definitions (:mod:`nodes.widgets`) and returns the same three outputs: the erased model (a patched clone; the
input model is untouched), the ERASURE (to save / apply / stack / compress) and an image of the loss curves."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import folder_paths
import torch
from comfy_api.v0_0_2 import io

from ..recare_core import __version__ as PACK_VERSION
from ..recare_core.erasure.increments import Erasure
from ..recare_core.methods.esd import ESDConfig
from ..recare_core.methods.recare import PRESETS, ReCAREConfig
from ..recare_core.methods.registry import ErasureMethod, MethodInputs, MethodResult, get_method
from ..recare_core.methods.uce import UCEConfig
from ..recare_core.safe_files import check_relative_name
from ..recare_core.scoring.loss_plot import render_loss_curves
from .comfy_backend import ComfyBackend, save_textual_inversion_embedding
from .erasure_patch import apply_erasure
from .file_inputs import check_choice
from .prompt_limits import check_method_prompts
from .training_context import (ComfyProgress, interrupted, make_weights_autograd_safe, stops_as_comfy_interrupt,
                               training_mode)
from .types import CATEGORY, CareSetType, ErasureType
from .widgets import config_from_values, config_inputs

RECARE_FIELDS = ("n_rounds", "erase_steps", "erase_lr", "ti_steps", "ti_lr", "robust_steps", "robust_lr",
                 "negative_guidance", "compositional_guidance_scale", "num_adv_concepts", "ddim_steps",
                 "sampling_cfg", "train_method", "update", "lora_rank", "image_size", "gradient_checkpointing", "seed")
RECARE_OPTION_FIELDS = ("anchor_mode", "age_top_k", "doco_surgery", "doco_lambda", "erase_target_weight",
                        "anchor_weight", "adversarial_weight", "retain_weight")
ESD_FIELDS = ("erase_steps", "erase_lr", "negative_guidance", "ddim_steps", "sampling_cfg", "train_method", "update",
              "lora_rank", "image_size", "gradient_checkpointing", "seed")
UCE_FIELDS = ("guide", "preserve", "preserve_care_set", "erase_scale", "preserve_scale", "lamb")


def _model_inputs(with_vae: bool) -> list[io.Input]:
    inputs = [io.Model.Input("model", tooltip="The diffusion model to erase the concept from: SD1.x, SD2.x or SDXL "
                                              "family (eps or v-prediction)."),
              io.Clip.Input("clip", tooltip="The model's text encoder; prompts of the concept are encoded with it.")]
    if with_vae:
        inputs.append(io.Vae.Input("vae", tooltip="The model's VAE; encodes the target images for textual "
                                                  "inversion."))
    return inputs


def _concept_input() -> io.Input:
    return io.String.Input("erase_concept", default="nudity",
                           tooltip="The concept to erase, as a prompt (e.g. 'nudity', 'Van Gogh'); at most 75 CLIP "
                                   "tokens (longer is refused, not cut).")


def _outputs() -> list[io.Output]:
    return [
        io.Model.Output(display_name="erased_model", tooltip="The erased model (a patched clone)."),
        ErasureType.Output(display_name="erasure", tooltip="The weight increments and metadata."),
        io.Image.Output(display_name="loss_curves", tooltip="Loss curves of every stage (UCE: per edited layer)."),
    ]


def _schema(node_id: str, display_name: str, description: str, inputs: list[io.Input]) -> io.Schema:
    """The schema every method node shares: category, the three outputs; its own id, name, text and inputs."""
    return io.Schema(node_id=node_id, display_name=display_name, category=f"{CATEGORY}/unlearn",
                     description=description, inputs=inputs, outputs=_outputs())


def erase_with(method: ErasureMethod, model, clip, vae, inputs: MethodInputs, config: Any, care_set=None,
               backend: ComfyBackend | None = None) -> tuple[MethodResult, Erasure, Any, torch.Tensor]:
    """Run ``method`` on ComfyUI's objects with ComfyUI's progress bar and Interrupt; returns the result, its
    ERASURE (metadata: method, settings, CARE-set, base model, pack version, final losses), the erased model and
    the loss-curve image."""
    backend = backend or ComfyBackend(model, clip, vae)
    check_method_prompts(backend.text, inputs, config)
    with training_mode(), stops_as_comfy_interrupt():
        backend.load()
        make_weights_autograd_safe(backend.denoiser(), *backend.text.modules())
        result = method.run(backend, inputs, config, progress=ComfyProgress(), should_stop=interrupted)
    concept = inputs.concept.strip()
    erasure = Erasure(
        concept=concept,
        increments=result.increments,
        metadata={
            "erased_concept": concept,
            "method": method.title,
            "care_set": care_set.to_json_dict() if care_set is not None else None,
            "settings": dataclasses.asdict(config),
            "base_model": type(model.model.model_config).__name__,
            "pack_version": PACK_VERSION,
            "losses_final": {stage: values[-1] for stage, values in result.losses.items() if values},
        },
        adversarial_embeddings={name: t.detach().cpu() for name, t in result.learned_tokens.items()},
    )
    return result, erasure, apply_erasure(model, erasure, strength=1.0), render_loss_curves(result.losses)


class ReCAREUnlearn(io.ComfyNode):
    """Erase a concept with ReCARE: adversarial erasure rounds, then a robust erase that keeps the CARE-set."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "ReCAREUnlearn", "ReCARE Unlearn",
            "Erases a concept from the model while keeping its co-occurring benign concepts (the CARE-set). "
            "Stage 1 alternates erasure with textual inversion to find tokens that still bring the concept back; "
            "stage 2 restarts from the original weights and erases the concept and those tokens while anchoring "
            "on and retaining the CARE-set. Returns the erased model (the input model is untouched), the erasure "
            "to save/apply/stack, and the loss curves. Defaults are the paper's; the 'quick' preset is for a try.",
            [
                *_model_inputs(with_vae=True),
                io.Image.Input("target_images", tooltip="Images of the concept to erase, generated with the original model "
                               "(the paper uses hundreds). Each adversarial round uses its own share of them."),
                CareSetType.Input("care_set", tooltip="The CARE-set from BuildCARESet / LoadCARESet: anchor and retain prompts."),
                _concept_input(),
                *config_inputs(ReCAREConfig(), ("initializer_token", "concept_type")),
                io.Combo.Input("preset", options=list(PRESETS), default="paper",
                               tooltip="'paper' uses every number below as given; 'quick' overrides step counts for a fast try; "
                               "'fast' is the paper's recipe with a shorter textual inversion (lr 2e-2, batches of 4, "
                               "early stop): in the toy world its tokens attacked as strongly as the paper's in 8 % "
                               "of the time (README, 'Speed')."),
                *config_inputs(ReCAREConfig(), RECARE_FIELDS),
                io.String.Input("embedding_name", default="recare_adv", tooltip="The learned adversarial tokens are saved to "
                                "models/embeddings as <name>_<i> (use 'embedding:<name>_<i>' in a prompt to check the erased "
                                "model resists them; a taken name gets _00001, ... and is never overwritten). Empty: do not "
                                "save them."),
                *config_inputs(ReCAREConfig(), RECARE_OPTION_FIELDS),
            ],
        )

    @classmethod
    def execute(cls, model, clip, vae, target_images, care_set, erase_concept, preset, embedding_name,
                **values) -> io.NodeOutput:
        check_choice(preset, PRESETS, "preset")
        embedding_base = _embedding_base(embedding_name)
        if preset != "paper":
            values = {k: v for k, v in values.items() if k not in ReCAREConfig.preset_fields(preset)}
        config = config_from_values(ReCAREConfig.preset(preset), values)
        if target_images is None or target_images.shape[0] == 0:
            raise ValueError("target_images is empty: generate some images of the concept to erase first.")
        inputs = MethodInputs(erase_concept, target_images.clone(), care_set.anchor_prompts, care_set.retain_prompts)
        backend = ComfyBackend(model, clip, vae)
        result, erasure, erased_model, curves = erase_with(get_method("recare"), model, clip, vae, inputs, config,
                                                           care_set, backend)
        erasure.metadata["adversarial_embeddings"] = _save_embeddings(backend, result.learned_tokens, embedding_base)
        return io.NodeOutput(erased_model, erasure, curves)


class ESDUnlearn(io.ComfyNode):
    """Erase a concept with plain ESD (fine-tuning along negative guidance; no CARE-set, no adversarial tokens)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "ESDUnlearn", "ESD Unlearn",
            "Erases a concept with ESD (Gandikota et al., 2023): the model is fine-tuned so that its prediction "
            "for the concept follows negative guidance away from it. The baseline ReCARE builds on: one stage, "
            "no textual inversion, no images and no CARE-set needed (so nothing protects co-occurring concepts "
            "or hunts adversarial tokens). Defaults are the ESD paper's ESD-u.",
            [*_model_inputs(with_vae=False), _concept_input(), *config_inputs(ESDConfig(), ESD_FIELDS)],
        )

    @classmethod
    def execute(cls, model, clip, erase_concept, **values) -> io.NodeOutput:
        config = config_from_values(ESDConfig(), values)
        _, erasure, erased_model, curves = erase_with(get_method("esd"), model, clip, None,
                                                      MethodInputs(erase_concept), config)
        return io.NodeOutput(erased_model, erasure, curves)


class UCEErase(io.ComfyNode):
    """Erase a concept with UCE's closed-form edit of the cross-attention keys and values (seconds)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "UCEErase", "UCE Erase (closed form)",
            "Erases a concept with a UCE-style closed-form edit (Gandikota et al., 2024): the cross-attention "
            "key/value projections are solved so the concept's text gives the guide's keys and values while "
            "preserved concepts keep theirs. Takes seconds, no training; only the text pathway is edited. "
            "Connect a CARE-set to preserve its concepts.",
            [
                *_model_inputs(with_vae=False), _concept_input(),
                CareSetType.Input("care_set", optional=True,
                                  tooltip="Optional CARE-set whose anchor and retain prompts are kept unchanged."),
                *config_inputs(UCEConfig(), UCE_FIELDS),
            ],
        )

    @classmethod
    def execute(cls, model, clip, erase_concept, care_set=None, **values) -> io.NodeOutput:
        config = config_from_values(UCEConfig(), values)
        inputs = MethodInputs(erase_concept, None, care_set.anchor_prompts if care_set else (),
                              care_set.retain_prompts if care_set else ())
        _, erasure, erased_model, curves = erase_with(get_method("uce"), model, clip, None, inputs, config, care_set)
        return io.NodeOutput(erased_model, erasure, curves)


def _embedding_base(embedding_name: str) -> str:
    """The file-name start of the adversarial embeddings: ``embedding_name`` with every character other than
    letters, digits, '_' and '-' made '_' (so that prompts can name it), checked as a plain file name; '' = none."""
    base = re.sub(r"[^A-Za-z0-9_-]", "_", embedding_name.strip())
    if base:
        check_relative_name(base, "embedding_name", subfolders=False)
    return base


def _save_embeddings(backend: ComfyBackend, learned_tokens: dict[str, torch.Tensor], base: str) -> list[str]:
    """Save each learned token as a textual-inversion embedding ``<base>_<i>`` in the model family's format (SDXL:
    ``clip_l`` and ``clip_g``); returns the names to use in prompts (none when ``base`` is empty)."""
    if not base:
        return []
    directory = folder_paths.get_folder_paths("embeddings")[0]
    return [save_textual_inversion_embedding(backend.text.embedding_tensors(tensor), directory, f"{base}_{index}")
            for index, tensor in enumerate(learned_tokens.values())]


NODES = [ReCAREUnlearn, ESDUnlearn, UCEErase]
