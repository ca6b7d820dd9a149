"""The seam every erasure method plugs into: one registry of :class:`ErasureMethod` entries.

A method is a module of :mod:`recare_core.methods` that defines its config dataclass and a runner
``run(backend, inputs, config, progress, should_stop) -> MethodResult`` and calls :func:`register` at import time.
The package's ``__init__`` imports every built-in method, so ``from recare_core.methods.registry import
get_method`` finds them all. The toy-world benchmark and the ComfyUI method nodes look methods up here; adding a
method means its module, its node (built from the shared widget definitions) and its test.

Every runner leaves the backend's model exactly as it was (the erasure is returned as increments), reports
progress through :data:`~recare_core.progress.ProgressCallback`, raises :class:`~recare_core.progress.Interrupted`
when ``should_stop`` says so, and turns an accelerator out-of-memory into
:class:`~recare_core.training.run.TrainingOutOfMemoryError`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..erasure.increments import WeightIncrement
from ..progress import ProgressCallback, StopCallback
from ..training.backend import DiffusionBackend
from ..training.run import StageRecord


@dataclass
class MethodInputs:
    """What a method may use: the concept to erase, images of it made with the original model, and the CARE-set's
    anchor and retain prompts (methods that do not use some of these ignore them; see :class:`ErasureMethod`)."""

    concept: str
    target_images: torch.Tensor | None = None
    anchor_prompts: Sequence[str] = ()
    retain_prompts: Sequence[str] = ()

    def cleaned(self) -> "MethodInputs":
        """The same inputs with surrounding whitespace and empty prompts removed."""
        return MethodInputs((self.concept or "").strip(), self.target_images,
                            [p.strip() for p in self.anchor_prompts if p and p.strip()],
                            [p.strip() for p in self.retain_prompts if p and p.strip()])


@dataclass
class MethodResult:
    """What a run produced: increments keyed by the backend's parameter names (``<prefix>.weight`` / ``.bias``),
    learned tokens (``{placeholder: (1, token_dim)}`` on the CPU) where the method learns any, the concepts the
    final update erased, and a record (losses, seconds, evaluations) per stage."""

    increments: dict[str, WeightIncrement]
    learned_tokens: dict[str, torch.Tensor] = field(default_factory=dict)
    erase_concepts: list[str] = field(default_factory=list)
    stages: dict[str, StageRecord] = field(default_factory=dict)

    @property
    def losses(self) -> dict[str, list[float]]:
        """Loss curve per name (for ReCARE ``stage1_round0_erase``, ..., ``stage2_total``, ``stage2_erase``,
        ``stage2_retain``)."""
        return {name: list(values) for record in self.stages.values() for name, values in record.losses.items()}

    @property
    def timings(self) -> dict[str, float]:
        return {name: record.seconds for name, record in self.stages.items()}

    @property
    def evaluations(self) -> dict[str, dict[str, int]]:
        """UNet sample-evaluations (batch rows) per stage and role (sampling / teacher / student)."""
        return {name: dict(record.evaluations) for name, record in self.stages.items()}


MethodRunner = Callable[[DiffusionBackend, MethodInputs, Any, "ProgressCallback | None", "StopCallback | None"],
                        MethodResult]


@dataclass(frozen=True)
class ErasureMethod:
    """One registered method. ``config_type`` is its settings dataclass (defaults = the method's reference
    settings; it has ``validate()``); ``needs_images`` /
    ``needs_care_set`` say which :class:`MethodInputs` it reads; ``learns_tokens`` whether results carry tokens."""

    name: str
    title: str
    description: str
    config_type: type
    runner: MethodRunner
    needs_images: bool = False
    needs_care_set: bool = False
    learns_tokens: bool = False

    def default_config(self, **overrides) -> Any:
        return self.config_type(**overrides)

    def run(self, backend: DiffusionBackend, inputs: MethodInputs, config: Any | None = None,
            progress: ProgressCallback | None = None, should_stop: StopCallback | None = None) -> MethodResult:
        """Erase ``inputs.concept`` on ``backend`` with ``config`` (default: :meth:`default_config`)."""
        config = self.default_config() if config is None else config
        if not isinstance(config, self.config_type):
            raise TypeError(f"The {self.title} method takes a {self.config_type.__name__}, "
                            f"not a {type(config).__name__}.")
        return self.runner(backend, inputs.cleaned(), config, progress, should_stop)


_REGISTRY: dict[str, ErasureMethod] = {}


def register(method: ErasureMethod) -> ErasureMethod:
    """Add ``method`` under its name (a name registers once; a second, different entry is an error)."""
    known = _REGISTRY.get(method.name)
    if known is not None and known != method:
        raise ValueError(f"An erasure method named '{method.name}' is already registered.")
    _REGISTRY[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    """Names of every registered method, in registration order."""
    return tuple(_REGISTRY)


def get_method(name: str) -> ErasureMethod:
    """The method registered as ``name``; ``ValueError`` naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown erasure method '{name}'. Registered methods: {', '.join(_REGISTRY)}.") from None


def config_from(source: Any, config_type: type, **overrides) -> Any:
    """A ``config_type`` whose fields take the values of ``source``'s fields of the same name (the others keep
    their defaults), then ``overrides``: how one method's settings seed another's (e.g. ESD's from ReCARE's)."""
    names = {f.name for f in dataclasses.fields(config_type) if f.init}
    shared = {name: getattr(source, name) for name in names if hasattr(source, name)}
    return config_type(**{**shared, **overrides})

