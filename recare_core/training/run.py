"""What every ReCARE training loop shares: cached conditionings, counted and mixed-precision predictions,
progress and interruption, the optimiser step with non-finite-loss and out-of-memory errors, per-stage records."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import torch

from ..progress import Interrupted, ProgressCallback, StopCallback, check_stop
from .backend import DiffusionBackend

__all__ = ["Interrupted", "ProgressCallback", "StopCallback", "TrainingRun", "StageRecord",
           "NonFiniteLossError", "TrainingOutOfMemoryError", "out_of_memory_as_error", "describe_stage"]
ROLES: tuple[str, ...] = ("sampling", "teacher", "student")
MEMORY_OPTIONS = ("update 'lora' instead of 'full'", "a lower lora_rank", "gradient_checkpointing on",
                  "a smaller image_size")


def describe_stage(name: str) -> str:
    """Plain words for a stage name: ``stage1_round0_ti`` -> ``stage 1, round 1, textual inversion``."""
    match = re.fullmatch(r"stage1_round(\d+)_(erase|ti)", name)
    if match:
        part = "erasure" if match.group(2) == "erase" else "textual inversion"
        return f"stage 1, round {int(match.group(1)) + 1}, {part}"
    return "stage 2, robust erase" if name == "stage2" else name


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite."""

    def __init__(self, stage: str, step: int, value: float, lr_name: str):
        self.stage, self.step, self.value = stage, step, value
        super().__init__(
            f"The loss became {value} at step {step} of {describe_stage(stage)}: training diverged. "
            f"Lower the learning rate ({lr_name}) and run again.")


class TrainingOutOfMemoryError(RuntimeError):
    """The accelerator ran out of memory during training."""

    def __init__(self, stage: str):
        self.stage = stage
        super().__init__(
            f"Out of memory during {describe_stage(stage)}. Reduce memory with: {', '.join(MEMORY_OPTIONS)}; "
            "or close other models first.")


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


@contextlib.contextmanager
def out_of_memory_as_error(stage: str) -> Iterator[None]:
    """Re-raise an out-of-memory error met during ``stage`` as :class:`TrainingOutOfMemoryError`."""
    try:
        yield
    except RuntimeError as error:
        if is_out_of_memory(error) and not isinstance(error, TrainingOutOfMemoryError):
            raise TrainingOutOfMemoryError(stage) from error
        raise


@dataclass
class StageRecord:
    """What one stage did: losses per step, wall time, and UNet sample-evaluations (batch rows) per role."""

    losses: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0
    evaluations: dict[str, int] = field(default_factory=lambda: {role: 0 for role in ROLES})

    def evaluations_per_step(self) -> dict[str, float]:
        return {role: count / max(1, self.steps) for role, count in self.evaluations.items()}


def _autocast_dtype(backend: DiffusionBackend) -> torch.dtype:
    if backend.dtype in (torch.float16, torch.bfloat16):
        return backend.dtype
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class TrainingRun:
    """State shared by the stages of one run on ``backend``."""

    def __init__(self, backend: DiffusionBackend, *, total_steps: int, mixed_precision: bool = True,
                 progress: ProgressCallback | None = None, should_stop: StopCallback | None = None):
        self.backend = backend
        self.total_steps = max(1, total_steps)
        self.progress = progress
        self.should_stop = should_stop
        self.global_step = 0
        self.records: dict[str, StageRecord] = {}
        self._record: StageRecord | None = None
        self._conditionings: dict[str, torch.Tensor] = {}
        use_amp = mixed_precision and backend.device.type == "cuda"
        self.amp_dtype = _autocast_dtype(backend) if use_amp else None
        half = torch.float16 in (self.amp_dtype, backend.dtype)
        self.scaler = torch.amp.GradScaler(backend.device.type) if half else None

    # -- conditionings -------------------------------------------------------------------------------------------
    def conditionings(self, prompts: Sequence[str], learned_tokens: Mapping[str, torch.Tensor] | None = None,
                      chunk: int = 32) -> torch.Tensor:
        """Conditioning rows for ``prompts``, each prompt encoded once per run (learned tokens must be final)."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._conditionings))
        with torch.no_grad():
            for start in range(0, len(missing), chunk):
                batch = missing[start:start + chunk]
                encoded = self.backend.encode_text(batch, learned_tokens).detach()
                for index, prompt in enumerate(batch):
                    self._conditionings[prompt] = encoded[index:index + 1]
        return torch.cat([self._conditionings[p] for p in prompts])

    # -- predictions ---------------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.backend.device.type, dtype=self.amp_dtype)

    def predict(self, role: str, x_t: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps prediction counted as ``role`` (``sampling``, ``teacher`` or ``student``) sample-evaluations."""
        if self._record is not None:
            self._record.evaluations[role] += x_t.shape[0]
        device = self.backend.device
        with self.autocast():
            eps = self.backend.predict_noise(x_t.to(device), timesteps.to(device), cond.to(device))
        return eps.float()

    def sampler(self, role: str = "sampling") -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda x, t, c: self.predict(role, x, t, c)

    # -- stages and steps ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        """Record losses, time and evaluations of the stage ``name``; turn OOM into a plain-language error."""
        record = self.records.setdefault(name, StageRecord())
        previous, self._record = self._record, record
        start = time.perf_counter()
        try:
            with out_of_memory_as_error(name):
                yield record
        finally:
            record.seconds += time.perf_counter() - start
            self._record = previous

    def check_stop(self) -> None:
        check_stop(self.should_stop, "Training was interrupted; the model is unchanged.")

    def optimise(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, *, stage: str, step: int,
                 lr_name: str) -> float:
        """Backward + optimiser step (loss-scaled for float16); raises :class:`NonFiniteLossError` on a NaN/inf
        loss. Returns the loss value."""
        value = float(loss.detach())
        if not torch.isfinite(loss.detach()):
            raise NonFiniteLossError(stage, step, value, lr_name)
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return value

    def skip_steps(self, count: int, message: str) -> None:
        """Advance the progress bar over ``count`` steps a stage will not run (it stopped early)."""
        self.global_step += count
        if self.progress is not None:
            self.progress(self.global_step, self.total_steps, message)
        self.check_stop()

    def step_done(self, stage: str, losses: Mapping[str, float], message: str) -> None:
        """Log the step's losses (``{curve name: value}``), advance the progress bar, honour a stop request."""
        record = self.records[stage]
        record.steps += 1
        for name, value in losses.items():
            record.losses.setdefault(name, []).append(value)
        self.global_step += 1
        if self.progress is not None:
            self.progress(self.global_step, self.total_steps, message)
        self.check_stop()
