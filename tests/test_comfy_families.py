"""SD 2.x and the SDXL family through ComfyUI's own objects (tiny cached checkpoints, in-process): the backend's
conditioning, predictions and textual-inversion files must be exactly ComfyUI's; other families are refused."""

from __future__ import annotations

import importlib

import pytest
import torch

from family_fixtures import load_family, release

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

EXPECTED = {"sd2": ("SD2.x", 1024, (1, 77, 1024)), "sdxl": ("SDXL", 2048, (1, 78, 2048))}


def _pack(name: str):
    return importlib.import_module(f"comfyui_recare.{name}")


@pytest.fixture(scope="module", params=["sd2", "sdxl"])
def family(request, recare_pack):
    """``(name, models, backend)`` for one family at a time (a tiny SDXL holds ~5 GB of RAM)."""
    name = request.param
    models = load_family(request.getfixturevalue(f"{name}_checkpoint"), inference=False)
    backend = _pack("nodes.comfy_backend").ComfyBackend(models["model"], models["clip"], models["vae"])
    backend.load()
    yield name, models, backend
    del backend
    release(models)


_ENCODED: dict = {}


def _comfy_conditioning(clip, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What CLIPTextEncode gives: hidden states and the pooled output (each encoding made once: CPU fp16 text
    towers are slow)."""
    key = (id(clip.cond_stage_model), clip.layer_idx, prompt)
    if key not in _ENCODED:
        context, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
        _ENCODED[key] = (context.float(), pooled.float())
    return _ENCODED[key]


def test_family_is_detected_and_conditioning_is_comfyuis(family):
    name, models, backend = family
    family_name, width, shape = EXPECTED[name]
    assert backend.family.name == family_name and backend.prediction == "eps"
    context, pooled = _comfy_conditioning(models["clip"], "a painting of a person under the stars")
    assert context.shape == (1, 77, width)
    cond = backend.encode_text(["a painting of a person under the stars"])
    assert cond.shape == shape
    torch.testing.assert_close(cond[:, :77], context.to(cond.device))
    if name == "sdxl":
        torch.testing.assert_close(cond[:, 77, :1280], pooled.to(cond.device))
        assert not cond[:, 77, 1280:].any()


@pytest.mark.parametrize("clip_layer", [None, -1])
def test_differentiable_forward_with_a_learned_token_equals_comfyuis_encoding(family, clip_layer):
    name, models, backend = family
    clip = models["clip"].clone()
    if clip_layer is not None:
        clip.clip_layer(clip_layer)
    text = _pack("nodes.comfy_text").ComfyTextEncoder(clip, backend.family)
    context, pooled = _comfy_conditioning(clip, "a painting of a person under the stars")
    learned = {"<adv0>": text.token_embedding("person").requires_grad_(True)}
    assert learned["<adv0>"].shape == (1, sum(text.token_dims)) == (1, EXPECTED[name][1])
    got = text.encode(["a painting of a <adv0> under the stars"], learned)
    torch.testing.assert_close(got[:, :77], context.to(got.device), rtol=1e-4, atol=1e-4)
    if name == "sdxl":
        torch.testing.assert_close(got[:, 77, :1280], pooled.to(got.device), rtol=1e-4, atol=1e-4)
    got.square().sum().backward()
    grad = learned["<adv0>"].grad
    for start, size in zip((0, *text.token_dims[:-1]), text.token_dims):  # every tower's slice gets a gradient
        assert grad[:, start:start + size].abs().sum() > 0


def _comfy_eps(models, x_t, t, context, pooled, alphas_cumprod):
    """eps through ComfyUI's own sampling path: convert_cond -> encode_model_conds(extra_conds) -> apply_model."""
    import comfy.sampler_helpers
    import comfy.samplers

    model = models["model"].model
    conds = comfy.sampler_helpers.convert_cond([[context, {"pooled_output": pooled}]])
    conds = comfy.samplers.encode_model_conds(model.extra_conds, conds, x_t, x_t.device, "positive")
    model_conds = {k: v.cond for k, v in conds[0]["model_conds"].items()}
    alpha = alphas_cumprod[t].float().view(-1, 1, 1, 1)
    sigma = ((1 - alpha) / alpha).sqrt()
    with torch.no_grad():
        denoised = model.apply_model(x_t / alpha.sqrt(), sigma.flatten(), **model_conds)
    return (x_t / alpha.sqrt() - denoised) / sigma


def test_predict_noise_matches_comfyuis_sampling_path_with_its_extra_conds(family):
    name, models, backend = family
    x_t = torch.randn(backend.latent_shape(1, 64), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([600])
    context, pooled = _comfy_conditioning(models["clip"], "a cat")
    eps = backend.predict_noise(x_t, t, backend.encode_text(["a cat"]))
    torch.testing.assert_close(eps, _comfy_eps(models, x_t, t, context, pooled, backend.alphas_cumprod),
                               rtol=1e-3, atol=1e-3)


def _eps_to_v_hook(alphas_cumprod):
    """A forward hook that makes the UNet answer in v for the eps it computes (the same model, predicting v)."""
    from recare_core.training.parameterisation import v_from_eps

    def hook(module, args, kwargs, output):
        return v_from_eps(output.float(), args[0].float(), args[1].round().long(), alphas_cumprod).to(output.dtype)

    return hook


def _v_model(models):
    """The MODEL switched to v-prediction with core's ModelSamplingDiscrete node."""
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    return ModelSamplingDiscrete().patch(models["model"], "v_prediction", False)[0]


def test_v_prediction_model_gives_the_eps_models_predictions_targets_and_training(family):
    """The same network answering in v (and its MODEL switched to v with ModelSamplingDiscrete) must give the
    eps model's predictions, erasure targets and trained increments: the core works in eps only."""
    import dataclasses

    from recare_core.methods.recare import ReCAREConfig, run_recare
    from recare_core.training.guidance import normalized_negative_guidance

    name, models, backend = family
    # Stage 1 (one erase step) and stage 2 (one robust step); textual inversion goes through the text encoder
    # only, which does not depend on the parameterisation (tested above), so it is left out to save time.
    config = ReCAREConfig(n_rounds=1, erase_steps=1, ti_steps=0, robust_steps=1, ddim_steps=4, image_size=64,
                          num_adv_concepts=0, initializer_token="person", erase_lr=1e-3, robust_lr=1e-3, seed=3)
    images = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    x_t = torch.randn(backend.latent_shape(2, 64), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([300, 300])
    cond = backend.encode_text(["", "a cat"])
    context = _pack("nodes.training_context")
    encoded: dict[str, torch.Tensor] = {}

    def encode_once(b):
        """Both runs share ComfyUI's encodings of the fixed prompts (the text side is the same model)."""
        def encode(prompts, learned_tokens=None):
            missing = [p for p in prompts if p not in encoded]
            if missing:
                encoded.update(zip(missing, b.text.encode(missing).split(1)))
            return torch.cat([encoded[p] for p in prompts])
        b.encode_text = encode

    def predictions_and_training(b):
        encode_once(b)
        try:
            with context.training_mode():
                e_u, e_c = b.predict_noise(x_t, t, cond).chunk(2)
                target = normalized_negative_guidance(e_c, e_u, 2.0)
                result = run_recare(b, images, ["A person"], ["A photo of person"], "nudity",
                                    dataclasses.replace(config))
        finally:
            del b.encode_text  # back to the backend's own method (the fixture is shared)
        return e_c, target, result

    eps_pred, eps_target, eps_result = predictions_and_training(backend)
    v_model = _v_model(models)
    v_backend = _pack("nodes.comfy_backend").ComfyBackend(v_model, models["clip"], models["vae"])
    assert v_backend.prediction == "v"
    handle = backend.denoiser().register_forward_hook(_eps_to_v_hook(backend.alphas_cumprod), with_kwargs=True)
    try:
        v_backend.load()
        # ComfyUI itself reads the hooked network's output as v and arrives at the same eps.
        context_c, pooled_c = _comfy_conditioning(models["clip"], "a cat")
        base = v_model.model
        unpatched, base.model_sampling = base.model_sampling, v_model.get_model_object("model_sampling")
        try:  # what ModelPatcher.patch_model does with the node's object patch while ComfyUI samples
            comfy_eps = _comfy_eps({"model": v_model}, x_t[1:], t[1:], context_c, pooled_c, v_backend.alphas_cumprod)
        finally:
            base.model_sampling = unpatched
        v_pred, v_target, v_result = predictions_and_training(v_backend)
    finally:
        handle.remove()
    torch.testing.assert_close(v_pred, eps_pred, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(comfy_eps, eps_pred, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(v_target, eps_target, rtol=1e-4, atol=1e-4)
    # Training: every loss of every stage the same; the trained increments point the same way (AdamW's first
    # steps are sign-like, so a gradient within rounding of zero may flip an element's sign: compare directions).
    assert v_result.losses.keys() == eps_result.losses.keys()
    for stage, values in eps_result.losses.items():
        torch.testing.assert_close(torch.tensor(v_result.losses[stage]), torch.tensor(values), rtol=1e-3, atol=1e-6)
    assert v_result.increments.keys() == eps_result.increments.keys()
    v_flat = torch.cat([inc.full.flatten() for inc in v_result.increments.values()])
    eps_flat = torch.cat([inc.full.flatten() for inc in eps_result.increments.values()])
    assert torch.nn.functional.cosine_similarity(v_flat, eps_flat, dim=0) > 0.99


def test_learned_embedding_file_gives_the_same_conditioning_through_embedding_prompt(family, tmp_path):
    name, models, backend = family
    backend_module = _pack("nodes.comfy_backend")
    generator = torch.Generator().manual_seed(1)
    learned = backend.token_embedding("dog") + 0.01 * torch.randn(1, sum(backend.text.token_dims), generator=generator)
    tensors = backend.text.embedding_tensors(learned)
    if name == "sdxl":
        assert {k: tuple(v.shape) for k, v in tensors.items()} == {"clip_l": (1, 768), "clip_g": (1, 1280)}
    else:
        assert {k: tuple(v.shape) for k, v in tensors.items()} == {"emb_params": (1, 1024)}
    saved = backend_module.save_textual_inversion_embedding(tensors, str(tmp_path), "recare_adv")
    ours = backend.encode_text(["a photo of a <adv>"], {"<adv>": learned})
    clip = models["clip"]
    tokenizers = [getattr(clip.tokenizer, tower) for tower in backend.family.towers]
    previous = [tokenizer.embedding_directory for tokenizer in tokenizers]
    for tokenizer in tokenizers:
        tokenizer.embedding_directory = str(tmp_path)
    try:
        context, pooled = _comfy_conditioning(clip, f"a photo of a embedding:{saved}")
    finally:
        for tokenizer, directory in zip(tokenizers, previous):
            tokenizer.embedding_directory = directory
    torch.testing.assert_close(ours[:, :77], context.to(ours.device), rtol=1e-4, atol=1e-4)
    if name == "sdxl":
        torch.testing.assert_close(ours[:, 77, :1280], pooled.to(ours.device), rtol=1e-4, atol=1e-4)


def test_train_methods_on_the_family_block_layout(family):
    name, models, backend = family
    state = models["model"].model_state_dict()
    layers = {method: backend.trainable_modules(method) for method in ("noxattn", "xattn", "selfattn", "full")}
    assert all(f"{key}.weight" in state for selected in layers.values() for key in selected)
    assert layers["xattn"] and all(".attn2." in key for key in layers["xattn"])
    assert not any(".attn2." in key for key in layers["noxattn"])
    assert set(layers["noxattn"]) | set(layers["xattn"]) == set(layers["full"])
    # Every transformer block's cross-attention (to_q/k/v/out) is selected, in each level that has one.
    blocks = {key.split(".attn2.")[0] for key in layers["xattn"]}
    assert len(layers["xattn"]) == 4 * len(blocks)
    if name == "sdxl":  # SDXL's first level has no transformer; its adm embedding (label_emb) is not cross-attention
        assert not any(key.startswith("diffusion_model.input_blocks.1.") for key in layers["xattn"])
        assert any(key.startswith("diffusion_model.label_emb.") for key in layers["noxattn"])


def test_unsupported_families_get_a_clear_error(recare_pack, family):
    import comfy.supported_models

    families = _pack("nodes.model_families")
    name, models, backend = family
    model = models["model"].clone()
    original = model.model.model_config
    try:
        for config_class in (comfy.supported_models.SD3, comfy.supported_models.Flux):
            model.model.model_config = config_class(dict(config_class.unet_config))
            with pytest.raises(families.UnsupportedModelError, match=r"is (SD3|Flux).*supports SD1\.x.*SD2\.x.*SDXL"):
                families.detect_family(model)
    finally:
        model.model.model_config = original
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    lcm = ModelSamplingDiscrete().patch(models["model"], "lcm", False)[0]
    with pytest.raises(families.UnsupportedModelError, match="ModelSampling"):
        families.prediction_type(lcm)
