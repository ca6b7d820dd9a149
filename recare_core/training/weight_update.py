"""A trainable weight update held *beside* a frozen model, applied through forward hooks.

The selected ``nn.Linear`` / ``nn.Conv2d`` layers (ComfyUI's ``comfy.ops`` layers are subclasses of these) keep
their own weights untouched; a hook adds the update's contribution to each layer's output:

* ``full``: a dense delta ``dW`` (and, optionally, ``db``): ``F.linear(x, dW, db)`` or the same convolution as
  the layer (stride, padding, dilation, groups) with ``dW``;
* ``lora``: ``up(down(x)) * alpha / rank`` (down: ``rank x in`` or a ``rank``-channel conv like the layer's; up:
  ``out x rank`` / a 1x1 conv), ``up`` starting at zero.

Because the frozen weights are never changed, the same modules act as the teacher when the update is switched
off (:meth:`WeightUpdate.enabled`), so erasure needs no second copy of the UNet. :meth:`WeightUpdate.commit`
folds what was trained into a frozen part that stays applied when the update is off (stage 1 erases round after
round, each round's teacher being the model erased so far).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..erasure.increments import WeightIncrement

UpdateKind = Literal["full", "lora"]
UPDATE_KINDS: tuple[str, ...] = ("full", "lora")


def _conv(module: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
          groups: int | None = None) -> torch.Tensor:
    """``module``'s convolution (stride, padding and its mode, dilation) with another weight."""
    padding = module.padding
    groups = module.groups if groups is None else groups
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = 0
    return F.conv2d(x, weight, bias, module.stride, padding, module.dilation, groups)


def _cast(tensor: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device=like.device, dtype=like.dtype)


class _LayerUpdate(nn.Module):
    """The update of one layer: trainable tensors plus a frozen, committed part."""

    def __init__(self, layer: nn.Module, kind: str, rank: int, alpha: float, train_bias: bool,
                 device: torch.device, generator: torch.Generator):
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"Only Linear and Conv2d layers can be updated, not {type(layer).__name__}.")
        self.kind, self.rank, self.alpha = kind, rank, alpha
        self.is_conv = isinstance(layer, nn.Conv2d)
        self.weight_shape = tuple(layer.weight.shape)
        self._generator = generator
        self.committed_weight: torch.Tensor | None = None
        self.committed_bias: torch.Tensor | None = None
        self.committed_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        if kind == "full":
            self.delta = nn.Parameter(torch.zeros(self.weight_shape, device=device))
            has_bias = train_bias and getattr(layer, "bias", None) is not None
            self.bias_delta = nn.Parameter(torch.zeros(self.weight_shape[0], device=device)) if has_bias else None
        else:
            if self.is_conv and layer.groups != 1:
                raise ValueError("LoRA updates of grouped convolutions are not supported; use the 'full' update.")
            out_features, in_features = self.weight_shape[0], self.weight_shape[1]
            kernel = self.weight_shape[2:]
            self.down = nn.Parameter(torch.empty((rank, in_features, *kernel), device=device))
            self.up = nn.Parameter(torch.zeros((out_features, rank, *(1 for _ in kernel)), device=device))
            self._init_down()

    def _init_down(self) -> None:
        fan_in = math.prod(self.down.shape[1:])
        bound = 1.0 / math.sqrt(fan_in)  # kaiming-uniform with a = sqrt(5), as nn.Linear initialises weights
        values = torch.rand(self.down.shape, generator=self._generator) * (2 * bound) - bound
        with torch.no_grad():
            self.down.copy_(values.to(self.down.device))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def output_delta(self, layer: nn.Module, x: torch.Tensor, trainable: bool) -> torch.Tensor | None:
        """What the update adds to ``layer(x)``; ``None`` when it adds nothing."""
        if self.kind == "full":
            weight, bias = self.committed_weight, self.committed_bias
            if trainable:
                weight = self.delta if weight is None else weight + self.delta
                if self.bias_delta is not None:
                    bias = self.bias_delta if bias is None else bias + self.bias_delta
            if weight is None:
                return None
            weight, bias = _cast(weight, x), _cast(bias, x)
            return _conv(layer, x, weight, bias) if self.is_conv else F.linear(x, weight, bias)
        pairs = list(self.committed_pairs) + ([(self.down, self.up)] if trainable else [])
        if not pairs:
            return None
        total = None
        for down, up in pairs:
            down, up = _cast(down, x), _cast(up, x)
            if self.is_conv:
                out = F.conv2d(_conv(layer, x, down, groups=1), up)
            else:
                out = F.linear(F.linear(x, down), up)
            total = out if total is None else total + out
        return total * self.scale

    @torch.no_grad()
    def commit(self) -> None:
        if self.kind == "full":
            self.committed_weight = self.delta.detach().clone() + (
                0 if self.committed_weight is None else self.committed_weight)
            self.delta.zero_()
            if self.bias_delta is not None:
                self.committed_bias = self.bias_delta.detach().clone() + (
                    0 if self.committed_bias is None else self.committed_bias)
                self.bias_delta.zero_()
        else:
            self.committed_pairs.append((self.down.detach().clone(), self.up.detach().clone()))
            self._init_down()
            self.up.zero_()

    @torch.no_grad()
    def increments(self) -> dict[str, WeightIncrement]:
        """Committed + trainable update as erasure increments, keyed ``weight`` / ``bias``, on the CPU."""
        if self.kind == "full":
            weight = self.delta.detach() + (0 if self.committed_weight is None else self.committed_weight)
            result = {"weight": WeightIncrement(full=weight.float().cpu().clone())}
            if self.bias_delta is not None:
                bias = self.bias_delta.detach() + (0 if self.committed_bias is None else self.committed_bias)
                result["bias"] = WeightIncrement(full=bias.float().cpu().clone())
            return result
        pairs = self.committed_pairs + [(self.down.detach(), self.up.detach())]
        # A sum of LoRAs sharing the scale alpha/rank is one LoRA of the concatenated rank and alpha * count.
        down = torch.cat([d for d, _ in pairs]).float().cpu().clone()
        up = torch.cat([u for _, u in pairs], dim=1).float().cpu().clone()
        return {"weight": WeightIncrement(down=down, up=up, alpha=self.alpha * len(pairs))}


