"""CareClip on a tiny randomly initialised open_clip model (no downloads)."""

from __future__ import annotations

import pytest
import torch

from recare_core.careset.clip_model import CareClipInputError, ClipWeightsError, decode_bpe_entry
from recare_core.careset.clip_loading import FROM_CONFIG, load_care_clip
from tiny_models import build_tiny_care_clip, save_tiny_care_clip


@pytest.fixture(scope="module")
def clip():
    return build_tiny_care_clip(seed=0)


def _full_context_features(clip, texts):
    with torch.no_grad():
        return torch.nn.functional.normalize(clip.model.encode_text(clip.tokenize(texts)).float(), dim=-1)


def test_short_context_equals_the_77_token_context(clip):
    texts = ["person", "persons", "a photo of a person", "A painting of starry night", "", "!!",
             "ðŁĺĤ", "<end_of_text>", "word " * 75]
    assert clip.supports_short_context
    torch.testing.assert_close(clip.embed_texts(texts), _full_context_features(clip, texts), atol=1e-5, rtol=0)
    long_ids = [clip.token_ids("word " * 80)]  # token ids are cut to the context, as open_clip's tokenizer does
    torch.testing.assert_close(clip.embed_token_ids(long_ids), _full_context_features(clip, ["word " * 80]),
                               atol=1e-5, rtol=0)


def test_texts_longer_than_the_context_are_refused_not_cut(clip):
    with pytest.raises(CareClipInputError, match=r"The text .* is 76 tokens long.*at most 75 tokens \(77 with"):
        clip.embed_texts(["word " * 76])
    with pytest.raises(CareClipInputError, match="reference_word"):
        clip.require_fits("a " * 200, "reference_word")


def test_single_token_vocabulary_entries_use_three_positions(clip):
    entries = clip.vocabulary()[1000:1200]
    ids = [clip.token_ids(entry) for entry in entries]
    single = [e for e, i in zip(entries, ids) if len(i) == 1]
    assert len(single) > 150
    torch.testing.assert_close(clip.embed_texts(single), _full_context_features(clip, single), atol=1e-5, rtol=0)


def test_vocabulary_is_the_clip_bpe_vocabulary_without_end_of_word_markers(clip):
    vocabulary, raw = clip.vocabulary(), clip.raw_vocabulary()
    assert len(vocabulary) == len(raw) == 49408
    person = raw.index("person</w>")
    assert vocabulary[person] == "person" and "</w>" not in "".join(vocabulary)
    assert decode_bpe_entry("cafÃ©") == "café"


def test_image_features_are_normalised_and_handle_any_size(clip):
    images = torch.rand(3, 40, 70, 3)
    features = clip.embed_images(images)
    assert features.shape == (3, clip.embedding_dim)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(3))
    pixels = clip.preprocess_images(images)
    assert pixels.shape == (3, 3, 32, 32)
    # an RGBA batch gives the features of its RGB part
    rgba = torch.cat([images, torch.ones(3, 40, 70, 1)], dim=-1)
    torch.testing.assert_close(clip.embed_images(rgba), features)
    # batching does not change the result
    torch.testing.assert_close(clip.embed_images(images, batch_size=1), features, atol=1e-6, rtol=0)


@pytest.mark.parametrize("images, message", [
    (torch.rand(0, 32, 32, 3), "empty"),
    (torch.rand(32, 32, 3), "shape"),
    (torch.rand(1, 32, 32, 2), "channels"),
    (torch.full((1, 32, 32, 3), float("nan")), "NaN"),
])
def test_bad_images_are_refused_clearly(clip, images, message):
    with pytest.raises(CareClipInputError, match=message):
        clip.embed_images(images)


