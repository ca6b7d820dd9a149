"""Plain ESD (Gandikota et al., 2023) as its own method: the reference's stage-1 erase
(:func:`~recare_core.methods.stage_erase.erase_stage`, normalised negative guidance against the empty prompt) run
once, with no adversarial tokens and no CARE-set. Seconds to minutes; the baseline ReCARE is built on.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..progress import ProgressCallback, StopCallback
from ..training.backend import DiffusionBackend
from ..training.run import TrainingRun
from .common import new_update, require_concept, require_tokens, training_context
from .recare_config import ReCAREConfig
from .registry import ErasureMethod, MethodInputs, MethodResult, config_from, register
from .stage_erase import erase_stage

STAGE = "esd_erase"


@dataclass
class ESDConfig:
    """Settings of a plain ESD run. Defaults follow the ESD paper's ESD-u: 1000 steps at lr 1e-5, every layer
    but cross-attention, negative guidance eta = 1 (``negative_guidance`` s = eta + 2 = 3 in this formulation:
    target ``e_c - (s - 1) * update``); the training points are ReCARE's (partial DDIM sampling)."""

    erase_steps: int = 1000
    erase_lr: float = 1e-5
    negative_guidance: float = 3.0
    guidance_eta: float = 1.0
    ddim_steps: int = 50
    sampling_cfg: float = 3.0
    fixed_k: int | None = None
    timestep_mapping: str = "reference"
    train_method: str = "noxattn"
    update: str = "full"
    lora_rank: int = 4
    lora_alpha: float | None = None
    train_bias: bool = True
    image_size: int = 512
    seed: int = 42
    mixed_precision: bool = True
    gradient_checkpointing: bool = False

    @property
    def total_steps(self) -> int:
        return self.erase_steps

    def stage_config(self) -> ReCAREConfig:
        """These settings as the stage-1 settings :func:`erase_stage` reads (every other ReCARE setting at its
        default; no adversarial rounds)."""
        return config_from(self, ReCAREConfig, n_rounds=1, ti_steps=0, robust_steps=0)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.erase_steps < 1:
            raise ValueError(f"erase_steps must be at least 1, got {self.erase_steps}.")
        self.stage_config().validate()


def run_esd(backend: DiffusionBackend, inputs: MethodInputs, config: ESDConfig,
            progress: ProgressCallback | None = None, should_stop: StopCallback | None = None) -> MethodResult:
    """Erase ``inputs.concept`` with plain ESD; the backend's model is left exactly as it was (also when
    interrupted: :class:`~recare_core.progress.Interrupted`). Errors as ReCARE's."""
    config.validate()
    concept = require_concept(inputs.concept)
    require_tokens(backend, concept, "concept to erase")
    stage_config = config.stage_config()
    run = TrainingRun(backend, total_steps=config.total_steps, mixed_precision=config.mixed_precision,
                      progress=progress, should_stop=should_stop)
    with training_context(backend, "ESD training", config.gradient_checkpointing):
        run.check_stop()
        update = new_update(backend, config, config.seed)
        try:
            update.requires_grad_(True)
            erase_stage(run, update, concept, stage_config, learned_tokens={}, name=STAGE, seed=config.seed + 1)
            increments = update.to_erasure_increments()
        finally:
            update.detach()
    return MethodResult(increments=increments, erase_concepts=[concept], stages=run.records)


ESD = register(ErasureMethod(
    name="esd", title="ESD", config_type=ESDConfig, runner=run_esd,
    description="Erased Stable Diffusion: fine-tunes the model so the concept's prediction follows negative "
                "guidance away from it; no CARE-set, no adversarial tokens (the fast training baseline)."))
