"""The one place node widgets of erasure methods are defined: a tooltip, range and placement per config field,
turned into ComfyUI inputs whose defaults come from the method's config dataclass.

A field used by several methods (``erase_steps``, ``train_method``, ``seed``...) has one definition here and so
the same tooltip and range on every method node. Values come back from ``execute`` as keyword arguments named
like the fields; :func:`config_from_values` puts them into the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from comfy_api.v0_0_2 import io

from ..recare_core.methods.recare_config import ANCHOR_MODES
from ..recare_core.training.train_methods import TRAIN_METHODS
from ..recare_core.training.weight_update import UPDATE_KINDS
from .compat import advanced
from .file_inputs import check_choice


@dataclass(frozen=True)
class Widget:
    """How a config field shows on a node: ``tooltip``; for numbers ``minimum`` / ``maximum`` / ``step``; for a
    choice ``options``; ``advanced`` folds it away where the ComfyUI supports it; an ``optional`` input may be
    missing from a graph (saved before it existed), the config's default then applies. ``unset`` is the number
    a field whose config value is ``None`` ("derive it") shows as; that number means ``None`` again."""

    tooltip: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    options: tuple[str, ...] | None = None
    advanced: bool = False
    optional: bool = False
    unset: float | None = None


def _count(tooltip: str, minimum: int = 0, maximum: int = 100000, is_advanced: bool = False) -> Widget:
    return Widget(tooltip, minimum, maximum, advanced=is_advanced)


def _rate(tooltip: str, step: float, is_advanced: bool = True) -> Widget:
    return Widget(tooltip, 0.0, 100.0, step, advanced=is_advanced)


WIDGETS: dict[str, Widget] = {
    # ReCARE stage 1 and plain ESD.
    "n_rounds": _count("Stage 1: erase-then-attack rounds (adversarial tokens found).", 1, 10),
    "erase_steps": _count("Erasure steps (ReCARE: per stage-1 round; ESD: the whole run)."),
    "erase_lr": _rate("Learning rate of the erasure.", 1e-7),
    "ti_steps": _count("Stage 1: textual-inversion steps per round."),
    "ti_lr": _rate("Stage 1: learning rate of the adversarial token embedding.", 1e-4),
    "negative_guidance": _rate("Strength of the negative guidance that builds the erasure target.", 0.1),
    # ReCARE stage 2.
    "robust_steps": _count("Stage 2: robust erase steps."),
    "robust_lr": _rate("Stage 2: learning rate.", 1e-7),
    "compositional_guidance_scale": _rate("Stage 2: scale of the compositional (erase/anchor) guidance.", 0.1),
    "num_adv_concepts": _count("Stage 2: how many learned adversarial tokens are erased with the concept.", 0, 10,
                               True),
    "erase_target_weight": Widget("Stage 2: weight of the erase concepts' (mean) guidance update in the target; the "
                                  "reference uses S + 1 (3 at S = 2). Lower keeps more of what co-occurs with the "
                                  "concept and erases less. -1: the reference's value, from "
                                  "compositional_guidance_scale.", -1.0, 100.0, 0.05, advanced=True, optional=True,
                                  unset=-1.0),
    "anchor_weight": Widget("Stage 2: weight of the CARE anchor's guidance update in the target; the reference uses "
                            "S - 1 (1 at S = 2). -1: the reference's value, from compositional_guidance_scale.",
                            -1.0, 100.0, 0.05, advanced=True, optional=True, unset=-1.0),
    "adversarial_weight": Widget("Stage 2: weight of the learned adversarial tokens relative to the concept, both in "
                                 "the target's mean and in the erase loss of steps that draw one (1: the reference; "
                                 "0: they are not erased).", 0.0, 100.0, 0.05, advanced=True, optional=True),
    "retain_weight": Widget("Stage 2: weight of the retain loss that keeps the CARE-set's predictions (1: the "
                            "reference).", 0.0, 100.0, 0.05, advanced=True, optional=True),
    # Training points and layers (shared by the training methods).
    "ddim_steps": _count("Schedule length of the partial DDIM sampling that produces training points.", 3, 1000,
                         True),
    "sampling_cfg": _rate("Classifier-free guidance of that partial sampling.", 0.1),
    "train_method": Widget("Which UNet layers are trained: " + "; ".join(f"{k}: {v}" for k, v in TRAIN_METHODS.items()),
                           options=tuple(TRAIN_METHODS)),
    "update": Widget("'full': exact weight deltas (as the paper). 'lora': low-rank adapters, for 8-12 GB GPUs.",
                     options=UPDATE_KINDS),
    "lora_rank": _count("Rank of the LoRA adapters when update is 'lora'.", 1, 1024, True),
    "image_size": _count("Training resolution in pixels (512 for SD1.5 and SD2 512, 768 for SD2 768-v, 1024 for "
                         "SDXL; lower saves memory).", 64, 2048),
    "gradient_checkpointing": Widget("Trade compute for memory during training.", advanced=True),
    "seed": Widget("Seed for every random draw of the training.", 0, 2**31 - 1),
    # Textual inversion data.
    "initializer_token": Widget("A word the adversarial tokens start from: 'person' or an object for objects, "
                                "'art' for styles."),
    "concept_type": Widget("Object or style: picks the textual-inversion prompt templates.",
                           options=("object", "style")),
    # ReCARE stage-2 options (optional: graphs saved before they existed keep working).
    "anchor_mode": Widget("Stage 2 anchor: 'care_set' draws one CARE-set prompt per step (the paper); 'age' "
                          "learns a mixture of the CARE-set prompts that follows the concepts the erasure disturbs "
                          "most (AGE, ICLR 2025).", options=ANCHOR_MODES, advanced=True, optional=True),
    "age_top_k": Widget("AGE: how many CARE-set prompts the anchor mixture may combine at once.", 1, 100,
                        advanced=True, optional=True),
    "doco_surgery": Widget("Stage 2: DoCo's gradient surgery: where erasing pulls against retaining, drop that part "
                           "of the erase gradient (AAAI 2025).", advanced=True, optional=True),
    "doco_lambda": Widget("DoCo: share of the conflicting part removed (1 = all of it).", 0.0, 1.0, 0.05,
                          advanced=True, optional=True),
    # UCE.
    "guide": Widget("UCE: the concept the erased one is mapped onto. Empty: the unconditional prompt (UCE's "
                    "default for objects); 'art' is UCE's choice for artistic styles."),
    "preserve": Widget("UCE: extra concepts to keep unchanged, separated by ';' (e.g. 'a dog; a tree')."),
    "preserve_care_set": Widget("UCE: also keep the connected CARE-set's anchor and retain prompts unchanged."),
    "erase_scale": _rate("UCE: weight of the erase term (how fully the concept is mapped onto the guide).", 0.05,
                         False),
    "preserve_scale": _rate("UCE: weight of the preserve term (how strictly preserved concepts stay).", 0.05,
                            False),
    "lamb": _rate("UCE: regulariser keeping every other direction of the weights as it was.", 0.05),
}


def config_input(name: str, default: Any) -> io.Input:
    """The ComfyUI input of field ``name`` (see :data:`WIDGETS`) with ``default``; its kind follows the default's
    type (bool, int, float, str) or the widget's options."""
    widget = WIDGETS[name]
    if default is None and widget.unset is not None:
        default = widget.unset
    common = dict(default=default, tooltip=widget.tooltip, optional=widget.optional)
    if widget.options is not None:
        made = io.Combo.Input(name, options=list(widget.options), **common)
    elif isinstance(default, bool):
        made = io.Boolean.Input(name, **common)
    elif isinstance(default, int):
        made = io.Int.Input(name, min=int(widget.minimum or 0),
                            max=int(widget.maximum if widget.maximum is not None else 100000), **common)
    elif isinstance(default, float):
        made = io.Float.Input(name, min=widget.minimum or 0.0,
                              max=widget.maximum if widget.maximum is not None else 100.0,
                              step=widget.step or 0.01, **common)
    elif isinstance(default, str):
        made = io.String.Input(name, **common)
    else:
        raise TypeError(f"No widget kind for field '{name}' with default {default!r}.")
    return advanced(made) if widget.advanced else made


def config_inputs(defaults: Any, names: Sequence[str]) -> list[io.Input]:
    """Inputs for the fields ``names`` of the config instance ``defaults``, in that order."""
    return [config_input(name, getattr(defaults, name)) for name in names]


def config_from_values(base: Any, values: Mapping[str, Any]) -> Any:
    """``base`` (a config dataclass instance) with the fields named in ``values`` replaced; other keys are
    ignored. Strings are stripped. A choice field's value is checked against its options here, whatever the
    running ComfyUI validates (0.3.64 lets any string through a V3 combo)."""
    names = {f.name for f in dataclasses.fields(base)}
    changes = {k: (v.strip() if isinstance(v, str) else v) for k, v in values.items() if k in names}
    for name, value in changes.items():
        widget = WIDGETS.get(name)
        if widget is not None and widget.options is not None:
            check_choice(value, widget.options, name)
        if widget is not None and widget.unset is not None and value == widget.unset:
            changes[name] = None
    return dataclasses.replace(base, **changes)
