"""A trainable weight update held *beside* a frozen model, applied by each layer's own (instance) ``forward``.

The selected ``nn.Linear`` / ``nn.Conv2d`` layers (ComfyUI's ``comfy.ops`` layers are subclasses of these) keep
their own weights untouched. Where the layer computes in float32 from its own weights, it runs **once** with
merged weights ``W + dW``: cached between optimiser steps when no gradient is needed
(partial sampling, the teacher, textual inversion), rebuilt in the autograd graph for the student, so a ``full``
update costs no second matmul/convolution. Otherwise (half precision, where a small ``dW`` would be rounded
away when merged; layers that cast their weights on the fly, such as ComfyUI's low-VRAM or fp8 layers; or
``merge=False``) the layer runs as before and the update's contribution is added to its output:

* ``full``: a dense delta ``dW`` (and, optionally, ``db``): ``F.linear(x, dW, db)`` or the same convolution as
  the layer (stride, padding, dilation, groups) with ``dW``;
* ``lora``: ``up(down(x)) * alpha / rank`` (down: ``rank x in`` or a ``rank``-channel conv like the layer's; up:
  ``out x rank`` / a 1x1 conv), ``up`` starting at zero. With gradients, a LoRA keeps this additive form (its
  frozen, committed part merged) because a merged weight's gradient would cost a full-size matmul.

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


def _lora_weight(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The dense weight of ``up(down(x))``: ``up @ down`` (a conv's 1x1 ``up`` contracts over the rank)."""
    return torch.einsum("or,r...->o...", up.flatten(1), down)


