"""Merged weights (one pass per layer) give the numbers of the additive path (two passes), on a small net, on
the toy model through every training loop, and on ComfyUI's own UNet from the tiny checkpoint."""

from __future__ import annotations

import importlib

import pytest
import torch

from recare_core.methods.recare_config import ReCAREConfig
from recare_core.methods.stage_erase import erase_stage, robust_erase_stage
from recare_core.methods.textual_inversion import encode_images_once, prepare_images, textual_inversion
from recare_core.toyworld.toy_model import ToyModelConfig, ToyTextToImage
from recare_core.toyworld.torch_backend import TorchBackend
from recare_core.training import weight_update
from recare_core.training.run import TrainingRun
from recare_core.training.weight_update import WeightUpdate
from test_weight_update import layers, make_net, randomise

torch.set_num_threads(1)
ANCHORS = ["a person", "a tree"]
RETAINS = ["a photo of person", "a photo of tree"]


@pytest.fixture
def additive_calls(monkeypatch) -> list[int]:
    """Counts calls of the additive path (``output_delta``), which still runs for real."""
    calls: list[int] = []
    original = weight_update._LayerUpdate.output_delta

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(weight_update._LayerUpdate, "output_delta", counted)
    return calls


@pytest.mark.parametrize("kind, names", [
    ("full", ["conv", "grouped", "pointwise", "head"]),
    ("lora", ["conv", "pointwise", "head"]),
])
def test_merged_forward_and_gradients_equal_the_additive_path(kind, names, additive_calls):
    x = torch.randn(2, 3, 8, 8)
    results = {}
    for merge in (False, True):
        net = make_net().requires_grad_(False)
        update = WeightUpdate(layers(net, names), kind, rank=2, merge=merge)
        randomise(update, seed=1)
        update.commit()
        randomise(update, seed=2)
        with torch.no_grad():
            sampled = net(x)
        with update.enabled(False), torch.no_grad():
            teacher = net(x)
        out = net(x)
        out.square().mean().backward()
        optimizer = torch.optim.SGD(update.parameters(), lr=0.1)
        optimizer.step()  # the cached merged weights must follow the step
        with torch.no_grad():
            after_step = net(x)
        results[merge] = [sampled, teacher, out.detach(), after_step, *[p.grad for p in update.parameters()]]
        calls = len(additive_calls)
        update.detach()
        assert torch.equal(net(x), make_net()(x))
    assert calls > 0  # the additive run went through output_delta, the merged one never did
    assert len(additive_calls) == calls
    for merged, additive in zip(results[True], results[False]):
        torch.testing.assert_close(merged, additive, rtol=1e-5, atol=1e-6)


def test_half_precision_and_unknown_layers_stay_additive(additive_calls):
    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2.0

    net = torch.nn.Sequential(Scaled(4, 3)).requires_grad_(False)
    update = WeightUpdate({"0": net[0]}, "full")
    randomise(update)
    expected = net[0].weight @ torch.ones(4) * 2.0 + update.parameters()[0] @ torch.ones(4)
    torch.testing.assert_close(net(torch.ones(1, 4))[0], expected + 2.0 * net[0].bias + update.parameters()[1])
    assert additive_calls
    update.detach()
    half = torch.nn.Linear(4, 3).half().requires_grad_(False)
    update = WeightUpdate({"h": half}, "full")
    assert not weight_update._merges(half, torch.ones(1, 4, dtype=torch.float16))
    update.detach()


def toy_backend() -> TorchBackend:
    return TorchBackend(ToyTextToImage(ToyModelConfig(image_size=8, model_channels=16, text_width=16), seed=0))


