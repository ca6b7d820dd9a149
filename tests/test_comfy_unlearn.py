"""ReCARE training on ComfyUI's own SD1.5 objects (tiny random checkpoint), in-process."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

from recare_core.methods.recare import ReCAREConfig
from comfy_harness import unchanged

pytestmark = pytest.mark.comfy

TINY = ReCAREConfig(n_rounds=1, erase_steps=2, ti_steps=2, robust_steps=2, ddim_steps=4, image_size=64,
                    num_adv_concepts=1, initializer_token="person")


@pytest.fixture(scope="module")
def models_loaded_like_comfyui(tiny_checkpoint):
    """MODEL/CLIP/VAE loaded inside inference mode, as ComfyUI's executor loads them."""
    import comfy.sd

    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(tiny_checkpoint), output_vae=True,
                                                                    output_clip=True)
    return model, clip, vae


def _pack(name: str):
    return importlib.import_module(f"comfyui_recare.{name}")


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_run_recare_on_comfy_objects_trains_and_leaves_the_input_model_untouched(recare_pack,
                                                                                 models_loaded_like_comfyui):
    model, clip, vae = models_loaded_like_comfyui
    backend_mod, context, unlearn = _pack("nodes.comfy_backend"), _pack("nodes.training_context"), \
        _pack("recare_core.methods.recare")
    backend = backend_mod.ComfyBackend(model, clip, vae)
    backend.load()
    before_unet, before_clip = _snapshot(backend.denoiser()), _snapshot(backend.text.modules()[0])
    with context.training_mode():
        swapped = context.make_weights_autograd_safe(backend.denoiser(), backend.text.modules()[0])
        assert swapped > 0  # weights loaded in inference mode had to be made usable by autograd
        images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
        result = unlearn.run_recare(backend, images, ["A person", "A tree"], ["A photo of person", "A photo of tree"],
                                    "nudity", dataclasses.replace(TINY))
    state = model.model_state_dict()
    assert result.increments and set(result.increments) <= set(state)
    assert not any(".attn2." in key for key in result.increments)  # noxattn
    assert any(inc.full.abs().sum() > 0 for inc in result.increments.values())
    assert list(result.learned_tokens) and all(t.shape[-1] == 768 for t in result.learned_tokens.values())
    for name, value in _snapshot(backend.denoiser()).items():
        assert unchanged(value, before_unet[name]), name
    for name, value in _snapshot(backend.text.modules()[0]).items():
        assert unchanged(value, before_clip[name]), name
    assert not backend.denoiser()._forward_hooks and all(not m._forward_hooks for m in backend.denoiser().modules())


def test_interrupt_mid_training_leaves_the_model_unchanged(recare_pack, models_loaded_like_comfyui):
    model, clip, vae = models_loaded_like_comfyui
    backend_mod, context, unlearn = _pack("nodes.comfy_backend"), _pack("nodes.training_context"), \
        _pack("recare_core.methods.recare")
    backend = backend_mod.ComfyBackend(model, clip, vae)
    backend.load()
    before = _snapshot(backend.denoiser())
    calls = {"n": 0}

    def stop_after_a_few_checks() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    config = dataclasses.replace(TINY, erase_steps=50)
    with context.training_mode(), pytest.raises(unlearn.Interrupted):
        unlearn.run_recare(backend, torch.rand(2, 64, 64, 3), ["A person"], ["A photo of person"], "nudity",
                           config, should_stop=stop_after_a_few_checks)
    for name, value in _snapshot(backend.denoiser()).items():
        assert unchanged(value, before[name]), name
    assert all(not m._forward_hooks for m in backend.denoiser().modules())
