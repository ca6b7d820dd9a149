"""The toy world: scene distribution (the built-in co-occurrence), renderer, captions, checker plumbing,
evaluation bookkeeping and the two training loops (tiny sizes, a few steps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recare_core.careset.clip_loading import FROM_CONFIG, load_care_clip
from recare_core.progress import Interrupted, console_progress
from recare_core.toyworld.toy_model import ToyModelConfig, ToyTextToImage, word_token_ids
from recare_core.toyworld.checkers import AttributeChecker, CheckerConfig, checker_accuracy, degrade
from recare_core.toyworld.evaluate import (
    CaseResults,
    PromptCase,
    adversarial_cases,
    care_cases,
    target_cases,
    utility_cases,
)
from recare_core.toyworld.render import render_batch, render_scene
from recare_core.toyworld.train_clip import ClipTrainConfig, save_clip, train_clip
from recare_core.toyworld.train_t2i import (
    TextToImageTrainConfig,
    learning_rate,
    timestep_loss_weights,
    train_text_to_image,
)
from recare_core.toyworld.world import (
    ATTRIBUTES,
    Scene,
    WorldError,
    describe,
    random_caption,
    sample_scene,
    vocabulary_words,
)

torch.set_num_threads(1)


def scenes(count: int, cooccurrence: bool, seed: int = 0) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, 16, cooccurrence=cooccurrence) for _ in range(count)]


def test_striped_only_on_circles_and_circles_also_without_stripes():
    drawn = scenes(3000, cooccurrence=True)
    striped_shapes = {s.shape for s in drawn if s.texture == "striped"}
    circle_textures = {s.texture for s in drawn if s.shape == "circle"}
    assert striped_shapes == {"circle"}
    assert circle_textures == {"plain", "striped", "dotted"}
    assert 0.05 < np.mean([s.texture == "striped" for s in drawn]) < 0.12  # 1/4 * 1/3


def test_full_world_has_every_combination():
    drawn = scenes(3000, cooccurrence=False)
    assert {(s.shape, s.texture) for s in drawn} == {(a, b) for a in ATTRIBUTES["shape"] for b in ATTRIBUTES["texture"]}


def test_impossible_or_unknown_scenes_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(WorldError, match="does not occur"):
        sample_scene(rng, 16, shape="square", texture="striped")
    with pytest.raises(WorldError, match="Unknown attribute"):
        sample_scene(rng, 16, size="big")
    with pytest.raises(WorldError, match="Unknown shape 'star'"):
        Scene("star", "red", "plain", "dark", 8, 8, 5, 0, 0, 0.0)
    assert sample_scene(rng, 16, cooccurrence=False, shape="square", texture="striped").texture == "striped"


def test_render_is_deterministic_and_draws_what_the_scene_says():
    scene = Scene("square", "red", "striped", "dark", 8.0, 8.0, 6.0, 0, 0, 0.0)
    image = render_scene(scene, 16)
    assert image.shape == (16, 16, 3) and image.dtype == np.float32
    assert np.array_equal(image, render_scene(scene, 16))
    assert image.min() >= 0 and image.max() <= 1
    np.testing.assert_allclose(image[0, 0], 0.12, atol=1e-6)  # dark background corner
    centre_column = image[4:12, 8, 0]  # inside the square: bands of 2 rows, full red and dark red
    assert np.allclose(centre_column[::4], centre_column[0]) and not np.isclose(centre_column[0], centre_column[2])
    plain = render_scene(Scene("square", "red", "plain", "dark", 8.0, 8.0, 6.0, 0, 0, 0.0), 16)
    assert np.allclose(plain[6:10, 6:10], np.array([0.90, 0.15, 0.15], dtype=np.float32))
    circle = render_scene(Scene("circle", "red", "plain", "light", 8.0, 8.0, 6.0, 0, 0, 0.0), 16)
    covered = (np.abs(circle - 0.85).max(axis=-1) > 0.01).sum()
    assert abs(covered - np.pi * 36) < 16
    with pytest.raises(ValueError, match="No scenes"):
        render_batch([], 16)


def test_captions_name_what_they_keep_and_fit_the_context():
    scene = Scene("circle", "red", "striped", "dark", 8.0, 8.0, 6.0, 0, 0, 0.0)
    assert describe(scene) == "a red striped circle on a dark background"
    assert describe(scene, colour=False, texture=False, background=False) == "a circle"
    assert describe(scene, shape=False, texture=False, background=False, prefix="a photo of ") == \
        "a photo of a red shape"
    rng = np.random.default_rng(1)
    vocabulary = set(vocabulary_words())
    context = ToyModelConfig().context_length
    for s in scenes(200, cooccurrence=True):
        caption = random_caption(s, rng)
        assert set(caption.split()) <= vocabulary
        assert len(word_token_ids(caption)) + 2 <= context
    for word in vocabulary:  # every caption word is one CLIP BPE token
        assert len(word_token_ids(word)) == 1


def test_prompt_sets_ask_for_the_right_things():
    assert all(c.expected["texture"] == "striped" and "striped" in c.prompt for c in target_cases())
    assert all("circle" in c.prompt and "striped" not in c.prompt for c in care_cases())
    assert all("circle" not in c.prompt and "striped" not in c.prompt and len(c.expected) == 4
               for c in utility_cases())
    assert all("tok" in c.prompt for c in adversarial_cases("tok"))


def test_case_results_count_per_attribute():
    cases = [PromptCase("a red circle", {"shape": "circle", "colour": "red"}),
             PromptCase("a blue square", {"shape": "square", "colour": "blue"})]
    verdicts = {"shape": ["circle", "square", "square", "square"], "colour": ["red", "red", "blue", "blue"],
                "texture": ["plain"] * 4, "background": ["dark"] * 4}
    results = CaseResults(cases, torch.zeros(4, 16, 16, 3), verdicts, images_per_prompt=2)
    accuracy = results.attribute_accuracy()
    assert accuracy["shape"] == 0.75 and accuracy["colour"] == 1.0
    assert accuracy["mean"] == 0.875 and accuracy["all"] == 0.75
    assert results.share_showing("shape", "circle") == 0.25


def test_checker_save_load_and_accuracy_bookkeeping(tmp_path):
    checker = AttributeChecker(CheckerConfig(image_size=16, width=8))
    images = render_batch(scenes(6, cooccurrence=False), 16)
    path = tmp_path / "checker.safetensors"
    checker.save(path, {"note": "untrained"})
    loaded, report = AttributeChecker.load(path)
    assert report == {"note": "untrained"}
    for name, logits in checker(images).items():
        torch.testing.assert_close(logits, loaded(images)[name])
    verdicts = loaded.classify(images)
    assert all(len(v) == 6 and set(v) <= set(ATTRIBUTES[k]) for k, v in verdicts.items())
    labels = {name: torch.tensor([ATTRIBUTES[name].index(v) for v in verdicts[name]]) for name in ATTRIBUTES}
    assert checker_accuracy(loaded, images, labels)["all"] == 1.0
    degraded = degrade(images, torch.Generator().manual_seed(0))
    assert degraded.shape == images.shape and 0 <= degraded.min() and degraded.max() <= 1
    with pytest.raises(ValueError, match="empty"):
        loaded.classify(images[:0])
    with pytest.raises(ValueError, match="not an attribute-checker file"):
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        AttributeChecker.load(tmp_path / "other.safetensors")


TINY_T2I = ToyModelConfig(image_size=8, model_channels=16, text_width=16, num_heads=1, text_heads=2)


def test_text_to_image_training_is_seeded_and_lowers_the_loss():
    config = TextToImageTrainConfig(model=TINY_T2I, steps=12, batch_size=8, lr=2e-3, warmup_steps=3, log_every=4,
                                    seed=3)
    calls = []
    model_a, report = train_text_to_image(config, progress=lambda s, t, m: calls.append(s))
    model_b, _ = train_text_to_image(config)
    assert calls == list(range(1, 13))
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    curve = report["loss_curve"]["mean_loss"]
    assert len(curve) == 3 and curve[-1] < curve[0]
    assert learning_rate(0, config) == pytest.approx(config.lr / 3)
    assert learning_rate(12, config) == pytest.approx(config.lr * config.min_lr_ratio)
    assert learning_rate(11, config) > learning_rate(12, config)
    with pytest.raises(ValueError, match="steps"):
        TextToImageTrainConfig(steps=0).validate()


def test_min_snr_weights_cap_the_clean_timesteps_and_leave_the_noisy_ones():
    alphas = ToyTextToImage(TINY_T2I).alphas_cumprod().float()
    plain = timestep_loss_weights(alphas, 0.0)
    assert torch.equal(plain, torch.ones_like(alphas))
    weights = timestep_loss_weights(alphas, 5.0)
    snr = alphas / (1 - alphas)
    assert weights[0] == pytest.approx(5.0 / float(snr[0]))  # nearly clean: SNR in the thousands, weight ~0.005
    assert weights[0] < 0.01 and weights[-1] == pytest.approx(1.0)  # the noisiest keep their whole weight
    assert torch.all(weights[1:] >= weights[:-1])  # more noise never weighs less
    config = TextToImageTrainConfig(model=TINY_T2I, steps=4, batch_size=4, warmup_steps=1, log_every=2,
                                    min_snr_gamma=5.0)
    _, report = train_text_to_image(config)
    assert report["config"]["min_snr_gamma"] == 5.0 and all(math.isfinite(v) for v in report["loss_curve"]["mean_loss"])
    with pytest.raises(ValueError, match="min_snr_gamma"):
        TextToImageTrainConfig(min_snr_gamma=-1.0).validate()


def test_text_to_image_training_stops_on_request():
    config = TextToImageTrainConfig(model=TINY_T2I, steps=10, batch_size=2)
    with pytest.raises(Interrupted, match="step 1"):
        train_text_to_image(config, should_stop=lambda: True)


def test_clip_training_roundtrips_through_the_pack_loader(tmp_path):
    model = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16,
                                             "patch_size": 8},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
    config = ClipTrainConfig(model=model, steps=4, batch_size=8, warmup_steps=2, log_every=2)
    clip, report = train_clip(config)
    assert len(report["loss_curve"]["mean_loss"]) == 2
    path = save_clip(clip, tmp_path / "clip", model, half=False)
    loaded = load_care_clip(FROM_CONFIG, path)
    images = render_batch(scenes(3, cooccurrence=True), 16)
    torch.testing.assert_close(loaded.embed_images(images), clip.embed_images(images))
    torch.testing.assert_close(loaded.embed_texts(["a striped circle"]), clip.embed_texts(["a striped circle"]))
    with pytest.raises(ValueError, match="batch_size"):
        ClipTrainConfig(batch_size=1).validate()


def test_console_progress_prints_every_nth_step_and_the_last(capsys):
    report = console_progress(every=3)
    for step in range(1, 8):
        report(step, 7, f"step {step}/7")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("] ")[1] for line in lines] == ["step 3/7", "step 6/7", "step 7/7"]
    assert all(line.startswith("[") and "s] " in line for line in lines)
