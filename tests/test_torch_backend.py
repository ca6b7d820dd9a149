"""The tiny plain-torch model and its backend: text layout, learned tokens, layer selection, persistence."""

import pytest
import torch

from recare_core.training.backend import DiffusionBackend
from recare_core.erasure.increments import WeightIncrement
from recare_core.toyworld.toy_model import END_TOKEN, START_TOKEN, ToyModelConfig, ToyTextToImage, word_token_ids
from recare_core.toyworld.torch_backend import TorchBackend, apply_increments


@pytest.fixture(scope="module")
def backend():
    torch.manual_seed(0)
    return TorchBackend(ToyTextToImage(seed=0))


def test_backend_satisfies_the_protocol(backend):
    assert isinstance(backend, DiffusionBackend)
    assert backend.alphas_cumprod.dtype == torch.float64 and backend.alphas_cumprod.shape == (1000,)
    assert torch.all(backend.alphas_cumprod[1:] < backend.alphas_cumprod[:-1])
    assert backend.latent_shape(2, 16) == (2, 3, 16, 16)
    assert not any(p.requires_grad for p in backend.model.parameters())


def test_token_layout_start_end_padding_and_truncation(backend):
    ids = backend.model.token_ids(["a photo of a person", ""])
    words = word_token_ids("a photo of a person")
    assert ids[0, : len(words) + 2].tolist() == [START_TOKEN, *words, END_TOKEN]
    assert ids[1].tolist() == [START_TOKEN] + [END_TOKEN] * 15
    long = backend.model.token_ids([" ".join(["tree"] * 40)])
    assert long.shape == (1, 16) and long[0, -1].item() == END_TOKEN


def test_learned_token_equal_to_a_word_reproduces_that_word(backend):
    person = backend.token_embedding("person")
    assert person.shape == (1, 32)
    direct = backend.encode_text(["a photo of a person"])
    learned = backend.encode_text(["a photo of a my_token"], {"my_token": person})
    torch.testing.assert_close(learned, direct)
    # prompts without the placeholder are unaffected, and a word merely containing it is not replaced
    plain = backend.encode_text(["a tree", "a my_tokens tree"], {"my_token": torch.zeros(1, 32)})
    torch.testing.assert_close(plain, backend.encode_text(["a tree", "a my_tokens tree"]))


def test_learned_token_is_differentiable(backend):
    embedding = torch.zeros(1, 32, requires_grad=True)
    out = backend.encode_text(["a painting in the style of tok", "tok"], {"tok": embedding})
    out.square().sum().backward()
    assert embedding.grad is not None and embedding.grad.abs().sum() > 0


def test_learned_token_beyond_the_context_is_refused(backend):
    with pytest.raises(ValueError, match="too long"):
        backend.encode_text([" ".join(["tree"] * 20) + " tok"], {"tok": torch.zeros(1, 32)})


def test_word_that_tokenises_to_nothing_has_no_rows(backend):
    assert backend.token_embedding("\ufeff").shape == (0, 32)


def test_images_are_their_own_latents(backend):
    images = torch.rand(2, 16, 16, 3)
    latents = backend.encode_images(images)
    assert latents.shape == (2, 3, 16, 16)
    torch.testing.assert_close(latents, images.permute(0, 3, 1, 2) * 2 - 1)
    torch.testing.assert_close(backend.model.latents_to_images(latents), images)


def test_train_methods_select_by_attention_name(backend):
    noxattn = backend.trainable_modules("noxattn")
    xattn = backend.trainable_modules("xattn")
    selfattn = backend.trainable_modules("selfattn")
    full = backend.trainable_modules("full")
    assert all(".attn2." not in name for name in noxattn)
    assert xattn and all(".attn2." in name for name in xattn)
    assert selfattn and all(".attn1." in name for name in selfattn)
    assert set(noxattn) | set(xattn) == set(full)
    assert "unet.conv_in" in noxattn and "unet.time_embed.0" in noxattn
    state = backend.model.state_dict()
    assert all(f"{name}.weight" in state for name in full)


def test_apply_increments_and_save_load_roundtrip(tmp_path):
    config = ToyModelConfig(image_size=8, model_channels=16, text_width=16, context_length=8)
    model = ToyTextToImage(config, seed=3)
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([10])
    cond = model.encode_text(["a cat"])
    before = model.unet(x, t, cond)
    path = tmp_path / "toy.safetensors"
    model.save(path)
    loaded = ToyTextToImage.load(path)
    assert loaded.config == config
    assert torch.equal(loaded.unet(x, t, loaded.encode_text(["a cat"])), before)
    delta = torch.randn_like(model.unet.conv_out.weight) * 0.1
    apply_increments(loaded, {"unet.conv_out.weight": WeightIncrement(full=delta)})
    torch.testing.assert_close(loaded.unet.conv_out.weight, model.unet.conv_out.weight + delta)
    with pytest.raises(KeyError, match="name no parameter"):
        apply_increments(loaded, {"unet.nope.weight": WeightIncrement(full=delta)})


def test_config_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="divisible"):
        ToyModelConfig(image_size=15)