class WeightUpdate:
    """A weight update of ``layers`` (``{parameter-name prefix: module}``), live through forward hooks.

    ``kind`` ``"full"`` (exact dense deltas, as the paper; ``train_bias`` also trains bias deltas, as the reference
    fine-tunes whole layers) or ``"lora"`` (``rank``, ``alpha``, default ``alpha = rank``). Parameters live on
    ``device`` (default: each layer's weight device) in float32 and are cast to the layer's input dtype.
    """

    def __init__(self, layers: Mapping[str, nn.Module], kind: UpdateKind = "full", *, rank: int = 4,
                 alpha: float | None = None, train_bias: bool = True, device: torch.device | str | None = None,
                 seed: int = 0):
        if kind not in UPDATE_KINDS:
            raise ValueError(f"Unknown update kind '{kind}'. Choose one of: {', '.join(UPDATE_KINDS)}.")
        if not layers:
            raise ValueError("A weight update needs at least one layer to update.")
        if kind == "lora" and rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}.")
        self.kind = kind
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        generator = torch.Generator().manual_seed(seed)
        self._layers: dict[str, nn.Module] = dict(layers)
        self._updates: dict[str, _LayerUpdate] = {
            name: _LayerUpdate(layer, kind, rank, self.alpha, train_bias,
                               torch.device(device) if device is not None else layer.weight.device, generator)
            for name, layer in self._layers.items()
        }
        self._enabled = True
        self._handles = [
            layer.register_forward_hook(self._make_hook(self._updates[name]), with_kwargs=True)
            for name, layer in self._layers.items()
        ]

    def _make_hook(self, update: _LayerUpdate):
        def hook(layer: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor | None:
            x = args[0] if args else kwargs["input"]
            extra = update.output_delta(layer, x, trainable=self._enabled)
            return None if extra is None else output + extra.to(output.dtype)

        return hook

    @property
    def layer_names(self) -> list[str]:
        return list(self._layers)

    def parameters(self) -> list[nn.Parameter]:
        """The trainable tensors (for the optimiser)."""
        return [p for update in self._updates.values() for p in update.parameters()]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def requires_grad_(self, flag: bool) -> "WeightUpdate":
        for parameter in self.parameters():
            parameter.requires_grad_(flag)
        return self

    @contextlib.contextmanager
    def enabled(self, flag: bool) -> Iterator[None]:
        """Switch the trainable part on or off inside the block (off: the frozen model plus committed part)."""
        previous, self._enabled = self._enabled, flag
        try:
            yield
        finally:
            self._enabled = previous

    def commit(self) -> None:
        """Freeze what was trained so far (it stays applied when disabled) and restart the trainable part at 0."""
        for update in self._updates.values():
            update.commit()

    def to_erasure_increments(self) -> dict[str, WeightIncrement]:
        """Everything this update adds (committed + trainable), keyed ``<layer name>.weight`` / ``.bias``."""
        return {f"{name}.{kind}": increment for name, update in self._updates.items()
                for kind, increment in update.increments().items()}

    def detach(self) -> None:
        """Remove every hook: the layers compute exactly what they did before the update existed."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "WeightUpdate":
        return self

    def __exit__(self, *exc_info) -> None:
        self.detach()
