"""Every number of ReCARE's unlearning (spec section 2), with the reference implementation's defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ..training.sampling import TIMESTEP_MAPPINGS
from ..training.weight_update import UPDATE_KINDS

CONCEPT_TYPES: tuple[str, ...] = ("object", "style", "person")
ANCHOR_MODES: tuple[str, ...] = ("care_set", "age")


@dataclass
class ReCAREConfig:
    """Settings of a ReCARE run. Defaults are the reference code's (``paper`` preset)."""

    # Stage 1: iterative erasure + adversarial textual inversion.
    n_rounds: int = 2
    erase_steps: int = 200
    erase_lr: float = 5e-6
    negative_guidance: float = 2.0
    ti_steps: int = 3000
    ti_lr: float = 5e-3
    ti_batch_size: int = 1  # examples per TI step (the reference: 1)
    ti_patience: int = 0  # >0: stop TI once a held-out loss has not improved for this many checks (0: off)
    ti_check_every: int = 50  # steps between held-out checks (with ti_patience)
    ti_check_examples: int = 16  # size of the fixed held-out set of TI examples
    # Stage 2: robust erase for CARE, from the original weights.
    robust_steps: int = 200
    robust_lr: float = 2e-5
    compositional_guidance_scale: float = 2.0
    num_adv_concepts: int = 2
    retain_weight: float = 1.0
    # Stage-2 target weights (spec section 2; defaults reproduce the reference). The target is
    # e_u + anchor_weight * update(anchor) - erase_target_weight * weighted mean_j update(erase concept j).
    erase_target_weight: float | None = None  # None: S + 1, the reference's (-S) scale on every erase concept
    anchor_weight: float | None = None  # None: S - 1, the reference's (+S) scale on the anchor
    adversarial_weight: float = 1.0  # the learned tokens' weight relative to the concept (target mean and loss)
    # Where training points x_t come from: k of ddim_steps DDIM steps with CFG sampling_cfg.
    ddim_steps: int = 50
    sampling_cfg: float = 3.0
    fixed_k: int | None = None  # None: k uniform in 1..ddim_steps-2 as the reference; an int fixes the depth
    sampling_reuse: int = 1  # >1: one partial-sampling trajectory serves this many erase steps (measured option)
    timestep_mapping: str = "reference"  # "exact": evaluate at the timestep the sampler actually reached
    guidance_eta: float = 1.0  # APG weight of the parallel component
    # Which layers, and how the update is held.
    train_method: str = "noxattn"
    update: str = "full"
    lora_rank: int = 4
    lora_alpha: float | None = None  # None: equal to the rank (scale 1)
    train_bias: bool = True  # full updates also train biases, as the reference fine-tunes whole layers
    # Textual-inversion data.
    concept_type: str = "object"
    initializer_token: str = "person"
    image_size: int = 512
    ti_flip: bool = True  # random horizontal flips (flipped copies are encoded once, up front)
    center_crop: bool = False
    # Stage-2 options: AGE's adaptive anchor (methods/age.py) and DoCo's gradient surgery (methods/doco.py).
    anchor_mode: str = "care_set"  # "age": adaptive Gumbel-softmax mixture of the CARE-set prompts
    age_temperature: float = 2.0
    age_top_k: int = 5
    age_lr: float = 1e-3
    doco_surgery: bool = False
    doco_lambda: float = 1.0
    # Runtime.
    seed: int = 42
    mixed_precision: bool = True  # autocast on CUDA
    gradient_checkpointing: bool = False

    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("erase_steps", "ti_steps", "robust_steps")

    @property
    def total_steps(self) -> int:
        """Optimiser steps of a whole run (progress-bar length)."""
        return self.n_rounds * (self.erase_steps + self.ti_steps) + self.robust_steps

    @property
    def stage2_erase_weight(self) -> float:
        """Weight of the erase concepts' mean normalised update in the stage-2 target (reference: S + 1)."""
        if self.erase_target_weight is None:
            return self.compositional_guidance_scale + 1.0
        return self.erase_target_weight

    @property
    def stage2_anchor_weight(self) -> float:
        """Weight of the anchor's normalised update in the stage-2 target (reference: S - 1)."""
        if self.anchor_weight is None:
            return self.compositional_guidance_scale - 1.0
        return self.anchor_weight

    @classmethod
    def preset_fields(cls, name: str) -> set[str]:
        """The settings preset ``name`` sets to other values than the paper's (those a caller must not
        overwrite with its own defaults)."""
        paper, preset = cls(), cls.preset(name)
        return {f.name for f in dataclasses.fields(cls) if getattr(preset, f.name) != getattr(paper, f.name)}

    @classmethod
    def preset(cls, name: str) -> "ReCAREConfig":
        if name not in PRESETS:
            raise ValueError(f"Unknown preset '{name}'. Choose one of: {', '.join(PRESETS)}.")
        return dataclasses.replace(PRESETS[name])

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        counts = {"n_rounds": self.n_rounds, "erase_steps": self.erase_steps, "ti_steps": self.ti_steps,
                  "robust_steps": self.robust_steps, "num_adv_concepts": self.num_adv_concepts}
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value}.")
        for name in ("erase_lr", "ti_lr", "robust_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if not self.compositional_guidance_scale > 0:
            raise ValueError(f"compositional_guidance_scale must be positive (at 0 the reference averages the anchor "
                             f"with the erase concepts), got {self.compositional_guidance_scale}.")
        for name in ("retain_weight", "erase_target_weight", "anchor_weight", "adversarial_weight"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be 0 or more, got {value}.")
        for name in ("ti_batch_size", "ti_check_every", "ti_check_examples", "sampling_reuse"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.ti_patience < 0:
            raise ValueError(f"ti_patience must be 0 (off) or more, got {self.ti_patience}.")
        if self.ddim_steps < 3:
            raise ValueError(f"ddim_steps must be at least 3 (training points use steps 1..ddim_steps-2), "
                             f"got {self.ddim_steps}.")
        if self.fixed_k is not None and not 1 <= self.fixed_k <= self.ddim_steps - 1:
            raise ValueError(f"fixed_k must be within 1..{self.ddim_steps - 1}, got {self.fixed_k}.")
        if self.timestep_mapping not in TIMESTEP_MAPPINGS:
            raise ValueError(f"timestep_mapping must be one of {TIMESTEP_MAPPINGS}, got '{self.timestep_mapping}'.")
        if self.update not in UPDATE_KINDS:
            raise ValueError(f"update must be one of {UPDATE_KINDS}, got '{self.update}'.")
        if self.update == "lora" and self.lora_rank < 1:
            raise ValueError(f"lora_rank must be at least 1, got {self.lora_rank}.")
        if self.concept_type not in CONCEPT_TYPES:
            raise ValueError(f"concept_type must be one of {CONCEPT_TYPES}, got '{self.concept_type}'.")
        if self.image_size < 8:
            raise ValueError(f"image_size {self.image_size} is too small.")
        if self.anchor_mode not in ANCHOR_MODES:
            raise ValueError(f"anchor_mode must be one of {ANCHOR_MODES}, got '{self.anchor_mode}'.")
        if not 0.0 <= self.doco_lambda <= 1.0:
            raise ValueError(f"doco_lambda must be within 0..1, got {self.doco_lambda}.")


PRESETS: dict[str, ReCAREConfig] = {
    "paper": ReCAREConfig(),
    "quick": ReCAREConfig(erase_steps=50, ti_steps=400, robust_steps=100),
    # The paper's recipe with a shorter textual inversion (larger rate, batches of 4, early stopping on a held-out
    # loss). In the toy world its token regenerated the target in 95/96 images against the reference's 96/96, in
    # 8 % of the CPU time (benchmarks/ti_speed.py; README, "Speed"), where that attack saturates.
    "fast": ReCAREConfig(ti_steps=300, ti_lr=2e-2, ti_batch_size=4, ti_patience=3, ti_check_every=25),
}
