"""Full deltas -> LoRA by truncated SVD: exact for deltas of rank <= r, Eckart-Young error otherwise, honest report."""

from __future__ import annotations

import math

import pytest
import torch

from recare_core.erasure.increments import Erasure, WeightIncrement
from recare_core.erasure.io import erasure_to_state_dict, load_erasure, save_erasure
from recare_core.erasure.lora_compress import compress_erasure, low_rank_factors
from recare_core.progress import Interrupted

LINEAR = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
CONV = "diffusion_model.input_blocks.1.0.in_layers.2.weight"
BIAS = "diffusion_model.input_blocks.1.0.in_layers.2.bias"


def _low_rank(shape: tuple[int, ...], rank: int, g: torch.Generator) -> torch.Tensor:
    columns = math.prod(shape[1:])
    return (torch.randn(shape[0], rank, generator=g) @ torch.randn(rank, columns, generator=g)).reshape(shape)


def test_delta_of_rank_at_most_r_is_reproduced_exactly():
    g = torch.Generator().manual_seed(0)
    erasure = Erasure("x", {
        LINEAR: WeightIncrement(full=_low_rank((64, 48), 3, g)),
        CONV: WeightIncrement(full=_low_rank((32, 16, 3, 3), 4, g)),
        BIAS: WeightIncrement(full=torch.randn(32, generator=g)),
    })
    compressed, report = compress_erasure(erasure, rank=4)
    assert report.overall_error < 1e-6 and max(report.layer_errors.values()) < 1e-6
    assert sorted(report.layer_errors) == sorted([LINEAR, CONV]) and report.kept_exact == [BIAS]
    conv = compressed.increments[CONV]
    assert conv.is_lora and conv.down.shape == (4, 16, 3, 3) and conv.up.shape == (32, 4, 1, 1) and conv.alpha == 4
    for key, increment in erasure.increments.items():
        torch.testing.assert_close(compressed.increments[key].delta(increment.full.shape), increment.full,
                                   rtol=1e-4, atol=1e-4)
    assert compressed.metadata["lora_compression"]["rank"] == 4


def test_full_rank_delta_error_is_the_eckart_young_bound():
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(40, 30, generator=g, dtype=torch.float64)
    erasure = Erasure("x", {LINEAR: WeightIncrement(full=delta)})
    _, report = compress_erasure(erasure, rank=5)
    s = torch.linalg.svdvals(delta)
    expected = float(s[5:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt())
    assert report.layer_errors[LINEAR] == pytest.approx(expected, rel=1e-9)
    assert report.overall_error == pytest.approx(expected, rel=1e-9)
    assert report.parameters_before == 1200 and report.parameters_after == 5 * (40 + 30)


def test_overall_error_weighs_layers_by_their_norm():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(20, 20, generator=g), 3 * torch.randn(20, 20, generator=g)
    erasure = Erasure("x", {LINEAR: WeightIncrement(full=a), CONV: WeightIncrement(full=b)})
    compressed, report = compress_erasure(erasure, rank=2)
    squared_error = sum(float((compressed.increments[k].delta() - v.full).pow(2).sum())
                        for k, v in erasure.increments.items())
    expected = math.sqrt(squared_error / float(a.pow(2).sum() + b.pow(2).sum()))
    assert report.overall_error == pytest.approx(expected, rel=1e-5)
    assert "overall relative error" in report.summary() and LINEAR in report.summary()


def test_small_layers_and_low_rank_loras_stay_exact_and_high_rank_loras_are_recompressed():
    g = torch.Generator().manual_seed(3)
    small = torch.randn(6, 6, generator=g)  # rank-4 LoRA of 6x6 (48 numbers) is not smaller than 36
    low = WeightIncrement(down=torch.randn(2, 30, generator=g), up=torch.randn(20, 2, generator=g), alpha=1.0)
    high = WeightIncrement(down=torch.randn(8, 30, generator=g), up=torch.randn(20, 8, generator=g), alpha=8.0)
    erasure = Erasure("x", {"a.weight": WeightIncrement(full=small), "b.weight": low, "c.weight": high})
    compressed, report = compress_erasure(erasure, rank=4)
    assert compressed.increments["a.weight"] is erasure.increments["a.weight"]
    assert compressed.increments["b.weight"] is low
    assert compressed.increments["c.weight"].rank == 4 and list(report.layer_errors) == ["c.weight"]
    s = torch.linalg.svdvals(high.delta().double())
    assert report.layer_errors["c.weight"] == pytest.approx(float(s[4:].norm() / s.norm()), rel=1e-4)


def test_low_rank_factors_keep_dtype_and_compressed_erasure_round_trips(tmp_path):
    g = torch.Generator().manual_seed(4)
    delta = _low_rank((32, 16, 3, 3), 2, g).half()
    down, up = low_rank_factors(delta, 2)
    assert down.dtype == up.dtype == torch.float16
    erasure = Erasure("x", {CONV: WeightIncrement(full=delta)}, metadata={"erased_concept": "x"})
    compressed, report = compress_erasure(erasure, rank=2)
    assert report.layer_errors[CONV] < 2e-3  # fp16 factors
    keys = set(erasure_to_state_dict(compressed))
    prefix = CONV[: -len(".weight")]
    assert keys == {f"{prefix}.lora_down.weight", f"{prefix}.lora_up.weight", f"{prefix}.alpha"}
    loaded = load_erasure(save_erasure(compressed, tmp_path / "c.safetensors"))
    assert torch.equal(loaded.increments[CONV].delta(delta.shape), compressed.increments[CONV].delta(delta.shape))
    assert loaded.metadata["lora_compression"]["rank"] == 2


def test_progress_stop_and_bad_rank():
    erasure = Erasure("x", {f"l{i}.weight": WeightIncrement(full=torch.randn(16, 16)) for i in range(3)})
    seen = []
    compress_erasure(erasure, 2, progress=lambda step, total, message: seen.append((step, total)))
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    with pytest.raises(Interrupted):
        compress_erasure(erasure, 2, should_stop=lambda: True)
    with pytest.raises(ValueError, match="at least 1"):
        compress_erasure(erasure, 0)
