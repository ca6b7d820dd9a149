"""Multi-concept erasure with separable increments (methods/multi_concept.py) on the tiny plain-torch model."""

from __future__ import annotations

import copy

import pytest
import torch

from recare_core.methods.esd import ESDConfig
from recare_core.methods.multi_concept import erase_each
from recare_core.methods.registry import MethodInputs, get_method
from recare_core.progress import Interrupted
from recare_core.toyworld.torch_backend import TorchBackend, apply_increments
from tiny_models import conditioned_model

torch.set_num_threads(1)

TINY_ESD = ESDConfig(erase_steps=3, erase_lr=1e-4, ddim_steps=10, fixed_k=3, image_size=8, seed=0)


def applied(model, increments):
    erased = copy.deepcopy(model)
    apply_increments(erased, increments)
    return erased.state_dict()


def test_removing_one_concept_gives_exactly_the_model_that_erased_only_the_others():
    model = conditioned_model()
    esd = get_method("esd")
    everything = erase_each(esd, TorchBackend(copy.deepcopy(model)), ["nudity", "tree", "dog"], config=TINY_ESD)
    others = erase_each(esd, TorchBackend(copy.deepcopy(model)), ["nudity", "dog"], config=TINY_ESD)
    assert everything.concepts == ["nudity", "tree", "dog"]
    removed = everything.without("tree")
    after_removal, others_only = applied(model, removed.increments()), applied(model, others.increments())
    assert all(torch.equal(after_removal[k], others_only[k]) for k in others_only)
    # ...and the removed concept's increment really changed the model: all three differ from the two.
    stacked = applied(model, everything.increments())
    assert any(not torch.equal(stacked[k], others_only[k]) for k in others_only)


def test_each_increment_is_the_single_concept_erasure():
    model = conditioned_model()
    esd = get_method("esd")
    pair = erase_each(esd, TorchBackend(copy.deepcopy(model)), ["nudity", "tree"], config=TINY_ESD)
    alone = esd.run(TorchBackend(copy.deepcopy(model)), MethodInputs("tree"), TINY_ESD)
    tree = pair.increments(["tree"])
    for key, increment in alone.increments.items():
        assert torch.equal(tree[key].full, increment.full), key


def test_progress_spans_all_concepts_and_a_stop_ends_the_run():
    reports = []
    erase_each(get_method("uce"), TorchBackend(conditioned_model()), ["nudity", "tree"],
               progress=lambda step, total, message: reports.append((step, total, message)))
    assert reports[-1][:2] == (2000, 2000) and reports[0][2].startswith("concept 1/2")
    with pytest.raises(Interrupted):
        erase_each(get_method("uce"), TorchBackend(conditioned_model()), ["nudity", "tree"], should_stop=lambda: True)


def test_bad_concept_lists_are_refused():
    backend = TorchBackend(conditioned_model())
    with pytest.raises(ValueError, match="No concepts"):
        erase_each(get_method("uce"), backend, [" ", ""])
    with pytest.raises(ValueError, match="repeated"):
        erase_each(get_method("uce"), backend, ["tree", "tree"])
    result = erase_each(get_method("uce"), backend, ["tree"])
    with pytest.raises(ValueError, match="not erased here"):
        result.without("dog")
    with pytest.raises(ValueError, match="No increment"):
        result.increments(["dog"])
