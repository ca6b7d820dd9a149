"""ReCARE unlearning on the tiny plain-torch model: direction of the updates, textual inversion, bookkeeping,
and every error path (NaN loss, interruption, out of memory, bad input). Tiny sizes: seconds per test on CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from recare_core.training.guidance import normalized_compositional_guidance
from recare_core.methods.stage_erase import balanced_draw, robust_erase_stage, training_point
from recare_core.methods.textual_inversion import encode_images_once, prepare_images, round_image_indices, textual_inversion
from recare_core.toyworld.torch_backend import TorchBackend
from recare_core.training.run import TrainingRun
from recare_core.methods.recare import (
    EmptyCareSetError,
    NonFiniteLossError,
    ReCAREConfig,
    TrainingOutOfMemoryError,
    run_recare,
)
from recare_core.progress import Interrupted
from recare_core.training.weight_update import WeightUpdate

from tiny_models import assert_untouched, conditioned_model, probe, snapshot, target_images

torch.set_num_threads(1)

ANCHORS = ["a person", "a tree", "a dog"]
RETAINS = ["a photo of person", "a photo of tree", "a photo of dog"]
TINY = ReCAREConfig(n_rounds=2, erase_steps=2, ti_steps=3, robust_steps=3, ddim_steps=10, fixed_k=3, image_size=8,
                    seed=0)


# -- direction ---------------------------------------------------------------------------------------------------

def _stage_two(retain_weight: float):
    backend = TorchBackend(conditioned_model())
    config = ReCAREConfig(n_rounds=0, robust_steps=20, robust_lr=3e-4, ddim_steps=10, fixed_k=4, image_size=8,
                          retain_weight=retain_weight)
    run = TrainingRun(backend, total_steps=config.robust_steps)
    uncond, erase, anchor, retain = backend.encode_text(["", "nudity", "a person", "a photo of person"]).split(1)
    generator = torch.Generator().manual_seed(99)
    points = [training_point(run, erase, uncond, config, generator) for _ in range(4)]
    x, t = torch.cat([p[0] for p in points]), torch.cat([p[1] for p in points])

    def predictions():
        with torch.no_grad():
            return [backend.predict_noise(x, t, c.expand(4, -1, -1)) for c in (uncond, erase, anchor, retain)]

    e_uncond, e_erase, e_anchor, e_retain = predictions()
    target = normalized_compositional_guidance([e_erase, e_anchor], e_uncond, [-2.0, 2.0])
    update = WeightUpdate(backend.trainable_modules("noxattn"), "full")
    robust_erase_stage(run, update, ["nudity"], ["a person"], ["a photo of person"], config, learned_tokens={},
                       seed=0)
    _, s_erase, _, s_retain = predictions()
    with update.enabled(False):
        assert all(torch.equal(a, b) for a, b in zip(predictions(), [e_uncond, e_erase, e_anchor, e_retain]))
    update.detach()
    return {
        "teacher_to_target": F.mse_loss(e_erase, target).item(),
        "student_to_target": F.mse_loss(s_erase, target).item(),
        "erase_moved": F.mse_loss(s_erase, e_erase).item(),
        "retain_moved": F.mse_loss(s_retain, e_retain).item(),
    }


def test_stage_two_moves_erase_toward_target_while_retain_stays():
    with_retain = _stage_two(retain_weight=1.0)
    without_retain = _stage_two(retain_weight=0.0)
    # the erase prompt's prediction left the teacher's and came much closer to the compositional target
    assert with_retain["student_to_target"] < 0.5 * with_retain["teacher_to_target"]
    assert with_retain["erase_moved"] > 0.1 * with_retain["teacher_to_target"]
    # the retain prompt stayed near the teacher, thanks to the retain loss
    assert with_retain["retain_moved"] < 0.5 * with_retain["erase_moved"]
    assert with_retain["retain_moved"] < 0.3 * without_retain["retain_moved"]


def test_textual_inversion_lowers_its_loss():
    backend = TorchBackend(conditioned_model())
    config = ReCAREConfig(ti_steps=40, ti_lr=2e-2, image_size=8)
    run = TrainingRun(backend, total_steps=config.ti_steps)
    latents, flipped = encode_images_once(run, prepare_images(target_images(), 8), flip=True)
    generator = torch.Generator().manual_seed(5)
    x0 = latents.repeat(8, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, 999, (x0.shape[0],), generator=generator)
    a = backend.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise

    def held_out_loss(embedding: torch.Tensor) -> float:
        with torch.no_grad():
            cond = backend.encode_text(["a photo of a tok"], {"tok": embedding}).expand(x0.shape[0], -1, -1)
            return F.mse_loss(backend.predict_noise(x_t, t, cond), noise).item()

    initial = backend.token_embedding("person")
    learned = textual_inversion(run, latents, "tok", initial, config, name="ti", seed=0, flipped_latents=flipped)
    assert learned.shape == (1, 16) and not torch.equal(learned, initial)
    assert held_out_loss(learned) < held_out_loss(initial) - 0.005
    assert run.records["ti"].evaluations == {"sampling": 0, "teacher": 0, "student": 40}


# -- end to end --------------------------------------------------------------------------------------------------

class CountingBackend(TorchBackend):
    """The real tiny backend, counting how often text and images are encoded."""

    def __init__(self, model):
        super().__init__(model)
        self.text_calls = 0
        self.image_calls = 0

    def encode_text(self, prompts, learned_tokens=None):
        self.text_calls += 1
        return super().encode_text(prompts, learned_tokens)

    def encode_images(self, images):
        self.image_calls += 1
        return super().encode_images(images)


def test_run_recare_end_to_end_full_update():
    backend = CountingBackend(conditioned_model())
    before = snapshot(backend.model)
    x, t, cond, expected = probe(backend.model)
    steps = []
    result = run_recare(backend, target_images(), ANCHORS, RETAINS, "nudity", TINY,
                        progress=lambda step, total, message: steps.append((step, total)))
    # increments for every selected layer, weight and bias, shaped like the parameters
    state = backend.model.state_dict()
    layers = backend.trainable_modules("noxattn")
    expected_keys = {f"{n}.weight" for n in layers} | {f"{n}.bias" for n, m in layers.items() if m.bias is not None}
    assert set(result.increments) == expected_keys
    assert all(inc.full.shape == state[key].shape for key, inc in result.increments.items())
    assert any(inc.full.abs().sum() > 0 for inc in result.increments.values())
    # learned tokens, erase set, losses, progress
    assert list(result.learned_tokens) == ["recare_adv_1", "recare_adv_2"]
    assert all(tok.shape == (1, 16) and tok.device.type == "cpu" for tok in result.learned_tokens.values())
    assert result.erase_concepts == ["nudity", "recare_adv_1", "recare_adv_2"]
    assert set(result.losses) == {"stage1_round0_erase", "stage1_round0_ti", "stage1_round1_erase",
                                  "stage1_round1_ti", "stage2_total", "stage2_erase", "stage2_retain"}
    assert len(result.losses["stage1_round1_ti"]) == 3 and len(result.losses["stage2_total"]) == 3
    assert steps == [(i, TINY.total_steps) for i in range(1, TINY.total_steps + 1)]
    # sample-evaluations per step: k = 3 DDIM steps with CFG, batched teacher, batched student
    per_step = {name: record.evaluations_per_step() for name, record in result.stages.items()}
    assert per_step["stage1_round0_erase"] == {"sampling": 6, "teacher": 2, "student": 1}
    assert per_step["stage2"] == {"sampling": 6, "teacher": 6, "student": 2}  # 2k + 8 (reference: 2k + 18)
    assert all(seconds > 0 for seconds in result.timings.values())
    # images encoded once up front (+ flipped copies), prompts once per run; TI re-encodes its one prompt
    assert backend.image_calls == 2
    assert backend.text_calls == TINY.n_rounds * TINY.ti_steps + 3
    assert_untouched(backend.model, before, x, t, cond, expected)


def test_run_recare_lora_update_and_guidance_one_sampling():
    backend = TorchBackend(conditioned_model())
    config = dataclasses.replace(TINY, update="lora", lora_rank=2, sampling_cfg=1.0, train_method="xattn")
    result = run_recare(backend, target_images(), ANCHORS, RETAINS, "nudity", config)
    layers = backend.trainable_modules("xattn")
    assert set(result.increments) == {f"{n}.weight" for n in layers}
    assert all(inc.is_lora and inc.rank == 2 for inc in result.increments.values())
    assert result.stages["stage2"].evaluations_per_step()["sampling"] == 3  # guidance 1: no unconditional half


def _run_counting_a_layer(config: ReCAREConfig):
    backend = TorchBackend(conditioned_model())
    calls = []
    backend.model.unet.down_blocks[0].resnets[0].conv1.register_forward_hook(lambda *args: calls.append(1))
    result = run_recare(backend, target_images(), ANCHORS, RETAINS, "nudity", config)
    return result, len(calls)


def test_gradient_checkpointing_recomputes_and_changes_nothing_else():
    config = dataclasses.replace(TINY, n_rounds=0)
    plain, plain_calls = _run_counting_a_layer(config)
    checkpointed, checkpointed_calls = _run_counting_a_layer(dataclasses.replace(config, gradient_checkpointing=True))
    assert checkpointed_calls == plain_calls + config.robust_steps  # one recomputation per student backward
    assert plain.losses["stage2_total"] == pytest.approx(checkpointed.losses["stage2_total"], rel=1e-5)
    for key, increment in plain.increments.items():
        torch.testing.assert_close(increment.full, checkpointed.increments[key].full)


def test_half_precision_backend_trains_with_loss_scaling():
    backend = TorchBackend(conditioned_model(), dtype=torch.float16)
    assert TrainingRun(backend, total_steps=1).scaler is not None
    result = run_recare(backend, target_images(), ANCHORS, RETAINS, "nudity", TINY)
    assert all(value == value and abs(value) < 1e3 for curve in result.losses.values() for value in curve)
    assert all(inc.full.dtype == torch.float32 for inc in result.increments.values())
    assert sum(inc.full.abs().sum() for inc in result.increments.values()) > 0


def test_balanced_draw_and_round_slices():
    rng = __import__("numpy").random.default_rng(0)
    drawn = balanced_draw(["a", "b", "c"], 200, rng)
    counts = {item: drawn.count(item) for item in "abc"}
    assert len(drawn) == 200 and all(66 <= c <= 67 for c in counts.values())
    assert len(set(drawn[-2:])) == 2  # the remainder is drawn without replacement
    assert balanced_draw(["a", "b", "c"], 2, rng) != [] and len(balanced_draw(["a"], 5, rng)) == 5
    assert round_image_indices(10, 0, 2) == [0, 1, 2, 3, 4]
    assert round_image_indices(10, 1, 2) == [5, 6, 7, 8, 9]
    assert round_image_indices(3, 1, 2) == [1]


# -- errors ------------------------------------------------------------------------------------------------------

def test_diverging_loss_names_stage_step_and_learning_rate():
    backend = TorchBackend(conditioned_model())
    before = snapshot(backend.model)
    x, t, cond, expected = probe(backend.model)
    config = dataclasses.replace(TINY, erase_steps=5, erase_lr=1e30)
    with pytest.raises(NonFiniteLossError, match=r"step \d of stage 1, round 1, erasure.*erase_lr") as info:
        run_recare(backend, target_images(), ANCHORS, RETAINS, "nudity", config)
    assert 2 <= info.value.step <= 5
    assert_untouched(backend.model, before, x, t, cond, expected)


def test_interrupt_stops_cleanly_and_leaves_the_model_unchanged():
    backend = TorchBackend(conditioned_model())
    backend.model.unet.conv_in.weight.requires_grad_(True)  # a flag that must be restored, not clobbered
    before = snapshot(backend.model)
    x, t, cond, expected = probe(backend.model)
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 4

    with pytest.raises(Interrupted):
        run_recare(backend, target_images(), ANCHORS, RETAINS, "nudity", TINY, should_stop=should_stop)
    assert len(calls) == 4
    assert backend.model.unet.conv_in.weight.requires_grad
    backend.model.unet.conv_in.weight.requires_grad_(False)
    assert_untouched(backend.model, before, x, t, cond, expected)


class OutOfMemoryBackend(TorchBackend):
    """The real tiny backend whose accelerator 'fills up' at the n-th prediction (fault injection: a CPU run
    cannot exhaust GPU memory)."""

    def __init__(self, model, fail_at: int):
        super().__init__(model)
        self.calls, self.fail_at = 0, fail_at

    def predict_noise(self, x_t, timesteps, cond):
        self.calls += 1
        if self.calls == self.fail_at:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().predict_noise(x_t, timesteps, cond)


def test_out_of_memory_names_the_options_that_reduce_memory():
    backend = OutOfMemoryBackend(conditioned_model(), fail_at=5)
    before = snapshot(backend.model)
    x, t, cond, expected = probe(backend.model)
    with pytest.raises(TrainingOutOfMemoryError) as info:
        run_recare(backend, target_images(), ANCHORS, RETAINS, "nudity", TINY)
    message = str(info.value)
    for option in ("lora", "lora_rank", "gradient_checkpointing", "image_size", "stage 1, round 1, erasure"):
        assert option in message
    assert_untouched(backend.model, before, x, t, cond, expected)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"care_set_anchor_prompts": []}, EmptyCareSetError, "CARE-set is empty"),
    ({"care_set_retain_prompts": ["  "]}, EmptyCareSetError, "CARE-set is empty"),
    ({"target_images": target_images(1)}, ValueError, "too few for 2 rounds"),
    ({"target_images": torch.zeros(0, 8, 8, 3)}, ValueError, "No target images"),
    ({"erase_concept": "\ufeff"}, ValueError, "tokenises to nothing"),
    ({"erase_concept": "   "}, ValueError, "No concept to erase"),
    ({"config": dataclasses.replace(TINY, initializer_token="\x00")}, ValueError, "initializer token"),
    ({"config": dataclasses.replace(TINY, robust_steps=-1)}, ValueError, "robust_steps"),
    ({"config": dataclasses.replace(TINY, train_method="attn3")}, ValueError, "Unknown train method"),
    ({"config": dataclasses.replace(TINY, update="dense")}, ValueError, "update must be"),
])
def test_bad_input_is_refused_with_a_plain_message(kwargs, error, match):
    arguments = {"backend": TorchBackend(conditioned_model()), "target_images": target_images(),
                 "care_set_anchor_prompts": ANCHORS, "care_set_retain_prompts": RETAINS,
                 "erase_concept": "nudity", "config": TINY}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        run_recare(**arguments)
    assert all(not m._forward_hooks for m in arguments["backend"].model.modules())


def test_presets():
    paper, quick = ReCAREConfig.preset("paper"), ReCAREConfig.preset("quick")
    assert (paper.n_rounds, paper.erase_steps, paper.erase_lr, paper.ti_steps, paper.ti_lr) == (
        2, 200, 5e-6, 3000, 5e-3)
    assert (paper.robust_steps, paper.robust_lr, paper.negative_guidance, paper.compositional_guidance_scale,
            paper.num_adv_concepts, paper.ddim_steps, paper.sampling_cfg, paper.train_method) == (
        200, 2e-5, 2.0, 2.0, 2, 50, 3.0, "noxattn")
    assert paper.total_steps == 2 * (200 + 3000) + 200
    assert quick.total_steps < paper.total_steps
    assert all(getattr(quick, f) != getattr(paper, f) for f in ReCAREConfig.PRESET_FIELDS)
    with pytest.raises(ValueError, match="Unknown preset"):
        ReCAREConfig.preset("no-such-preset")
