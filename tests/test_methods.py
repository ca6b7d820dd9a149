"""The method seam (registry) and the methods behind it on the tiny plain-torch model: ESD equals the stage-1
erase it wraps, UCE's closed form does what its objective says, and every method leaves the model unchanged,
reports progress and stops cleanly on request."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recare_core.methods.esd import ESDConfig, run_esd
from recare_core.methods.recare import ReCAREConfig
from recare_core.methods.registry import MethodInputs, config_from, get_method, method_names
from recare_core.methods.stage_erase import erase_stage
from recare_core.methods.uce import UCEConfig, concept_embeddings, edited_weight, preserved_prompts
from recare_core.progress import Interrupted
from recare_core.toyworld.torch_backend import TorchBackend, apply_increments
from recare_core.training.run import TrainingOutOfMemoryError, TrainingRun
from recare_core.training.weight_update import WeightUpdate
from tiny_models import assert_untouched, conditioned_model, probe, snapshot, target_images

torch.set_num_threads(1)

ANCHORS = ["a person", "a tree"]
RETAINS = ["a photo of person", "a photo of tree"]
TINY_ESD = ESDConfig(erase_steps=4, erase_lr=1e-4, ddim_steps=10, fixed_k=3, image_size=8, seed=0)
TINY_RECARE = ReCAREConfig(n_rounds=1, erase_steps=2, ti_steps=2, robust_steps=2, ddim_steps=10, fixed_k=3,
                           image_size=8, seed=0)
CONFIGS = {"esd": TINY_ESD, "uce": UCEConfig(), "recare": TINY_RECARE}


def inputs() -> MethodInputs:
    return MethodInputs("nudity", target_images(), ANCHORS, RETAINS)


def test_registry_lists_the_built_in_methods_and_refuses_unknown_names_and_configs():
    assert {"esd", "uce", "recare"} <= set(method_names())
    assert get_method("uce").config_type is UCEConfig
    with pytest.raises(ValueError, match="Registered methods: .*esd"):
        get_method("no_such_method")
    with pytest.raises(TypeError, match="ESDConfig"):
        get_method("esd").run(TorchBackend(conditioned_model()), inputs(), UCEConfig())


def test_config_from_copies_shared_fields_and_keeps_the_others():
    recare = ReCAREConfig(erase_lr=3e-5, negative_guidance=2.5, seed=7, robust_steps=9)
    esd = config_from(recare, ESDConfig, erase_steps=11)
    assert (esd.erase_lr, esd.negative_guidance, esd.seed, esd.erase_steps) == (3e-5, 2.5, 7, 11)
    assert not hasattr(esd, "robust_steps")


@pytest.mark.parametrize("name", ["esd", "uce", "recare"])
def test_every_method_reports_progress_and_leaves_the_model_unchanged(name):
    backend = TorchBackend(conditioned_model())
    before = snapshot(backend.model)
    x, t, cond, expected = probe(backend.model)
    reports = []
    result = get_method(name).run(backend, inputs(), CONFIGS[name],
                                  progress=lambda step, total, message: reports.append((step, total)))
    assert result.increments and all(i.delta().abs().sum() > 0 for i in result.increments.values())
    assert result.losses and reports and reports[-1][0] == reports[-1][1]
    assert_untouched(backend.model, before, x, t, cond, expected)


@pytest.mark.parametrize("name", ["esd", "uce", "recare"])
def test_every_method_stops_cleanly_on_request(name):
    backend = TorchBackend(conditioned_model())
    before = snapshot(backend.model)
    x, t, cond, expected = probe(backend.model)
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(Interrupted):
        get_method(name).run(backend, inputs(), CONFIGS[name], should_stop=should_stop)
    assert len(calls) == 2
    assert_untouched(backend.model, before, x, t, cond, expected)


def test_esd_is_exactly_the_stage_one_erase_it_wraps():
    backend = TorchBackend(conditioned_model())
    result = run_esd(backend, MethodInputs("nudity"), TINY_ESD)
    stage = dataclasses.replace(ReCAREConfig(), **{f.name: getattr(TINY_ESD, f.name)
                                                   for f in dataclasses.fields(ESDConfig)})
    run = TrainingRun(backend, total_steps=stage.erase_steps)
    with torch.inference_mode(False), torch.enable_grad():
        update = WeightUpdate(backend.trainable_modules("noxattn"), "full", seed=0)
        update.requires_grad_(True)
        erase_stage(run, update, "nudity", stage, learned_tokens={}, name="esd_erase", seed=1)
        expected = update.to_erasure_increments()
        update.detach()
    assert result.increments.keys() == expected.keys()
    for key, increment in expected.items():
        assert torch.equal(result.increments[key].full, increment.full), key
    assert len(result.losses["esd_erase"]) == TINY_ESD.erase_steps


def test_esd_out_of_memory_names_the_options_that_reduce_memory():
    from test_unlearn import OutOfMemoryBackend

    backend = OutOfMemoryBackend(conditioned_model(), fail_at=3)
    with pytest.raises(TrainingOutOfMemoryError, match="gradient_checkpointing"):
        run_esd(backend, MethodInputs("nudity"), TINY_ESD)
    assert all(not m._forward_hooks for m in backend.model.modules())


def test_esd_refuses_bad_settings_and_an_empty_concept():
    backend = TorchBackend(conditioned_model())
    with pytest.raises(ValueError, match="erase_steps"):
        run_esd(backend, MethodInputs("nudity"), dataclasses.replace(TINY_ESD, erase_steps=0))
    with pytest.raises(ValueError, match="erase_lr"):
        run_esd(backend, MethodInputs("nudity"), dataclasses.replace(TINY_ESD, erase_lr=0.0))
    with pytest.raises(ValueError, match="No concept to erase"):
        run_esd(backend, MethodInputs("  "), TINY_ESD)


def test_uce_closed_form_is_the_minimiser_of_its_objective():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 5, generator=generator)
    erase, guide, keep = (torch.randn(n, 5, generator=generator) for n in (1, 1, 3))
    config = UCEConfig(erase_scale=1.5, preserve_scale=0.7, lamb=0.3)
    new = edited_weight(weight, erase, guide, keep, config).requires_grad_(True)
    w, e, g, p = weight.double(), erase.double(), guide.double(), keep.double()
    objective = (config.erase_scale * (e @ new.T - g @ w.T).pow(2).sum()
                 + config.preserve_scale * (p @ new.T - p @ w.T).pow(2).sum()
                 + config.lamb * (new - w).pow(2).sum())
    (gradient,) = torch.autograd.grad(objective, new)
    assert gradient.abs().max() < 1e-9


def test_uce_maps_the_concept_onto_the_guide_and_keeps_the_preserved_concepts():
    backend = TorchBackend(conditioned_model())
    config = UCEConfig(guide="a tree", erase_scale=100.0, preserve_scale=100.0, lamb=0.01, preserve_care_set=False,
                       preserve="a dog; a cat")
    result = get_method("uce").run(backend, MethodInputs("nudity"), config)
    layers = backend.cross_attention_projections()
    assert set(result.increments) == {f"{name}.weight" for name in layers}
    assert all(name.endswith((".attn2.to_k", ".attn2.to_v")) for name in layers)
    concept, guide, dog, cat = concept_embeddings(backend, ["nudity", "a tree", "a dog", "a cat"])
    original = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    apply_increments(backend.model, result.increments)
    for name, layer in layers.items():
        with torch.no_grad():
            moved, target = layer(concept), original[name] @ guide
            kept = [(layer(e), original[name] @ e) for e in (dog, cat)]
        assert (moved - target).norm() < 0.05 * target.norm(), name
        for after, before in kept:
            assert (after - before).norm() < 0.05 * before.norm(), name
    assert max(result.losses["uce_erase_residual"]) < 0.05


def test_uce_preserves_the_care_set_without_the_concept_or_guide_and_refuses_bad_settings():
    config = UCEConfig(guide="a person", preserve="a dog; nudity")
    assert preserved_prompts(MethodInputs("nudity", None, ANCHORS, RETAINS), config) == [
        "a dog", "a tree", "a photo of person", "a photo of tree"]
    with pytest.raises(ValueError, match="lamb"):
        get_method("uce").run(TorchBackend(conditioned_model()), inputs(), UCEConfig(lamb=0.0))


def test_toy_benchmark_finds_every_compared_method_in_the_registry():
    from recare_core.toyworld.experiment import METHODS, TOY_METHODS, esd_steps, experiment_settings

    settings = dataclasses.replace(experiment_settings("ci", seed=0), esd_lr=6e-5, esd_guidance=3.0)
    assert set(TOY_METHODS) == set(METHODS) - {"original"}
    for name, spec in TOY_METHODS.items():
        config = spec.config(settings.recare, settings)
        assert isinstance(config, get_method(spec.method).config_type), name
        config.validate()
    esd = TOY_METHODS["esd"].config(settings.recare, settings)
    assert (esd.erase_steps, esd.erase_lr, esd.negative_guidance) == (esd_steps(settings.recare), 6e-5, 3.0)
    assert esd.image_size == settings.recare.image_size == 16
    assert TOY_METHODS["recare_age"].config(settings.recare, settings).anchor_mode == "age"
    assert TOY_METHODS["recare_doco"].config(settings.recare, settings).doco_surgery
