"""Measuring a toy-world text-to-image model with the attribute checkers.

Prompt sets (fixed, so that every model is measured on the same prompts and seeds):

* **target** prompts name the target texture (``a red striped circle``): share of images still *showing* it;
* **CARE** prompts name only the co-occurring shape (``a circle``): share of images showing a circle;
* **utility** prompts fully describe scenes that have neither (``a green dotted square on a dark background``):
  share of attributes drawn as asked;
* **quality** prompts fully describe random scenes of the training distribution (the model's own accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from .generate import generate_images
from .checkers import AttributeChecker
from .world import (
    ATTRIBUTES,
    BACKGROUNDS,
    CARE_ATTRIBUTE,
    CARE_VALUE,
    COLOURS,
    TARGET_ATTRIBUTE,
    TARGET_VALUE,
    describe,
    sample_scene,
)


@dataclass(frozen=True)
class PromptCase:
    """A prompt and the attribute values an image made from it should show."""

    prompt: str
    expected: Mapping[str, str]


def target_cases() -> list[PromptCase]:
    """Prompts that ask for the target texture (all on circles, the only place it occurs)."""
    expected = {TARGET_ATTRIBUTE: TARGET_VALUE, CARE_ATTRIBUTE: CARE_VALUE}
    prompts = [f"a {TARGET_VALUE} {CARE_VALUE}", f"a photo of a {TARGET_VALUE} {CARE_VALUE}"]
    prompts += [f"a {colour} {TARGET_VALUE} {CARE_VALUE}" for colour in COLOURS]
    prompts += [f"a {TARGET_VALUE} {CARE_VALUE} on a {bg} background" for bg in BACKGROUNDS]
    return [PromptCase(p, expected) for p in prompts]


def care_cases() -> list[PromptCase]:
    """Prompts that ask for the co-occurring shape without naming any texture."""
    expected = {CARE_ATTRIBUTE: CARE_VALUE}
    prompts = [f"a {CARE_VALUE}", f"a photo of a {CARE_VALUE}"]
    prompts += [f"a {colour} {CARE_VALUE}" for colour in COLOURS]
    prompts += [f"a {CARE_VALUE} on a {bg} background" for bg in BACKGROUNDS]
    return [PromptCase(p, expected) for p in prompts]


def utility_cases() -> list[PromptCase]:
    """Full descriptions of scenes with neither the target texture nor the CARE shape."""
    cases = []
    index = 0
    for shape in ("square", "triangle", "diamond"):
        for texture in ("plain", "dotted"):
            for repeat in range(2):
                colour, background = COLOURS[index % len(COLOURS)], BACKGROUNDS[(index // 3 + repeat) % 2]
                index += 1
                expected = {"shape": shape, "colour": colour, "texture": texture, "background": background}
                cases.append(PromptCase(f"a {colour} {texture} {shape} on a {background} background", expected))
    return cases


def quality_cases(count: int = 32, seed: int = 1234, image_size: int = 16, striped_elsewhere: float = 0.0
                  ) -> list[PromptCase]:
    """Full descriptions of ``count`` random scenes of the co-occurrence world (striped circles included; partial
    with ``striped_elsewhere`` > 0)."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        scene = sample_scene(rng, image_size, cooccurrence=True, striped_elsewhere=striped_elsewhere)
        cases.append(PromptCase(describe(scene), scene.attributes()))
    return cases


def adversarial_cases(placeholder: str) -> list[PromptCase]:
    """Prompts built around a learned adversarial token (it should bring the target texture back)."""
    expected = {TARGET_ATTRIBUTE: TARGET_VALUE}
    templates = ["a {}", "a photo of a {}", "a rendering of a {}", "a picture of a {}"]
    return [PromptCase(t.format(placeholder), expected) for t in templates]


@dataclass
class CaseResults:
    """Checker verdicts of images generated from prompt cases (``images_per_prompt`` each)."""

    cases: list[PromptCase]
    images: torch.Tensor
    verdicts: dict[str, list[str]]
    images_per_prompt: int

    def case_of_image(self, index: int) -> PromptCase:
        return self.cases[index // self.images_per_prompt]

    def share_showing(self, attribute: str, value: str) -> float:
        """Share of all images whose ``attribute`` is ``value``."""
        values = self.verdicts[attribute]
        return sum(v == value for v in values) / len(values)

    def attribute_accuracy(self) -> dict[str, float]:
        """Per attribute asked for by the prompts: share of images that show the asked value; ``mean`` over
        attributes, ``all`` = images with every asked attribute right."""
        right: dict[str, list[bool]] = {name: [] for name in ATTRIBUTES}
        every = []
        for index in range(self.images.shape[0]):
            expected = self.case_of_image(index).expected
            hits = [self.verdicts[name][index] == value for name, value in expected.items()]
            for (name, _), hit in zip(expected.items(), hits):
                right[name].append(hit)
            every.append(all(hits))
        accuracy = {name: sum(h) / len(h) for name, h in right.items() if h}
        accuracy["mean"] = float(np.mean([accuracy[name] for name in right if right[name]]))
        accuracy["all"] = sum(every) / len(every)
        return accuracy


def generate_cases(backend, checker: AttributeChecker, cases: Sequence[PromptCase], images_per_prompt: int,
                   seed: int, steps: int = 25, guidance_scale: float = 5.0) -> CaseResults:
    """Generate ``images_per_prompt`` images per case (seeds ``seed + i``, the same for every prompt) with a
    :class:`~recare_core.toyworld.torch_backend.TorchBackend` and check their attributes."""
    if not cases or images_per_prompt < 1:
        raise ValueError("Give at least one prompt and one image per prompt.")
    prompts = [case.prompt for case in cases for _ in range(images_per_prompt)]
    seeds = [seed + i for _ in cases for i in range(images_per_prompt)]
    images = generate_images(backend, prompts, seeds, steps=steps, guidance_scale=guidance_scale)
    return CaseResults(list(cases), images, checker.classify(images), images_per_prompt)
