"""ReCAREUnlearn: two-stage ReCARE unlearning on the MODEL / CLIP / VAE a ComfyUI user already has loaded."""

from __future__ import annotations

import dataclasses
import re

import comfy.model_management
import folder_paths
import torch
from comfy_api.v0_0_2 import io

from ..recare_core import __version__ as PACK_VERSION
from ..recare_core.erasure.increments import Erasure
from ..recare_core.scoring.loss_plot import render_loss_curves
from ..recare_core.training.train_methods import TRAIN_METHODS
from ..recare_core.methods.recare import PRESETS, ReCAREConfig, TrainingInterrupted, run_recare
from .comfy_backend import ComfyBackend, save_textual_inversion_embedding
from .erasure_patch import apply_erasure
from .training_context import ComfyProgress, interrupted, make_weights_autograd_safe, training_mode
from .compat import advanced
from .types import CATEGORY, CareSetType, ErasureType

_DEFAULTS = ReCAREConfig()


def _int(name: str, tooltip: str, minimum: int = 0, maximum: int = 100000) -> io.Int.Input:
    return io.Int.Input(name, default=getattr(_DEFAULTS, name), min=minimum, max=maximum, tooltip=tooltip)


def _float(name: str, tooltip: str, step: float) -> io.Float.Input:
    return io.Float.Input(name, default=getattr(_DEFAULTS, name), min=0.0, max=100.0, step=step, tooltip=tooltip)


