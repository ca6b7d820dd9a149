"""The hooked weight update: off equals the frozen model bit for bit, on equals a model whose weights changed."""

import copy

import pytest
import torch
from torch import nn

from recare_core.training.weight_update import WeightUpdate


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.grouped = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, padding_mode="reflect")
        self.pointwise = nn.Conv2d(4, 6, 1, bias=False)
        self.head = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.relu(self.grouped(x))
        return self.head(self.pointwise(x).flatten(1))


def make_net():
    torch.manual_seed(0)
    return SmallNet()


def randomise(update: WeightUpdate, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in update.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def with_increments(net: nn.Module, update: WeightUpdate) -> nn.Module:
    """A separate model (no hooks) with ``net``'s weights plus the update's increments."""
    changed = SmallNet()
    state = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        for key, increment in update.to_erasure_increments().items():
            state[key] += increment.delta(state[key].shape)
    changed.load_state_dict(state)
    return changed


def layers(net: nn.Module, names):
    modules = dict(net.named_modules())
    return {name: modules[name] for name in names}


@pytest.mark.parametrize("kind, names", [
    ("full", ["conv", "grouped", "pointwise", "head"]),
    ("lora", ["conv", "pointwise", "head"]),
])
def test_disabled_is_bit_exact_and_enabled_matches_changed_weights(kind, names):
    net = make_net()
    x = torch.randn(2, 3, 8, 8)
    original = net(x)
    update = WeightUpdate(layers(net, names), kind, rank=2, alpha=3.0)
    randomise(update)
    with update.enabled(False):
        assert torch.equal(net(x), original)
    patched = net(x)
    assert not torch.allclose(patched, original)
    torch.testing.assert_close(patched, with_increments(net, update)(x), atol=1e-5, rtol=1e-5)
    update.detach()
    assert torch.equal(net(x), original)


def test_increment_keys_follow_parameter_names():
    net = make_net()
    update = WeightUpdate(layers(net, ["conv", "pointwise", "head"]), "full")
    assert set(update.to_erasure_increments()) == {
        "conv.weight", "conv.bias", "pointwise.weight", "head.weight", "head.bias"}
    lora = WeightUpdate(layers(net, ["conv", "head"]), "lora", rank=2)
    increments = lora.to_erasure_increments()
    assert set(increments) == {"conv.weight", "head.weight"}
    assert increments["conv.weight"].is_lora and increments["conv.weight"].rank == 2
    no_bias = WeightUpdate(layers(net, ["conv"]), "full", train_bias=False)
    assert set(no_bias.to_erasure_increments()) == {"conv.weight"}


def test_fresh_update_changes_nothing_and_gradients_reach_only_the_update():
    net = make_net()
    x = torch.randn(2, 3, 8, 8)
    original = net(x)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    for kind in ("full", "lora"):
        update = WeightUpdate(layers(net, ["conv", "head"]), kind, rank=2)
        out = net(x)
        torch.testing.assert_close(out, original)
        out.square().mean().backward()
        grads = [p.grad for p in update.parameters()]
        assert all(g is not None for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        assert all(p.grad is None for p in net.parameters())
        update.detach()


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_commit_keeps_the_trained_part_when_disabled(kind):
    net = make_net()
    x = torch.randn(2, 3, 8, 8)
    update = WeightUpdate(layers(net, ["conv", "pointwise", "head"]), kind, rank=2)
    randomise(update, seed=1)
    first = with_increments(net, update)
    update.commit()
    with update.enabled(False):
        torch.testing.assert_close(net(x), first(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net(x), first(x), atol=1e-5, rtol=1e-5)  # fresh trainable part adds nothing
    randomise(update, seed=2)
    both = with_increments(net, update)  # committed + second round as one increment per weight
    torch.testing.assert_close(net(x), both(x), atol=1e-5, rtol=1e-5)
    with update.enabled(False):
        torch.testing.assert_close(net(x), first(x), atol=1e-5, rtol=1e-5)


def test_lora_of_grouped_conv_is_refused():
    net = make_net()
    with pytest.raises(ValueError, match="grouped"):
        WeightUpdate(layers(net, ["grouped"]), "lora")


def test_bad_kind_and_empty_selection_are_refused():
    net = make_net()
    with pytest.raises(ValueError, match="Unknown update kind"):
        WeightUpdate(layers(net, ["conv"]), "dense")
    with pytest.raises(ValueError, match="at least one layer"):
        WeightUpdate({}, "full")
