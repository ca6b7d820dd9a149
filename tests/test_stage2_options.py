"""ReCARE's stage-2 options: DoCo's gradient surgery (methods/doco.py) and AGE's adaptive anchor
(methods/age.py), alone and inside a full run on the tiny plain-torch model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recare_core.methods.age import AdaptiveAnchor
from recare_core.methods.doco import GradientSurgery, project_conflict
from recare_core.methods.recare import ReCAREConfig, run_recare
from recare_core.toyworld.torch_backend import TorchBackend
from recare_core.training.run import TrainingRun
from tiny_models import assert_untouched, conditioned_model, probe, snapshot, target_images

torch.set_num_threads(1)

ANCHORS = ["A person", "A tree", "A dog"]
RETAINS = ["A photo of person", "A photo of tree", "A photo of dog"]
TINY = ReCAREConfig(n_rounds=1, erase_steps=2, ti_steps=2, robust_steps=4, ddim_steps=10, fixed_k=3, image_size=8,
                    seed=0, robust_lr=3e-4)


def test_conflicting_erase_gradient_loses_its_component_along_the_retain_gradient():
    retain = torch.tensor([1.0, 0.0, 0.0])
    erase = torch.tensor([-2.0, 1.0, 0.5])
    adjusted = project_conflict(erase, retain)
    assert torch.dot(adjusted, retain) == 0 and torch.equal(adjusted, torch.tensor([0.0, 1.0, 0.5]))
    assert torch.allclose(project_conflict(erase, retain, 0.5), torch.tensor([-1.0, 1.0, 0.5]))
    agreeing = torch.tensor([2.0, 1.0, 0.5])
    assert project_conflict(agreeing, retain) is agreeing
    assert project_conflict(erase, torch.zeros(3)) is erase


def test_surgery_step_sets_adjusted_erase_plus_retain_gradients():
    backend = TorchBackend(conditioned_model())
    run = TrainingRun(backend, total_steps=1)
    weight = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [0.5, -1.0]]))
    x = torch.tensor([1.0, -1.0])
    erase_loss = (weight @ x).pow(2).sum()
    retain_loss = -(weight @ x).sum() * 3
    erase_grad, = torch.autograd.grad(erase_loss, weight, retain_graph=True)
    retain_grad, = torch.autograd.grad(retain_loss, weight, retain_graph=True)
    optimizer = torch.optim.SGD([weight], lr=0.0)
    surgery = GradientSurgery(1.0)
    value = surgery.step(run, erase_loss, retain_loss, optimizer, [weight], stage="stage2", step=1, lr_name="robust_lr")
    assert value == pytest.approx(float((erase_loss + retain_loss).detach()))
    assert torch.allclose(weight.grad, project_conflict(erase_grad, retain_grad) + retain_grad)
    assert torch.dot(erase_grad.flatten(), retain_grad.flatten()) < 0 and surgery.last_conflict_share == 1.0
    with pytest.raises(ValueError, match="doco_lambda"):
        GradientSurgery(1.5)


def test_adaptive_anchor_mixes_top_k_and_moves_to_the_most_disturbed_concept():
    conds = torch.eye(6).reshape(6, 1, 6)
    anchor = AdaptiveAnchor(conds, conds * 2, top_k=3, lr=0.05, seed=0)
    mixed_anchor, mixed_retain = anchor.conditionings()
    assert mixed_anchor.shape == (1, 1, 6) and torch.allclose(mixed_retain, 2 * mixed_anchor)
    assert int((mixed_anchor > 0).sum()) == 3 and float(mixed_anchor.sum()) == pytest.approx(1.0)
    disturbance = torch.tensor([0.1, 0.2, 0.9, 0.3, 0.1, 0.2])  # how much erasing hurts each concept
    for _ in range(200):
        _, retain = anchor.conditionings()
        (retain.flatten() / 2 * disturbance).sum().backward()
        anchor.ascend()
    weights = anchor.weights()
    assert max(range(6), key=weights.__getitem__) == 2 and weights[2] > 0.5
    assert anchor.top_prompts(list("abcdef"), 1)[0][0] == "c"
    with pytest.raises(ValueError, match="pair up"):
        AdaptiveAnchor(conds, conds[:4])


@pytest.mark.parametrize("options", [dict(anchor_mode="age"), dict(doco_surgery=True),
                                     dict(anchor_mode="age", doco_surgery=True)])
def test_recare_runs_with_the_options_and_leaves_the_model_unchanged(options):
    backend = TorchBackend(conditioned_model())
    before = snapshot(backend.model)
    x, t, cond, expected = probe(backend.model)
    result = run_recare(backend, target_images(), ANCHORS, RETAINS, "nudity", dataclasses.replace(TINY, **options))
    assert result.increments
    if options.get("anchor_mode") == "age":
        weights = result.losses["stage2_age_max_weight"]
        assert len(weights) == TINY.robust_steps and all(1 / 3 <= w <= 1 for w in weights)
    if options.get("doco_surgery"):
        shares = result.losses["stage2_doco_conflict_share"]
        assert len(shares) == TINY.robust_steps and all(0 <= s <= 1 for s in shares) and max(shares) > 0
    assert_untouched(backend.model, before, x, t, cond, expected)


def test_surgery_at_lambda_zero_is_the_plain_step():
    plain = run_recare(TorchBackend(conditioned_model()), target_images(), ANCHORS, RETAINS, "nudity", TINY)
    zero = run_recare(TorchBackend(conditioned_model()), target_images(), ANCHORS, RETAINS, "nudity",
                      dataclasses.replace(TINY, doco_surgery=True, doco_lambda=0.0))
    # The surgery path back-propagates the erase and retain losses separately and adds the gradients; the plain
    # step back-propagates their sum. Equal in exact arithmetic; in float32 (with full updates run through merged
    # weights) Adam's normalisation can turn a last-bit gradient difference on a near-zero entry into a visible
    # one, so each tensor is compared against its own scale.
    for key, increment in plain.increments.items():
        difference = (zero.increments[key].full - increment.full).abs().max()
        assert difference <= 1e-3 * increment.full.abs().max(), key


def test_bad_option_settings_are_refused():
    with pytest.raises(ValueError, match="anchor_mode"):
        dataclasses.replace(TINY, anchor_mode="fixed").validate()
    with pytest.raises(ValueError, match="doco_lambda"):
        dataclasses.replace(TINY, doco_lambda=-0.1).validate()
