"""Erasure-CARE frontier in the toy world: every method's strength swept, every setting measured on >= 200 images.

A method's strength is swept along one training run: the update is snapshotted at each step count of its
``snapshots`` (constant learning rate, so a snapshot at ``n`` steps is an ``n``-step setting of that run). Per
seed, everything that does not depend on the method is made once and shared: the target images, the CARE-set
built from them with the toy CLIP, and ReCARE's stage-1 adversarial tokens (stage 1 does not depend on the
CARE-set, so the three ReCARE variants share it). Each snapshot is then attacked with a fresh textual inversion
and measured with the attribute checker; one JSON per (method, setting, seed), skipped when present.

The method list is :data:`FRONTIER_METHODS`, one table (every method the same number of settings; the ESD
baseline more, so that it reaches matched erasure).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..careset.build import CareSet, build_care_set
from ..erasure.increments import WeightIncrement
from ..methods.recare import ReCAREConfig, run_recare, stage_two_options
from ..methods.registry import MethodInputs, get_method
from ..methods.uce import UCEConfig
from ..methods.stage_erase import erase_stage, robust_erase_stage
from ..safe_files.writing import write_new_file
from ..scoring.care_score import care_score
from ..training.run import TrainingRun
from ..training.weight_update import WeightUpdate
from .default import ToyWorldModels
from .evaluate import PromptCase, adversarial_cases, care_cases, generate_cases, target_cases, utility_cases
from .experiment import (
    ATTACK_PLACEHOLDER,
    ExperimentSettings,
    TokenBackend,
    attack,
    erased_backend,
    experiment_settings,
    generate_target_images,
)
from .torch_backend import TorchBackend
from .world import CARE_ATTRIBUTE, CARE_VALUE, SHAPES, TARGET_ATTRIBUTE, TARGET_VALUE

Log = Callable[[str], None]


@dataclass(frozen=True)
class FrontierMethod:
    """One row of the method table: how a method is trained and which settings of it are measured.

    ``kind``: ``original`` (no training), ``esd`` (stage-1 erase of the target word only, lr ``lr``), ``recare``
    (stage 2 on the shared stage-1 tokens, lr ``lr``) or ``uce`` (closed-form edit; a setting is its
    ``erase_scale``). For the trained kinds a setting is a step count of one run. ``care_set``: ``built`` (from
    the target images with the toy CLIP) or ``true`` (the world's ``circle``). ``overrides``: config fields."""

    name: str
    kind: str
    snapshots: tuple[int, ...]
    lr: float = 0.0
    care_set: str = "built"
    overrides: dict = field(default_factory=dict)

    @property
    def setting_unit(self) -> str:
        """What a value of ``snapshots`` counts: ``steps`` or ``erase scale``."""
        return "erase scale" if self.kind == "uce" else "steps"


STEPS: tuple[int, ...] = (10, 30, 90, 270)
TUNED_STEPS: tuple[int, ...] = (30, 90, 180, 270)
"""Step counts measured (snapshots of one run each), 4 points spanning each method's own descent: ESD and stage 2
at the reference target are past target 0.10 after about 30 steps here, the lighter ``recare_tuned`` target
descends later. Measurement points, not tuned settings."""
ESD_STEPS: tuple[int, ...] = STEPS + (810,)
"""Plain ESD, the baseline, also at 810 steps: at 270 it had not come down to target 0.10 on two of the first four
seeds, so no paired comparison at matched erasure could be made there. The baseline gets the longer range, never
a shorter one."""
SHARED_LR = 6e-5
"""One learning rate for every trained method: plain ESD's best stable rate in this world (cpu_6: 1e-4
collapses); three times the reference's stage-2 rate, so that stage 2 reaches matched erasure within the grid."""
LOW_LR = 2e-5
LOW_LR_STEPS: tuple[int, ...] = (30, 90, 270, 810)
"""The learning-rate half of the sweep: a third of ``SHARED_LR`` (and the reference's own stage-2 rate) over three
times the range, given to the baseline and to ReCARE alike (at 6e-5 ESD's target rate rose again between 270 and
810 steps on some seeds). Each method's other weight on the target's update runs at both rates too
(``esd_strong_guidance_low_lr``, ``recare_tuned_low_lr``), so each method's sweep is the same 2 x 2 grid."""

ESD_STRONG_GUIDANCE_LOW_LR_STEPS: tuple[int, ...] = LOW_LR_STEPS + (2430,)
"""ESD at s = 5 and the low rate, the baseline's best row in the retrained fairer world, was still coming down at
810 steps there (target 0.10 +- 0.04 over five seeds, CARE 0.87) and had not reached target 0.05 on four of
them, so a stricter matched level compared its step budget rather than its CARE: it gets three times the range
again, as plain ESD got 810 (the baseline gets the longer range, never a shorter one). In the first world it is
at target 0.00 by 270, where the extra point cannot move a matched figure (the first crossing counts)."""

ESD_STRONG_GUIDANCE = 5.0
"""The guidance half of ESD's sweep, mirroring ReCARE's erase-weight half (``recare_tuned``): ESD's target
``e_c - (s - 1) * update`` at s = 5 is ``e_u - 3 * update``, the same weight 3 on the target's update as ReCARE's
stage-2 target at the reference scale (``e_anchor - 3 * update``); at its paper's s = 3 it is ``e_u - update``.
In the retrained fairer world ESD at s = 3 came down only to target 0.42 / 0.485 in 810 steps (seeds 0, 1)
while stage 2 was at 0.07 / 0.00 after 90, so without this row ESD's strength, not its CARE, was compared."""

FRONTIER_METHODS: tuple[FrontierMethod, ...] = (
    FrontierMethod("original", "original", (0,)),
    # Plain ESD at its own paper's guidance (eta = 1, s = 3).
    FrontierMethod("esd", "esd", ESD_STEPS, lr=SHARED_LR, overrides={"negative_guidance": 3.0}),
    FrontierMethod("esd_low_lr", "esd", LOW_LR_STEPS, lr=LOW_LR, overrides={"negative_guidance": 3.0}),
    # Plain ESD pushed away from the target as hard as ReCARE's stage-2 target is (see ESD_STRONG_GUIDANCE).
    FrontierMethod("esd_strong_guidance", "esd", STEPS, lr=SHARED_LR,
                   overrides={"negative_guidance": ESD_STRONG_GUIDANCE}),
    FrontierMethod("esd_strong_guidance_low_lr", "esd", ESD_STRONG_GUIDANCE_LOW_LR_STEPS, lr=LOW_LR,
                   overrides={"negative_guidance": ESD_STRONG_GUIDANCE}),
    # ReCARE at the reference stage-2 target (erase weight S + 1 = 3, anchor S - 1 = 1).
    FrontierMethod("recare", "recare", STEPS, lr=SHARED_LR),
    FrontierMethod("recare_low_lr", "recare", LOW_LR_STEPS, lr=LOW_LR),
    # ReCARE with the lighter target the audit of issue 13 pointed to: erase weight 1, tokens at half weight.
    FrontierMethod("recare_tuned", "recare", TUNED_STEPS, lr=SHARED_LR,
                   overrides={"erase_target_weight": 1.0, "adversarial_weight": 0.5}),
    FrontierMethod("recare_tuned_low_lr", "recare", LOW_LR_STEPS, lr=LOW_LR,
                   overrides={"erase_target_weight": 1.0, "adversarial_weight": 0.5}),
    # ReCARE's best row in the fairer world (reference target, lr 2e-5) with the retain loss weighted 3, as heavily
    # as the target's update: the audit found the retain loss works but is outweighed. Outside the 2 x 2 grid, so
    # not in the best-of-settings block (that would give ReCARE more rows to pick from than ESD).
    FrontierMethod("recare_heavy_retain_low_lr", "recare", LOW_LR_STEPS, lr=LOW_LR, overrides={"retain_weight": 3.0}),
    # ReCARE (reference target) given the world's true CARE-set.
    FrontierMethod("recare_true_careset", "recare", STEPS, lr=SHARED_LR, care_set="true"),
    # ReCARE (reference target) with AGE's adaptive anchor over the built CARE-set.
    FrontierMethod("recare_age", "recare", STEPS, lr=SHARED_LR, overrides={"anchor_mode": "age"}),
    # ReCARE (reference target) with DoCo's gradient surgery between erase and retain gradients.
    FrontierMethod("recare_doco", "recare", STEPS, lr=SHARED_LR, overrides={"doco_surgery": True}),
    # Issue 16's measured speed option, one partial-sampling trajectory serving 4 steps, judged against the
    # faithful row at equal steps: in stage 2 (ReCARE, reference target) and in the stage-1 erase loop (ESD).
    FrontierMethod("recare_sampling_reuse", "recare", STEPS, lr=SHARED_LR, overrides={"sampling_reuse": 4}),
    FrontierMethod("esd_sampling_reuse", "esd", STEPS, lr=SHARED_LR,
                   overrides={"negative_guidance": 3.0, "sampling_reuse": 4}),
    # UCE's closed-form edit preserving the built CARE-set, at four erase scales.
    FrontierMethod("uce", "uce", (1, 4, 16, 64)),
)
METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in FRONTIER_METHODS)


