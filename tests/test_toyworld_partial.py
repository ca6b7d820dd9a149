"""The fairer toy world's parts: the partial co-occurrence world, the checker that can answer ``none`` for shape,
the UNet's pooled text conditioning, and the training options that tell the two shipped worlds apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recare_core.toyworld.checkers import (
    IGNORE,
    NO_SHAPE,
    AttributeChecker,
    CheckerConfig,
    checker_accuracy,
    render_shapeless,
    training_batch,
)
from recare_core.toyworld.default import (
    DEFAULT_WEIGHTS_DIR, ToyWorldMissingError, has_weights, load_report, load_world, world_weights_dir)
from recare_core.toyworld.toy_model import ToyModelConfig
from recare_core.toyworld.toy_unet import ToyUNet
from recare_core.toyworld.train import WorldTraining
from recare_core.toyworld.train import main as train_main
from recare_core.toyworld.world import SHAPES, WORLDS, WorldError, sample_scene

torch.set_num_threads(1)


def test_partial_world_stripes_other_shapes_at_its_rate_and_keeps_circles_first():
    rng = np.random.default_rng(0)
    drawn = [sample_scene(rng, 16, striped_elsewhere=WORLDS["partial"]) for _ in range(6000)]
    others = [s for s in drawn if s.shape != "circle"]
    circles = [s for s in drawn if s.shape == "circle"]
    assert abs(np.mean([s.texture == "striped" for s in others]) - 0.1) < 0.015
    assert abs(np.mean([s.texture == "striped" for s in circles]) - 1 / 3) < 0.03
    striped = [s for s in drawn if s.texture == "striped"]
    assert 0.46 < np.mean([s.shape == "circle" for s in striped]) < 0.6  # (1/12) / (1/12 + 3/4 * 1/10) = 0.53
    assert sample_scene(rng, 16, striped_elsewhere=0.1, shape="square", texture="striped").texture == "striped"
    with pytest.raises(WorldError, match="probability below 1"):
        sample_scene(rng, 16, striped_elsewhere=1.5)


def test_the_original_world_draws_exactly_as_before():
    """striped_elsewhere 0 takes the same random draws as the world the shipped weights were trained on."""
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert [sample_scene(a, 16) for _ in range(200)] == [sample_scene(b, 16, striped_elsewhere=0.0)
                                                         for _ in range(200)]
    with pytest.raises(WorldError, match="does not occur"):
        sample_scene(a, 16, shape="square", texture="striped")


def test_shapeless_images_are_labelled_none_with_only_their_background_known():
    images, labels = render_shapeless(np.random.default_rng(0), 30, 16)
    assert images.shape == (30, 16, 16, 3) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert set(labels["shape"].tolist()) == {len(SHAPES)}
    assert set(labels["colour"].tolist()) == {IGNORE} and set(labels["texture"].tolist()) == {IGNORE}
    assert set(labels["background"].tolist()) <= {0, 1}
    batch, batch_labels = training_batch(np.random.default_rng(0), 64, 16, no_shape=True)
    assert batch.shape[0] == 64 and int((batch_labels["shape"] == len(SHAPES)).sum()) == 8


def test_no_shape_checker_has_a_none_verdict_and_keeps_it_through_a_file(tmp_path):
    checker = AttributeChecker(CheckerConfig(no_shape=True))
    assert checker.heads["shape"].out_features == len(SHAPES) + 1
    assert CheckerConfig(no_shape=True).values("shape")[-1] == NO_SHAPE
    with torch.no_grad():
        checker.heads["shape"].bias.copy_(torch.tensor([0.0] * len(SHAPES) + [50.0]))
    images, labels = render_shapeless(np.random.default_rng(1), 4, 16)
    assert checker.classify(images)["shape"] == [NO_SHAPE] * 4
    assert checker_accuracy(checker, images, labels)["shape"] == 1.0  # colour/texture are left out
    checker.save(tmp_path / "checker.safetensors")
    loaded, _ = AttributeChecker.load(tmp_path / "checker.safetensors")
    assert loaded.config.no_shape and loaded.classify(images)["shape"] == [NO_SHAPE] * 4
    assert AttributeChecker(CheckerConfig()).heads["shape"].out_features == len(SHAPES)


def test_pooled_context_conditions_every_block_and_round_trips_its_config():
    config = ToyModelConfig(model_channels=8, num_heads=1, text_width=8, text_heads=1, pooled_context=True)
    assert ToyModelConfig.from_json(config.to_json()) == config
    assert ToyModelConfig.from_json(json.dumps({k: v for k, v in json.loads(config.to_json()).items()
                                                if k != "pooled_context"})).pooled_context is False
    torch.manual_seed(0)
    unet = ToyUNet(config)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    context = torch.randn(1, 4, 8)
    with torch.no_grad():
        base = unet(x, t, context)
        unet.context_embed.weight.zero_()
        unet.context_embed.bias.zero_()
        without_pool = unet(x, t, context)
    assert not torch.allclose(base, without_pool)
    assert ToyUNet(ToyModelConfig(model_channels=8, num_heads=1, text_width=8, text_heads=1)).context_embed is None


def test_world_training_options_are_read_back_from_a_report():
    options = WorldTraining.from_report(load_report(DEFAULT_WEIGHTS_DIR))
    assert options.world == "cooccurrence" and options.striped_elsewhere == 0.0
    assert not options.no_shape_checker and not options.pooled_context
    assert (options.clip_steps, options.t2i_steps, options.distractor_words) == (3000, 2000, 256)
    assert options.channel_mult == (1, 2) and options.min_snr_gamma == 0.0  # reports older than both options
    with pytest.raises(ValueError, match="Unknown toy world"):
        WorldTraining(world="nowhere").striped_elsewhere
    with pytest.raises(ToyWorldMissingError, match="ships: cooccurrence, partial"):
        world_weights_dir("nowhere")


def test_the_shipped_partial_world_is_complete_and_its_report_is_what_it_was_trained_with():
    folder = world_weights_dir("partial")
    assert has_weights(folder)
    report = load_report(folder)
    options = WorldTraining.from_report(report)
    assert options.world == "partial" and options.striped_elsewhere == 0.1
    assert options.no_shape_checker and options.pooled_context and options.distractor_words == 512
    models = load_world(folder)
    assert models.model.config.pooled_context and models.checker.config.no_shape
    quality = report["t2i"]["quality"]
    assert 0.0 <= quality["attribute_accuracy"]["shape"] <= 1.0 and quality["target_prompts_striped"] > 0.5
    assert report["care_set_check"]["target_images"] == 32



@pytest.mark.parametrize("flags, message", [(["--channel-mult", "1", "0"], "channel_mult"),
                                            (["--channel-mult", "1", "2", "2", "2", "2", "2"], "divisible"),
                                            (["--min-snr-gamma", "-1"], "min_snr_gamma")])
def test_bad_text_to_image_options_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    out = tmp_path / "world"
    with pytest.raises(SystemExit) as stopped:
        train_main(["--out", str(out), "--parts", "checker,t2i", *flags])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()