def _loops(backend, kind: str, merge: bool, config: ReCAREConfig) -> tuple[dict, dict]:
    """Two stage-1 rounds (erase with commit, TI) then stage 2: losses and final increments."""
    torch.manual_seed(0)
    run = TrainingRun(backend, total_steps=config.total_steps)
    update = WeightUpdate(backend.trainable_modules("noxattn"), kind, rank=2, merge=merge)
    images = torch.rand(2, config.image_size, config.image_size, 3, generator=torch.Generator().manual_seed(3))
    latents, flipped = encode_images_once(run, prepare_images(images, config.image_size), True)
    initial = backend.token_embedding("person").float().mean(0, keepdim=True)
    learned: dict[str, torch.Tensor] = {}
    try:
        for r in range(2):
            if r:
                update.commit()
            update.requires_grad_(True)
            erase_stage(run, update, "nudity" if r == 0 else "adv_1", config, learned_tokens=learned,
                        name=f"stage1_round{r}_erase", seed=r)
            update.requires_grad_(False)
            learned[f"adv_{r + 1}"] = textual_inversion(run, latents, f"adv_{r + 1}", initial, config,
                                                        name=f"stage1_round{r}_ti", seed=r, flipped_latents=flipped)
        stage1 = update.to_erasure_increments()
    finally:
        update.detach()
    update = WeightUpdate(backend.trainable_modules("noxattn"), kind, rank=2, merge=merge, seed=5)
    try:
        robust_erase_stage(run, update, ["nudity", *learned], ANCHORS, RETAINS, config, learned_tokens=learned,
                           name="stage2", seed=0)
        stage2 = update.to_erasure_increments()
    finally:
        update.detach()
    losses = {name: values for record in run.records.values() for name, values in record.losses.items()}
    return losses, {"stage1": stage1, "stage2": stage2}


def assert_same_run(merged: tuple[dict, dict], additive: tuple[dict, dict], rtol: float) -> None:
    """Losses within ``rtol`` of the curve's largest value; each increment within ``5 * rtol`` of its size
    (relative Frobenius error; Adam's normalised steps amplify float rounding: median ~1e-4, max ~1.3e-3 on
    the toy model, while two additive runs agree bit for bit)."""
    assert merged[0].keys() == additive[0].keys() and len(merged[0]) >= 5
    for name in additive[0]:
        expected = torch.tensor(additive[0][name], dtype=torch.float64)
        torch.testing.assert_close(torch.tensor(merged[0][name], dtype=torch.float64), expected, rtol=rtol,
                                   atol=rtol * float(expected.abs().max()), msg=f"losses of {name}")
    for stage in ("stage1", "stage2"):
        assert merged[1][stage].keys() == additive[1][stage].keys()
        for key, increment in additive[1][stage].items():
            expected = increment.delta()
            error = (merged[1][stage][key].delta() - expected).norm() / expected.norm()
            assert error < 5 * rtol, f"{stage} increment {key} differs by {error:.2e} of its size"


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_every_loop_on_the_toy_model_matches_the_additive_path(kind, additive_calls):
    config = ReCAREConfig(erase_steps=3, ti_steps=3, robust_steps=3, ddim_steps=10, fixed_k=3, image_size=8,
                          erase_lr=1e-3, robust_lr=1e-3, seed=0)
    backend = toy_backend()
    additive = _loops(backend, kind, merge=False, config=config)
    used = len(additive_calls)
    merged = _loops(backend, kind, merge=True, config=config)
    if kind == "full":
        assert len(additive_calls) == used  # merged full updates never take the two-pass path
    assert_same_run(merged, additive, rtol=1e-3)


@pytest.mark.comfy
def test_comfyui_unet_loops_match_the_additive_path(recare_pack, comfy_models, additive_calls):
    module = importlib.import_module("comfyui_recare.nodes.comfy_backend")
    backend = module.ComfyBackend(comfy_models["model"], comfy_models["clip"], comfy_models["vae"])
    backend.load()
    config = ReCAREConfig(erase_steps=2, ti_steps=2, robust_steps=2, ddim_steps=10, fixed_k=2, image_size=64,
                          erase_lr=1e-4, robust_lr=1e-4, seed=0)
    additive = _loops(backend, "full", merge=False, config=config)
    used = len(additive_calls)
    merged = _loops(backend, "full", merge=True, config=config)
    assert len(additive_calls) == used
    assert_same_run(merged, additive, rtol=1e-3)