@dataclass(frozen=True)
class FrontierSettings:
    """How much is generated and measured. ``images`` is the least number of images per measured rate."""

    schedule: str = "cpu"
    images: int = 200
    sample_steps: int = 5
    guidance_scale: float = 5.0

    def experiment(self, seed: int) -> ExperimentSettings:
        return dataclasses.replace(experiment_settings(self.schedule, seed), sample_steps=self.sample_steps,
                                   guidance_scale=self.guidance_scale)


def method_by_name(name: str) -> FrontierMethod:
    for method in FRONTIER_METHODS:
        if method.name == name:
            return method
    raise ValueError(f"Unknown frontier method '{name}'; choose among {', '.join(METHOD_NAMES)}.")


def result_path(folder: Path, method: str, steps: int, seed: int) -> Path:
    return folder / method / f"steps{steps:05d}_seed{seed}.json"


def _write_json(path: Path, value: object, indent: int | None = None) -> bool:
    """Write a result or cache file, whole or not at all (a stopped run leaves nothing half-written to skip).
    Returns False, leaving the file alone, when another run of the same (method, seed) wrote it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_new_file(path, lambda temporary: temporary.write_text(json.dumps(value, indent=indent),
                                                                    encoding="utf-8"))
    except FileExistsError:
        if not path.is_file():
            raise
        return False
    return True


def _per_prompt(cases: list[PromptCase], images: int) -> int:
    return max(1, math.ceil(images / len(cases)))


def measure_rates(backend: TorchBackend, models: ToyWorldModels, settings: FrontierSettings, seed: int,
                  attack_token: torch.Tensor) -> dict[str, float]:
    """Target, attack, CARE (checker and CLIP) and utility of one model, each on >= ``settings.images`` images."""
    checker, n, steps, cfg = models.checker, settings.images, settings.sample_steps, settings.guidance_scale

    def run(backend_, cases):
        return generate_cases(backend_, checker, cases, _per_prompt(cases, n), seed, steps, cfg)

    target, care, utility = run(backend, target_cases()), run(backend, care_cases()), run(backend, utility_cases())
    attacked = run(TokenBackend(backend, {ATTACK_PLACEHOLDER: attack_token}), adversarial_cases(ATTACK_PLACEHOLDER))
    accuracy = utility.attribute_accuracy()
    return {
        "target_rate": target.share_showing(TARGET_ATTRIBUTE, TARGET_VALUE),
        "adversarial_rate": attacked.share_showing(TARGET_ATTRIBUTE, TARGET_VALUE),
        "care_rate": care.share_showing(CARE_ATTRIBUTE, CARE_VALUE),
        "care_clip_score": care_score(models.clip, care.images, CARE_VALUE, labels=list(SHAPES)).care_score,
        "utility": accuracy["mean"],
        "images": {"target": target.images.shape[0], "care": care.images.shape[0],
                   "utility": utility.images.shape[0], "attack": attacked.images.shape[0]},
    }


def _train_with_snapshots(backend: TorchBackend, config: ReCAREConfig, snapshots: tuple[int, ...],
                          train: Callable[[TrainingRun, WeightUpdate], None], update_seed: int
                          ) -> dict[int, dict[str, WeightIncrement]]:
    """Run ``train`` for ``max(snapshots)`` steps; the update's increments at each snapshot step count."""
    taken: dict[int, dict[str, WeightIncrement]] = {}
    wanted = set(snapshots)
    holder: list[WeightUpdate] = []

    def on_step(step: int, total: int, message: str) -> None:
        if step in wanted:
            taken[step] = holder[0].to_erasure_increments()

    run = TrainingRun(backend, total_steps=max(snapshots), mixed_precision=False, progress=on_step)
    with torch.inference_mode(False), torch.enable_grad():
        update = WeightUpdate(backend.trainable_modules(config.train_method), config.update, rank=config.lora_rank,
                              alpha=config.lora_alpha, train_bias=config.train_bias, seed=update_seed)
        holder.append(update)
        try:
            update.requires_grad_(True)
            train(run, update)
        finally:
            update.detach()
    return taken


