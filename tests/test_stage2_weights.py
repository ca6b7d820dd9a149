"""The tunable stage-2 target: at the defaults it is the reference's bit for bit; the named weights change it as
documented (erase weight, anchor weight, adversarial weight in the target mean and in the loss)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recare_core.methods import stage_erase
from recare_core.methods.recare_config import ReCAREConfig
from recare_core.methods.stage_erase import robust_erase_stage, stage_two_weights
from recare_core.toyworld.toy_model import ToyModelConfig, ToyTextToImage
from recare_core.toyworld.torch_backend import TorchBackend
from recare_core.training.guidance import (
    normalized_compositional_guidance,
    normalized_update,
    weighted_compositional_guidance,
)
from recare_core.training.run import TrainingRun
from recare_core.training.weight_update import WeightUpdate

torch.set_num_threads(1)


def predictions(count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, 4, 4, generator=generator) for _ in range(count)]


def reference_scales(config: ReCAREConfig, n_erase: int) -> list[float]:
    """The reference's scales (train.py / utils/recare.py): -S on every erase concept, +S on the anchor."""
    scale = config.compositional_guidance_scale
    return [-scale] * n_erase + [scale]


@pytest.mark.parametrize("scale", [2.0, 2.7, 0.3])
def test_default_weights_are_the_reference_scales_exactly(scale):
    config = ReCAREConfig(compositional_guidance_scale=scale)
    erase, anchor, loss_weights = stage_two_weights(config, 3)
    assert erase == [-scale - 1.0] * 3  # the reference's (s - 1) with s = -S
    assert anchor == scale - 1.0  # (s - 1) with s = +S
    assert loss_weights == [1.0, 1.0, 1.0]


def test_default_target_is_bit_identical_to_the_reference_formula():
    config = ReCAREConfig()
    e_uncond, *conds = predictions(4)
    erase, anchor, _ = stage_two_weights(config, 2)
    tuned = weighted_compositional_guidance(conds, e_uncond, erase + [anchor], [False, False, True])
    reference = normalized_compositional_guidance(conds, e_uncond, reference_scales(config, 2))
    assert torch.equal(tuned, reference)
    # and it is e_u + 1 * update(anchor) - 3 * mean(update(negatives)), worked out independently
    u = [normalized_update(c, e_uncond) for c in conds]
    expected = e_uncond.double() + 1.0 * u[2] - 3.0 * (u[0] + u[1]) / 2
    torch.testing.assert_close(tuned.double(), expected.to(tuned.dtype).double(), rtol=0, atol=1e-6)


def test_named_weights_change_the_target_as_documented():
    e_uncond, *conds = predictions(4, seed=1)
    u = [normalized_update(c, e_uncond) for c in conds]
    config = ReCAREConfig(erase_target_weight=1.0, anchor_weight=0.5, adversarial_weight=0.25)
    erase, anchor, loss_weights = stage_two_weights(config, 2)
    target = weighted_compositional_guidance(conds, e_uncond, erase + [anchor], [False, False, True])
    # erase group: -1 * (1 * u0 + 0.25 * u1) / 1.25; anchor: 0.5 * u2
    expected = e_uncond.double() + 0.5 * u[2] - (u[0] + 0.25 * u[1]) / 1.25
    torch.testing.assert_close(target.double(), expected.float().double(), rtol=0, atol=1e-6)
    assert loss_weights == [1.0, 0.25]
    # adversarial weight 0: the tokens drop out, the target is the one of the concept alone
    no_tokens = dataclasses.replace(config, adversarial_weight=0.0)
    erase, anchor, loss_weights = stage_two_weights(no_tokens, 2)
    alone_erase, alone_anchor, _ = stage_two_weights(no_tokens, 1)
    with_zero = weighted_compositional_guidance(conds, e_uncond, erase + [anchor], [False, False, True])
    alone = weighted_compositional_guidance([conds[0], conds[2]], e_uncond, alone_erase + [alone_anchor],
                                            [False, True])
    torch.testing.assert_close(with_zero, alone, rtol=0, atol=1e-6)
    assert loss_weights == [1.0, 0.0]


@pytest.mark.parametrize("field, value", [("erase_target_weight", -1.0), ("anchor_weight", float("nan")),
                                          ("adversarial_weight", -0.1), ("retain_weight", -2.0),
                                          ("compositional_guidance_scale", 0.0)])
def test_bad_weights_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(ReCAREConfig(), **{field: value}).validate()


def _stage_two_increments(config: ReCAREConfig) -> dict[str, torch.Tensor]:
    model = ToyTextToImage(ToyModelConfig(image_size=8, model_channels=16, text_width=16), seed=0)
    backend = TorchBackend(model)
    run = TrainingRun(backend, total_steps=config.robust_steps)
    token = backend.token_embedding("shape").mean(dim=0, keepdim=True)
    update = WeightUpdate(backend.trainable_modules("noxattn"), "full", seed=0)
    try:
        update.requires_grad_(True)
        with torch.enable_grad():
            robust_erase_stage(run, update, ["nudity", "<adv0>"], ["a person", "a tree"],
                               ["a photo of person", "a photo of tree"], config,
                               learned_tokens={"<adv0>": token + 0.1}, seed=0)
        return {name: increment.full.clone() for name, increment in update.to_erasure_increments().items()}
    finally:
        update.detach()


def test_default_stage_two_training_is_bit_identical_to_the_reference_scales(monkeypatch):
    config = ReCAREConfig(robust_steps=4, ddim_steps=6, fixed_k=2, image_size=8, seed=0)
    pack = _stage_two_increments(config)

    def reference_target(conds, e_uncond, coefficients, positive, eta):
        return normalized_compositional_guidance(conds, e_uncond, reference_scales(config, len(conds) - 1), eta)

    monkeypatch.setattr(stage_erase, "weighted_compositional_guidance", reference_target)
    reference = _stage_two_increments(config)
    assert pack.keys() == reference.keys() and pack
    assert all(torch.equal(pack[name], reference[name]) for name in pack)
    monkeypatch.undo()
    # a different erase weight trains a different update
    lighter = _stage_two_increments(dataclasses.replace(config, erase_target_weight=1.0))
    assert any(not torch.equal(pack[name], lighter[name]) for name in pack)