def test_a_saved_model_loads_offline_with_a_file_identity(tmp_path, clip):
    weights = save_tiny_care_clip(tmp_path / "tiny", seed=0)
    loaded = load_care_clip(FROM_CONFIG, weights)
    assert loaded.identity.startswith("tiny-config-") and "/sha256:" in loaded.identity
    assert len(loaded.identity.split("sha256:")[1]) == 16
    texts = ["person", "a photo of a dog"]
    torch.testing.assert_close(loaded.embed_texts(texts), clip.embed_texts(texts))
    images = torch.rand(2, 32, 32, 3)
    torch.testing.assert_close(loaded.embed_images(images), clip.embed_images(images))
    # the same file always gives the same identity; another seed another one
    assert load_care_clip(FROM_CONFIG, weights).identity == loaded.identity
    other = load_care_clip(FROM_CONFIG, save_tiny_care_clip(tmp_path / "other", seed=1))
    assert other.identity != loaded.identity


def test_missing_file_says_what_to_put_where(tmp_path):
    with pytest.raises(ClipWeightsError, match="models/open_clip") as error:
        load_care_clip("ViT-B-32", tmp_path / "absent.safetensors")
    assert "vit_base_patch32_clip_224.openai" in str(error.value)


def test_mismatched_file_names_the_problem(tmp_path):
    weights = save_tiny_care_clip(tmp_path / "tiny")
    with pytest.raises(ClipWeightsError, match="does not fit architecture 'ViT-B-32'"):
        load_care_clip("ViT-B-32", weights)


def test_config_is_required_for_from_config(tmp_path):
    weights = save_tiny_care_clip(tmp_path / "tiny")
    (weights.parent / "open_clip_config.json").unlink()
    with pytest.raises(ClipWeightsError, match="open_clip_config.json"):
        load_care_clip(FROM_CONFIG, weights)


def test_files_holding_more_than_tensors_are_not_executed(tmp_path):
    weights = save_tiny_care_clip(tmp_path / "tiny")
    pickled = weights.parent / "model.pt"
    torch.save({"state_dict": {}, "callback": print}, pickled)
    with pytest.raises(ClipWeightsError, match="Only plain weight files"):
        load_care_clip(FROM_CONFIG, pickled)
    scripted = weights.parent / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    with pytest.raises(ClipWeightsError, match="TorchScript"):
        load_care_clip(FROM_CONFIG, scripted)


def test_unknown_names_are_refused_without_downloading():
    with pytest.raises(ClipWeightsError, match="neither a weights file nor a pretrained name"):
        load_care_clip("ViT-B-32", "no-such-tag")
    with pytest.raises(ClipWeightsError, match="not an open_clip architecture"):
        load_care_clip("ViT-Nope", "openai")


def test_tiny_models_are_reproducible_per_seed():
    a, b, c = build_tiny_care_clip(3), build_tiny_care_clip(3), build_tiny_care_clip(4)
    torch.testing.assert_close(a.embed_texts(["x y"]), b.embed_texts(["x y"]))
    assert not torch.allclose(a.embed_texts(["x y"]), c.embed_texts(["x y"]))
    assert a.identity == "tiny-clip/random-seed-3"


def test_identity_marks_only_an_unusual_activation(tmp_path):
    plain = save_tiny_care_clip(tmp_path / "tiny")
    assert "+" not in load_care_clip(FROM_CONFIG, plain).identity
    assert "+quickgelu/" in load_care_clip(FROM_CONFIG, plain, quick_gelu=True).identity
    named = save_tiny_care_clip(tmp_path / "openai_tiny")
    renamed = named.with_name("tiny-openai.safetensors")
    named.rename(renamed)
    openai_like = load_care_clip(FROM_CONFIG, renamed)  # 'openai' in the file name turns QuickGELU on
    assert "+quickgelu/" in openai_like.identity
    assert openai_like.model.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    in_openai_folder = save_tiny_care_clip(tmp_path / "vit_base_patch32_clip_224.openai")
    assert "+quickgelu/" in load_care_clip(FROM_CONFIG, in_openai_folder).identity