class SeedContext:
    """What one seed's methods share: target images, the built CARE-set and stage-1 tokens (cached on disk)."""

    def __init__(self, models: ToyWorldModels, settings: FrontierSettings, seed: int, cache: Path, log: Log):
        self.models, self.settings, self.seed, self.log = models, settings, seed, log
        self.experiment = settings.experiment(seed)
        self.config = dataclasses.replace(self.experiment.recare, seed=seed)
        self.original = TorchBackend(models.model)
        self.target_images = generate_target_images(self.original, self.experiment.target_images,
                                                    100_000 + 1000 * seed, self.experiment)
        self._cache = cache / f"seed{seed}.json"
        self._shared: dict | None = None

    def shared(self) -> dict:
        """``{"care_set": words, "tokens": {name: list}, "seconds": {...}}``, computed once per seed."""
        if self._shared is None and self._cache.exists():
            self._shared = json.loads(self._cache.read_text(encoding="utf-8"))
        if self._shared is None:
            start = time.perf_counter()
            built = build_care_set(self.target_images, self.models.clip, TARGET_VALUE, "object",
                                   self.experiment.care_set)
            care_seconds = time.perf_counter() - start
            self.log(f"seed {self.seed}: CARE-set {', '.join(built.words)}; stage 1 next")
            start = time.perf_counter()
            stage1 = run_recare(self.original, self.target_images, [], [], TARGET_VALUE,
                                dataclasses.replace(self.config, robust_steps=0))
            self._shared = {"care_set": built.words,
                            "tokens": {k: v.tolist() for k, v in stage1.learned_tokens.items()},
                            "seconds": {"care_set": round(care_seconds, 1),
                                        "stage1": round(time.perf_counter() - start, 1)}}
            if not _write_json(self._cache, self._shared):  # another run cached this seed first: share its words
                self._shared = json.loads(self._cache.read_text(encoding="utf-8"))
        return self._shared

    def tokens(self) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v) for k, v in self.shared()["tokens"].items()}