def _merges(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``layer(x)`` may run with merged weights: a layer whose forward is ``nn.Linear``'s / ``nn.Conv2d``'s
    (or a ComfyUI ``comfy.ops`` layer that is not casting or patching its weights on the fly, as low-VRAM and fp8
    loading do), computing in float32 from float32 weights without autocast."""
    if getattr(layer, "comfy_cast_weights", False) or getattr(layer, "weight_function", None) or \
            getattr(layer, "bias_function", None):
        return False
    plain = type(layer).forward in (nn.Linear.forward, nn.Conv2d.forward) or hasattr(layer, "comfy_cast_weights")
    return (plain and x.dtype == torch.float32 and layer.weight.dtype == torch.float32
            and not torch.is_autocast_enabled(x.device.type))


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
        self._commits = 0
        self._cache: dict[bool, tuple[tuple, tuple[torch.Tensor, torch.Tensor | None]]] = {}
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

    def _trains(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())

    def _compose(self, layer: nn.Module, trainable: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layer's own weights plus the committed (and, if ``trainable``, the trainable) part."""
        weight = layer.weight.detach()
        bias = layer.bias.detach() if getattr(layer, "bias", None) is not None else None
        if self.kind == "full":
            for extra in (self.committed_weight, self.delta if trainable else None):
                weight = weight if extra is None else weight + extra.to(weight.device)
            for extra in (self.committed_bias, self.bias_delta if trainable else None):
                bias = bias if extra is None else bias + extra.to(bias.device)
            return weight, bias
        pairs = list(self.committed_pairs) + ([(self.down, self.up)] if trainable else [])
        for down, up in pairs:
            weight = weight + self.scale * _lora_weight(down, up).to(weight.device)
        return weight, bias

    def merged_weights(self, layer: nn.Module, trainable: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight, bias)`` the layer computes with: its own plus the committed (and trainable) part.

        Without gradients to the update, the merged tensors are cached until the layer's weights, a commit or an
        optimiser step change them; with gradients (``full`` only) the trainable part is added in the graph.
        """
        if trainable and self._trains():
            if self.kind != "full":
                raise RuntimeError("A LoRA under training is applied additively, not through merged weights.")
            self._cache.pop(True, None)  # the trainable part changes at the coming optimiser step
            weight, bias = self.merged_weights(layer, trainable=False)
            weight = weight + self.delta
            if self.bias_delta is not None:
                bias = self.bias_delta if bias is None else bias + self.bias_delta
            return weight, bias
        own_bias = getattr(layer, "bias", None)
        key = (layer.weight.data_ptr(), layer.weight._version, None if own_bias is None else own_bias._version,
               self._commits, tuple(p._version for p in self.parameters()) if trainable else ())
        hit = self._cache.get(trainable)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = self._cache[trainable] = (key, self._compose(layer, trainable))
        return hit[1]

    def forward_layer(self, layer: nn.Module, original, x: torch.Tensor, trainable: bool) -> torch.Tensor:
        """``layer(x)`` with the update applied: one pass with merged weights where :func:`_merges` allows
        (a LoRA under training adds its trainable pair to the merged frozen part), else the layer's own forward
        plus :meth:`output_delta`."""
        adds = trainable or self.committed_weight is not None or self.committed_bias is not None or \
            bool(self.committed_pairs)
        if not adds:
            return original(x)
        if _merges(layer, x):
            lora_training = self.kind == "lora" and trainable and self._trains()
            weight, bias = self.merged_weights(layer, trainable and not lora_training)
            out = _conv(layer, x, weight, bias) if self.is_conv else F.linear(x, weight, bias)
            if lora_training:
                out = out + self._lora_delta(layer, x, [(self.down, self.up)])
            return out
        output = original(x)
        extra = self.output_delta(layer, x, trainable)
        return output if extra is None else output + extra.to(output.dtype)

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
        return self._lora_delta(layer, x, pairs) if pairs else None

    def _lora_delta(self, layer: nn.Module, x: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]
                    ) -> torch.Tensor:
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
        self._commits += 1
        self._cache.clear()
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
    """A weight update of ``layers`` (``{parameter-name prefix: module}``), live through each layer's ``forward``.

    ``kind`` ``"full"`` (exact dense deltas, as the paper; ``train_bias`` also trains bias deltas, as the reference
    fine-tunes whole layers) or ``"lora"`` (``rank``, ``alpha``, default ``alpha = rank``). Parameters live on
    ``device`` (default: each layer's weight device) in float32 and are cast to the layer's input dtype.
    ``merge=False`` always adds the update's output to the layer's own (two passes per layer; the same numbers
    up to float rounding, kept for layers that cannot merge and to check the merged path against).
    """

    def __init__(self, layers: Mapping[str, nn.Module], kind: UpdateKind = "full", *, rank: int = 4,
                 alpha: float | None = None, train_bias: bool = True, device: torch.device | str | None = None,
                 seed: int = 0, merge: bool = True):
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
        self._merge = merge
        self._own_forwards = {name: layer.__dict__.get("forward") for name, layer in self._layers.items()}
        self._attached = True
        for name, layer in self._layers.items():
            layer.forward = self._make_forward(layer, self._updates[name])

    def _make_forward(self, layer: nn.Module, update: _LayerUpdate):
        original = layer.forward

        def forward(*args, **kwargs):
            x = args[0] if args else kwargs["input"]
            if not self._merge or len(args) + len(kwargs) != 1:
                output = original(*args, **kwargs)
                extra = update.output_delta(layer, x, trainable=self._enabled)
                return output if extra is None else output + extra.to(output.dtype)
            return update.forward_layer(layer, original, x, trainable=self._enabled)

        return forward

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
        """Restore every layer's own ``forward``: the layers compute exactly what they did before the update."""
        if not self._attached:
            return
        self._attached = False
        for name, layer in self._layers.items():
            if "forward" in layer.__dict__:
                del layer.forward
            own = self._own_forwards.get(name)
            if own is not None:
                layer.forward = own
        for update in self._updates.values():
            update._cache.clear()

    def __enter__(self) -> "WeightUpdate":
        return self

    def __exit__(self, *exc_info) -> None:
        self.detach()
