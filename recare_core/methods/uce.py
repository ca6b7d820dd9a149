"""UCE-style closed-form erasure (Gandikota et al., 2024, "Unified Concept Editing"): no training loop.

For every cross-attention key/value projection ``W`` (``backend.cross_attention_projections()``), with ``c_e``
the text embedding of the concept to erase, ``c_g`` that of its guide, and ``c_p`` those of the concepts to
preserve (each the encoder's output row of the prompt's last word token, as UCE takes it), the edited weight
minimises

    erase_scale * |W' c_e - W c_g|^2 + preserve_scale * sum_p |W' c_p - W c_p|^2 + lamb * |W' - W|_F^2

which is ``W' = (lamb W + erase_scale W c_g c_e^T + preserve_scale sum_p W c_p c_p^T)
(lamb I + erase_scale c_e c_e^T + preserve_scale sum_p c_p c_p^T)^-1``. The concept's keys and values become
the guide's; the preserved concepts' keys and values stay. Seconds on any model. The result is the increment
``W' - W`` per layer; the backend's layers are not changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..erasure.increments import WeightIncrement
from ..progress import ProgressCallback, StopCallback
from ..training.backend import DiffusionBackend
from ..training.run import TrainingRun
from .common import require_concept, require_tokens
from .registry import ErasureMethod, MethodInputs, MethodResult, register

STAGE = "uce_edit"


@dataclass
class UCEConfig:
    """Settings of a UCE edit; defaults are UCE's (``guide`` empty = the unconditional prompt, ``lamb`` 0.5).
    ``preserve_care_set``: preserve the CARE-set's retain prompts (and anchors) besides ``preserve``."""

    guide: str = ""
    preserve: str = ""  # extra concepts to preserve, separated by ';'
    preserve_care_set: bool = True
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    lamb: float = 0.5

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if not self.lamb > 0:
            raise ValueError(f"lamb must be positive (it keeps the solve well posed), got {self.lamb}.")
        for name in ("erase_scale", "preserve_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}.")


def preserved_prompts(inputs: MethodInputs, config: UCEConfig) -> list[str]:
    """The concepts UCE keeps: ``config.preserve`` (split on ';') and, with ``preserve_care_set``, the CARE-set's
    anchor and retain prompts; without duplicates, the erased concept and the guide."""
    extra = [p.strip() for p in config.preserve.split(";") if p.strip()]
    care = list(inputs.anchor_prompts) + list(inputs.retain_prompts) if config.preserve_care_set else []
    skip = {inputs.concept, config.guide.strip()}
    return [p for p in dict.fromkeys(extra + care) if p not in skip]


@torch.no_grad()
def concept_embeddings(backend: DiffusionBackend, prompts: list[str]) -> torch.Tensor:
    """``(len(prompts), width)`` float32: each prompt's encoder output row at its last word token."""
    rows = []
    for start in range(0, len(prompts), 32):
        batch = prompts[start:start + 32]
        encoded = backend.encode_text(batch).float()
        index = torch.tensor([backend.last_token_index(p) for p in batch], device=encoded.device)
        rows.append(encoded[torch.arange(len(batch), device=encoded.device), index])
    return torch.cat(rows)


def edited_weight(weight: torch.Tensor, erase: torch.Tensor, guide: torch.Tensor, preserve: torch.Tensor,
                  config: UCEConfig) -> torch.Tensor:
    """UCE's closed form for one ``(out, in)`` weight; ``erase`` / ``guide`` ``(n_erase, in)`` paired rows,
    ``preserve`` ``(n_preserve, in)`` (may be empty). Computed in float64."""
    w = weight.double()
    erase, guide, preserve = erase.double(), guide.double(), preserve.double()
    eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    targets = guide @ w.T  # (n_erase, out): the guide's keys/values under the original weight
    left = config.lamb * w + config.erase_scale * targets.T @ erase
    right = config.lamb * eye + config.erase_scale * erase.T @ erase
    if preserve.shape[0]:
        left = left + config.preserve_scale * (preserve @ w.T).T @ preserve
        right = right + config.preserve_scale * preserve.T @ preserve
    # W' = left @ right^-1, right symmetric positive definite: solve instead of inverting.
    return torch.linalg.solve(right, left.T).T


def run_uce(backend: DiffusionBackend, inputs: MethodInputs, config: UCEConfig,
            progress: ProgressCallback | None = None, should_stop: StopCallback | None = None) -> MethodResult:
    """Erase ``inputs.concept`` by UCE's closed-form edit. The stage record holds, per layer, the relative erase
    residual ``|W' c_e - W c_g| / |W c_g|`` and the mean relative drift of the preserved concepts."""
    config.validate()
    concept = require_concept(inputs.concept)
    require_tokens(backend, concept, "concept to erase")
    preserve = preserved_prompts(inputs, config)
    layers = backend.cross_attention_projections()
    run = TrainingRun(backend, total_steps=len(layers), mixed_precision=False, progress=progress,
                      should_stop=should_stop)
    increments: dict[str, WeightIncrement] = {}
    run.check_stop()
    with torch.inference_mode(False), torch.no_grad(), run.stage(STAGE):
        embeddings = concept_embeddings(backend, [concept, config.guide.strip(), *preserve])
        erase, guide, kept = embeddings[:1], embeddings[1:2], embeddings[2:]
        for step, (name, layer) in enumerate(layers.items()):
            weight = layer.weight.detach().to(device=embeddings.device, dtype=torch.float32)
            new = edited_weight(weight, erase, guide, kept, config)
            target = guide.double() @ weight.double().T
            residual = float((erase.double() @ new.T - target).norm() / target.norm().clamp_min(1e-12))
            drift = 0.0
            if kept.shape[0]:
                before = kept.double() @ weight.double().T
                drift = float(((kept.double() @ new.T - before).norm(dim=1)
                               / before.norm(dim=1).clamp_min(1e-12)).mean())
            increments[f"{name}.weight"] = WeightIncrement(full=(new - weight.double()).float().cpu())
            run.step_done(STAGE, {"uce_erase_residual": residual, "uce_preserve_drift": drift},
                          f"UCE: layer {step + 1}/{len(layers)}, erase residual {residual:.3g}, "
                          f"preserve drift {drift:.3g}")
    return MethodResult(increments=increments, erase_concepts=[concept], stages=run.records)


UCE = register(ErasureMethod(
    name="uce", title="UCE", config_type=UCEConfig, runner=run_uce, needs_care_set=False,
    description="Unified Concept Editing: a closed-form edit of the cross-attention key/value projections that "
                "maps the concept onto a guide while keeping preserved concepts (seconds, no training; weakest "
                "against adversarial prompts)."))