def _care_set(context: SeedContext, method: FrontierMethod) -> CareSet:
    words = context.shared()["care_set"] if method.care_set == "built" else [CARE_VALUE]
    return CareSet.from_words(TARGET_VALUE, "object", words)


def train_method(context: SeedContext, method: FrontierMethod) -> tuple[dict[int, dict], dict]:
    """``({setting: increments}, facts)`` for every setting of ``method`` on this seed."""
    if method.kind == "original":
        return {0: {}}, {}
    if method.kind == "uce":
        care_set = _care_set(context, method)
        inputs = MethodInputs(TARGET_VALUE, None, care_set.anchor_prompts, care_set.retain_prompts)
        uce = get_method("uce")
        return ({scale: uce.run(context.original, inputs, UCEConfig(**method.overrides, erase_scale=float(scale)))
                 .increments for scale in method.snapshots}, {"care_set": care_set.words})
    config = dataclasses.replace(context.config, **method.overrides)
    if method.kind == "esd":
        config = dataclasses.replace(config, erase_lr=method.lr, erase_steps=max(method.snapshots))

        def train(run, update):
            erase_stage(run, update, TARGET_VALUE, config, learned_tokens={}, name="esd_erase", seed=config.seed + 1)
        return _train_with_snapshots(context.original, config, method.snapshots, train, config.seed), {}
    if method.kind != "recare":
        raise ValueError(f"Unknown method kind '{method.kind}'.")
    config = dataclasses.replace(config, robust_lr=method.lr, robust_steps=max(method.snapshots))
    care_set = _care_set(context, method)
    tokens = context.tokens()
    erase_concepts = [TARGET_VALUE] + list(tokens)[:config.num_adv_concepts]
    anchors, retains = list(care_set.anchor_prompts), list(care_set.retain_prompts)

    def train(run, update):
        robust_erase_stage(run, update, erase_concepts, anchors, retains, config, learned_tokens=tokens,
                           name="stage2", seed=config.seed + 3,
                           **stage_two_options(run, anchors, retains, tokens, config))
    snapshots = _train_with_snapshots(context.original, config, method.snapshots, train, config.seed + 3)
    return snapshots, {"care_set": care_set.words, "erase_concepts": erase_concepts}


