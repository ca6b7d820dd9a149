"""ComfyUI's MODEL/CLIP/VAE as a ReCARE backend: its numbers must be ComfyUI's own numbers."""

from __future__ import annotations

import importlib

import pytest
import torch

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def backend(recare_pack, comfy_models):
    module = importlib.import_module("comfyui_recare.nodes.comfy_backend")
    backend = module.ComfyBackend(comfy_models["model"], comfy_models["clip"], comfy_models["vae"])
    backend.load()
    return backend


def test_differentiable_text_forward_equals_comfyui_encoding(backend, comfy_models):
    clip = comfy_models["clip"]
    prompt = "a painting of a person under the stars"
    expected = clip.encode_from_tokens(clip.tokenize(prompt)).float()
    # A learned token set to the embedding of "person" must reproduce the prompt that says "person".
    learned = {"<adv0>": backend.token_embedding("person").requires_grad_(True)}
    got = backend.encode_text(["a painting of a <adv0> under the stars"], learned)
    assert got.shape == expected.shape == (1, 77, 768)
    torch.testing.assert_close(got, expected.to(got.device), rtol=1e-4, atol=1e-4)
    got.square().sum().backward()
    assert learned["<adv0>"].grad is not None and learned["<adv0>"].grad.abs().sum() > 0


def test_differentiable_forward_respects_clip_set_last_layer(backend, comfy_models):
    clip = comfy_models["clip"].clone()
    clip.clip_layer(-2)
    module = importlib.import_module("comfyui_recare.nodes.comfy_backend")
    text = module.ComfyTextEncoder(clip, backend.family)
    expected = clip.encode_from_tokens(clip.tokenize("a photo of a dog")).float()
    got = text.encode(["a photo of a <t>"], {"<t>": text.token_embedding("dog")})
    torch.testing.assert_close(got, expected.to(got.device), rtol=1e-4, atol=1e-4)


def test_predict_noise_matches_comfyui_apply_model(backend, comfy_models):
    model = comfy_models["model"].model
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(backend.latent_shape(2, 64), generator=generator)
    t = torch.tensor([100, 700])
    cond = backend.encode_text(["a cat", ""])
    eps = backend.predict_noise(x_t, t, cond)
    # ComfyUI's own path works in sigma space: x_sigma = x_t / sqrt(alpha_bar), denoised = x_sigma - sigma * eps.
    alpha = backend.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    sigma = ((1 - alpha) / alpha).sqrt()
    with torch.no_grad():
        denoised = model.apply_model(x_t / alpha.sqrt(), sigma.flatten(), c_crossattn=cond)
    eps_comfy = (x_t / alpha.sqrt() - denoised) / sigma
    torch.testing.assert_close(eps, eps_comfy, rtol=1e-3, atol=1e-3)


def test_schedule_and_latents(backend, comfy_models):
    acp = backend.alphas_cumprod
    assert acp.dtype == torch.float64 and acp.shape == (1000,)
    assert torch.all(acp[1:] < acp[:-1])
    images = torch.rand(2, 64, 64, 3)
    latents = backend.encode_images(images)
    assert latents.shape == (2, 4, 8, 8)
    raw = comfy_models["vae"].encode(images)
    torch.testing.assert_close(latents, raw.float() * 0.18215)


def test_noxattn_selects_all_linear_and_conv_except_cross_attention(backend):
    selected = backend.trainable_modules("noxattn")
    assert selected and all(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in selected.values())
    assert not any(".attn2." in name for name in selected)
    assert all(name.startswith("diffusion_model.") for name in selected)
    xattn = backend.trainable_modules("xattn")
    assert xattn and all(".attn2." in name for name in xattn)


def test_other_model_families_are_refused(recare_pack, comfy_models):
    module = importlib.import_module("comfyui_recare.nodes.comfy_backend")
    import comfy.supported_models

    model = comfy_models["model"].clone()
    original = model.model.model_config
    try:
        model.model.model_config = comfy.supported_models.SD3(dict(comfy.supported_models.SD3.unet_config))
        with pytest.raises(module.UnsupportedModelError, match=r"SD3.*supports SD1\.x"):
            module.check_supported(model)
    finally:
        model.model.model_config = original


def test_learned_token_exported_as_comfyui_embedding_gives_the_same_conditioning(backend, comfy_models, tmp_path):
    import comfy.sd

    module = importlib.import_module("comfyui_recare.nodes.comfy_backend")
    learned = backend.token_embedding("dog") + 0.01 * torch.randn(1, 768, generator=torch.Generator().manual_seed(1))
    tensors = backend.text.embedding_tensors(learned)
    assert list(tensors) == ["emb_params"] and tensors["emb_params"].shape == (1, 768)
    name = module.save_textual_inversion_embedding(tensors, str(tmp_path), "recare_adv")
    assert name == "recare_adv"
    assert module.save_textual_inversion_embedding(tensors, str(tmp_path), "recare_adv") == "recare_adv_00001"
    ours = backend.encode_text(["a photo of a <adv>"], {"<adv>": learned})
    clip = comfy_models["clip"]
    tokenizer = clip.tokenizer.clip_l
    previous = tokenizer.embedding_directory
    tokenizer.embedding_directory = str(tmp_path)
    try:
        theirs = clip.encode_from_tokens(clip.tokenize(f"a photo of a embedding:{name}")).float()
    finally:
        tokenizer.embedding_directory = previous
    torch.testing.assert_close(ours, theirs.to(ours.device), rtol=1e-4, atol=1e-4)


def test_gradient_checkpointing_on_comfyui_unet_gives_the_same_gradients(backend):
    from recare_core.training.backend import DiffusionBackend
    from recare_core.training.checkpointing import gradient_checkpointing
    from recare_core.training.weight_update import WeightUpdate

    assert isinstance(backend, DiffusionBackend)
    layers = backend.trainable_modules("noxattn")
    cond = backend.encode_text(["a cat"])
    x_t = torch.randn(backend.latent_shape(1, 64), generator=torch.Generator().manual_seed(2))

    def loss_and_grads(checkpointing: bool):
        update = WeightUpdate(layers, "full", seed=0)
        try:
            with torch.enable_grad(), gradient_checkpointing(backend.checkpoint_blocks(), checkpointing) as wrapped:
                loss = backend.predict_noise(x_t, torch.tensor([500]), cond).square().mean()
                loss.backward()
            return loss.detach(), [p.grad.clone() for p in update.parameters()], wrapped
        finally:
            update.detach()

    plain_loss, plain_grads, _ = loss_and_grads(False)
    ckpt_loss, ckpt_grads, wrapped = loss_and_grads(True)
    assert wrapped == len(backend.checkpoint_blocks()) > 0
    torch.testing.assert_close(ckpt_loss, plain_loss)
    for a, b in zip(ckpt_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