class ReCAREUnlearn(io.ComfyNode):
    """Erase a concept with ReCARE: adversarial erasure rounds, then a robust erase that keeps the CARE-set."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCAREUnlearn",
            display_name="ReCARE Unlearn",
            category=f"{CATEGORY}/unlearn",
            description=(
                "Erases a concept from the model while keeping its co-occurring benign concepts (the CARE-set). "
                "Stage 1 alternates erasure with textual inversion to find tokens that still bring the concept back; "
                "stage 2 restarts from the original weights and erases the concept and those tokens while anchoring "
                "on and retaining the CARE-set. Returns the erased model (the input model is untouched), the erasure "
                "to save/apply/stack, and the loss curves. Defaults are the paper's; the 'quick' preset is for a try."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to erase the concept from: SD1.x, SD2.x or SDXL family (eps or v-prediction)."),
                io.Clip.Input("clip", tooltip="The model's text encoder; textual inversion runs through it."),
                io.Vae.Input("vae", tooltip="The model's VAE; encodes the target images for textual inversion."),
                io.Image.Input("target_images", tooltip="Images of the concept to erase, generated with the original model "
                               "(the paper uses hundreds). Each adversarial round uses its own share of them."),
                CareSetType.Input("care_set", tooltip="The CARE-set from BuildCARESet / LoadCARESet: anchor and retain prompts."),
                io.String.Input("erase_concept", default="nudity", tooltip="The concept to erase, as a prompt (e.g. 'nudity', 'Van Gogh')."),
                io.String.Input("initializer_token", default="person", tooltip="A word the adversarial tokens start from: "
                                "'person' or an object for objects, 'art' for styles."),
                io.Combo.Input("concept_type", options=["object", "style"], default="object",
                               tooltip="Object or style: picks the textual-inversion prompt templates."),
                io.Combo.Input("preset", options=list(PRESETS), default="paper",
                               tooltip="'paper' uses every number below as given; 'quick' overrides step counts for a fast try."),
                _int("n_rounds", "Stage 1: erase-then-attack rounds (adversarial tokens found).", 1, 10),
                _int("erase_steps", "Stage 1: erasure steps per round."),
                advanced(_float("erase_lr", "Stage 1: learning rate of the erasure.", 1e-7)),
                _int("ti_steps", "Stage 1: textual-inversion steps per round."),
                advanced(_float("ti_lr", "Stage 1: learning rate of the adversarial token embedding.", 1e-4)),
                _int("robust_steps", "Stage 2: robust erase steps."),
                advanced(_float("robust_lr", "Stage 2: learning rate.", 1e-7)),
                advanced(_float("negative_guidance", "Strength of the negative guidance that builds the erasure target.", 0.1)),
                advanced(_float("compositional_guidance_scale", "Stage 2: scale of the compositional (erase/anchor) guidance.", 0.1)),
                advanced(_int("num_adv_concepts", "Stage 2: how many learned adversarial tokens are erased with the concept.", 0, 10)),
                advanced(_int("ddim_steps", "Schedule length of the partial DDIM sampling that produces training points.", 3, 1000)),
                advanced(_float("sampling_cfg", "Classifier-free guidance of that partial sampling.", 0.1)),
                io.Combo.Input("train_method", options=list(TRAIN_METHODS), default=_DEFAULTS.train_method,
                               tooltip="Which UNet layers are trained: " + "; ".join(f"{k}: {v}" for k, v in TRAIN_METHODS.items())),
                io.Combo.Input("update", options=["full", "lora"], default=_DEFAULTS.update,
                               tooltip="'full': exact weight deltas (as the paper). 'lora': low-rank adapters, for 8-12 GB GPUs."),
                advanced(_int("lora_rank", "Rank of the LoRA adapters when update is 'lora'.", 1, 1024)),
                _int("image_size", "Training resolution in pixels (512 for SD1.5 and SD2 512, 768 for SD2 768-v, 1024 for SDXL; lower saves memory).", 64, 2048),
                advanced(io.Boolean.Input("gradient_checkpointing", default=False,
                                          tooltip="Trade compute for memory during training.")),
                io.Int.Input("seed", default=_DEFAULTS.seed, min=0, max=2**31 - 1, tooltip="Seed for every random draw of the training."),
                io.String.Input("embedding_name", default="recare_adv", tooltip="The learned adversarial tokens are saved to "
                                "models/embeddings as <name>_<i> (use 'embedding:<name>_<i>' in a prompt to check the erased "
                                "model resists them). Empty: do not save them."),
            ],
            outputs=[
                io.Model.Output(display_name="erased_model", tooltip="The erased model (a patched clone)."),
                ErasureType.Output(display_name="erasure", tooltip="The trained weight increments and metadata."),
                io.Image.Output(display_name="loss_curves", tooltip="Loss curves of every stage."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, vae, target_images, care_set, erase_concept, initializer_token, concept_type,
                preset, seed, embedding_name, gradient_checkpointing, **numbers) -> io.NodeOutput:
        config = dataclasses.replace(
            ReCAREConfig.preset(preset), concept_type=concept_type, initializer_token=initializer_token.strip(),
            seed=seed, gradient_checkpointing=gradient_checkpointing,
            **({k: v for k, v in numbers.items()} if preset == "paper" else
               {k: v for k, v in numbers.items() if k not in ReCAREConfig.PRESET_FIELDS}),
        )
        erase_concept = erase_concept.strip()
        if target_images is None or target_images.shape[0] == 0:
            raise ValueError("target_images is empty: generate some images of the concept to erase first.")
        backend = ComfyBackend(model, clip, vae)
        progress = ComfyProgress(config.total_steps)
        with training_mode():
            backend.load()
            make_weights_autograd_safe(backend.denoiser(), *backend.text.modules())
            try:
                result = run_recare(
                    backend, target_images.clone(), care_set.anchor_prompts, care_set.retain_prompts,
                    erase_concept, config, progress=progress, should_stop=interrupted,
                )
            except TrainingInterrupted:
                # Hand the stop back to ComfyUI's executor, which reports it as an interrupted run.
                comfy.model_management.throw_exception_if_processing_interrupted()
                raise
        saved_embeddings = _save_embeddings(backend, result.learned_tokens, embedding_name)
        erasure = Erasure(
            concept=erase_concept,
            increments=result.increments,
            metadata={
                "erased_concept": erase_concept,
                "method": "ReCARE",
                "care_set": care_set.to_json_dict(),
                "settings": dataclasses.asdict(config),
                "base_model": type(model.model.model_config).__name__,
                "pack_version": PACK_VERSION,
                "adversarial_embeddings": saved_embeddings,
                "losses_final": {stage: values[-1] for stage, values in result.losses.items() if values},
            },
            adversarial_embeddings={name: t.detach().cpu() for name, t in result.learned_tokens.items()},
        )
        erased_model = apply_erasure(model, erasure, strength=1.0)
        return io.NodeOutput(erased_model, erasure, render_loss_curves(result.losses))


def _save_embeddings(backend: ComfyBackend, learned_tokens: dict[str, torch.Tensor], embedding_name: str) -> list[str]:
    """Save each learned token as a textual-inversion embedding in the model family's format (SDXL: ``clip_l`` and
    ``clip_g``); returns the names to use in prompts."""
    base = re.sub(r"[^A-Za-z0-9_-]", "_", embedding_name.strip())
    if not base:
        return []
    directory = folder_paths.get_folder_paths("embeddings")[0]
    return [save_textual_inversion_embedding(backend.text.embedding_tensors(tensor), directory, f"{base}_{index}")
            for index, tensor in enumerate(learned_tokens.values())]


NODES = [ReCAREUnlearn]