def run_method_seed(models: ToyWorldModels, settings: FrontierSettings, method: FrontierMethod, seed: int,
                    folder: Path, context: SeedContext | None = None, log: Log | None = None) -> list[Path]:
    """Train, attack and measure every missing snapshot of ``method`` on ``seed``; returns the files written."""
    say = log or (lambda message: None)
    missing = [s for s in method.snapshots if not result_path(folder, method.name, s, seed).exists()]
    if not missing:
        return []
    context = context or SeedContext(models, settings, seed, folder / "shared", say)
    start = time.perf_counter()
    snapshots, facts = train_method(context, method)
    train_seconds = time.perf_counter() - start
    written = []
    for steps in missing:
        path = result_path(folder, method.name, steps, seed)
        kept = f"seed {seed} {method.name} steps {steps}: another run measured it meanwhile; its file is kept"
        if path.exists():  # another run of the same (method, seed) measured it while this one trained
            say(kept)
            continue
        backend = erased_backend(models.model, snapshots[steps])
        token = attack(backend, context.target_images, context.experiment, 300_000 + seed)
        figures = measure_rates(backend, models, settings, 200_000 + 1000 * seed, token)
        record = {"method": method.name, "steps": steps, "seed": seed, "lr": method.lr,
                  "overrides": method.overrides, "kind": method.kind, "care_set_kind": method.care_set,
                  "figures": figures, "train_seconds_whole_run": round(train_seconds, 1),
                  "settings": dataclasses.asdict(settings), "attack_steps": context.experiment.attack_steps,
                  "torch": torch.__version__, **facts}
        if not _write_json(path, record, indent=1):
            say(kept)
            continue
        written.append(path)
        say(f"seed {seed} {method.name} steps {steps}: target {figures['target_rate']:.3f} attack "
            f"{figures['adversarial_rate']:.3f} CARE {figures['care_rate']:.3f} utility {figures['utility']:.3f}")
    return written
