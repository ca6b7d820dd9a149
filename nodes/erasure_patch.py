"""Apply an :class:`Erasure` to a ComfyUI MODEL as removable patches (like a LoRA), never in place."""

from __future__ import annotations

from ..recare_core.erasure.increments import Erasure, IncrementShapeError


class ErasureMismatchError(ValueError):
    """The erasure was trained for another model architecture."""


def erasure_patches(model, erasure: Erasure) -> dict[str, tuple]:
    """ModelPatcher patches (``"diff"`` full-weight deltas) for every increment; raises
    :class:`ErasureMismatchError` listing missing keys and shape mismatches."""
    state = model.model_state_dict()
    missing = [key for key in erasure.increments if key not in state]
    patches, wrong_shape = {}, []
    for key, increment in erasure.increments.items():
        if key in missing:
            continue
        try:
            delta = increment.delta(state[key].shape)
        except IncrementShapeError as error:
            wrong_shape.append(f"{key}: {error}")
            continue
        if tuple(delta.shape) != tuple(state[key].shape):
            wrong_shape.append(f"{key}: erasure {tuple(delta.shape)} vs model {tuple(state[key].shape)}")
            continue
        patches[key] = ("diff", (delta,))
    if missing or wrong_shape:
        details = [f"{len(missing)} weights absent from the model (e.g. {', '.join(missing[:3])})"] if missing else []
        details += [f"{len(wrong_shape)} shape mismatches (e.g. {'; '.join(wrong_shape[:3])})"] if wrong_shape else []
        base = erasure.metadata.get("base_model", "another model")
        raise ErasureMismatchError(
            f"The erasure of '{erasure.concept}' was trained for {base} and does not fit this model: "
            + ", ".join(details) + "."
        )
    return patches


def apply_erasure(model, erasure: Erasure, strength: float):
    """A clone of ``model`` with the erasure patched in at ``strength`` (0 gives the original model exactly)."""
    patched = model.clone()
    patched.add_patches(erasure_patches(model, erasure), strength)
    return patched
