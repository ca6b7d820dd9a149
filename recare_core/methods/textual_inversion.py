"""Adversarial textual inversion (stage 1, step b): learn a token that still brings the erased concept back.

Only the new token's embedding is trained, through the backend's own text encoder, with the standard denoising
loss on the target images. The images of a round are encoded once (with flipped copies for the random
horizontal flip), never per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..training.run import TrainingRun, describe_stage
from .recare_config import ReCAREConfig

OBJECT_TEMPLATES = [
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
]
STYLE_TEMPLATES = [
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}", "a cool painting in the style of {}",
    "a close-up painting in the style of {}", "a bright painting in the style of {}",
    "a cropped painting in the style of {}", "a good painting in the style of {}",
    "a close-up painting in the style of {}", "a rendition in the style of {}", "a nice painting in the style of {}",
    "a small painting in the style of {}", "a weird painting in the style of {}",
    "a large painting in the style of {}",
]
PERSON_TEMPLATES = ["a photo portrait of {}", "a DSLR portrait of {}"]
TEMPLATES: dict[str, list[str]] = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES, "person": PERSON_TEMPLATES}


def adversarial_token_name(round_index: int) -> str:
    """Placeholder word of the token learned in round ``round_index`` (a single whitespace-free word)."""
    return f"recare_adv_{round_index + 1}"


def round_image_indices(n_images: int, round_index: int, n_rounds: int) -> list[int]:
    """The round's own slice of the images: ``n_images // n_rounds`` of them (at least one), wrapping around."""
    per_round = max(1, n_images // max(1, n_rounds))
    start = (round_index * per_round) % n_images
    return [(start + i) % n_images for i in range(per_round)]


def prepare_images(images: torch.Tensor, image_size: int, center_crop: bool = False) -> torch.Tensor:
    """``(B, H, W, C>=3)`` images in [0, 1] -> ``(B, image_size, image_size, 3)`` (bicubic, antialiased)."""
    if images.dim() != 4 or images.shape[-1] < 3:
        raise ValueError(f"Target images must be a (batch, height, width, 3) image batch, got {tuple(images.shape)}.")
    x = images[..., :3].float().permute(0, 3, 1, 2)
    if center_crop:
        side = min(x.shape[-2:])
        top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
        x = x[..., top:top + side, left:left + side]
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()


@torch.no_grad()
def encode_images_once(run: TrainingRun, images: torch.Tensor, flip: bool, chunk: int = 8
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents of ``images`` (prepared, ``(B, H, W, 3)``) and, with ``flip``, of their mirror images."""
    def encode(batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([run.backend.encode_images(batch[i:i + chunk]).float() for i in range(0, len(batch), chunk)])

    latents = encode(images)
    return latents, (encode(images.flip(2)) if flip else None)


def _draw(latents: torch.Tensor, flipped_latents: torch.Tensor | None, templates: list[str], placeholder: str,
          alphas: torch.Tensor, order: list, generator: torch.Generator, count: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``count`` training examples ``(x_t, t, noise, prompts)``: images in shuffled epochs (``order`` holds the
    current permutation and position), a random flip, fresh noise, a timestep and a template each, drawn in
    the reference's order (for ``count`` 1 the very stream of the batch-1 loop)."""
    rows, noises, steps, prompts = [], [], [], []
    for _ in range(count):
        if order[1] == len(order[0]):
            order[0], order[1] = torch.randperm(len(latents), generator=generator), 0
        index = int(order[0][order[1]])
        order[1] += 1
        use_flip = flipped_latents is not None and bool(torch.rand((), generator=generator) < 0.5)
        x0 = (flipped_latents if use_flip else latents)[index:index + 1]
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.randint(0, alphas.shape[0] - 1, (1,), generator=generator)
        a_t = float(alphas[int(t)])
        rows.append(a_t ** 0.5 * x0 + (1.0 - a_t) ** 0.5 * noise)
        noises.append(noise)
        steps.append(t)
        prompts.append(templates[int(torch.randint(len(templates), (1,), generator=generator))].format(placeholder))
    return torch.cat(rows), torch.cat(steps), torch.cat(noises), prompts


class _Plateau:
    """Early stopping on a fixed held-out set of TI examples: ``check`` returns True once the held-out loss has
    not improved by a relative ``min_delta`` for ``patience`` checks in a row."""

    def __init__(self, patience: int, min_delta: float = 0.01):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.stale = float("inf"), 0

    def check(self, loss: float) -> bool:
        if loss < self.best * (1.0 - self.min_delta):
            self.best, self.stale = loss, 0
        else:
            self.stale += 1
        return self.stale >= self.patience


def textual_inversion(run: TrainingRun, latents: torch.Tensor, placeholder: str, initial_embedding: torch.Tensor,
                      config: ReCAREConfig, *, name: str, seed: int, flipped_latents: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """Learn ``placeholder``'s embedding (``(1, token_dim)``, from ``initial_embedding``) for ``config.ti_steps``
    steps at ``config.ti_lr`` (AdamW, constant) on batches of ``config.ti_batch_size`` examples, so the current
    model denoises ``latents`` when prompted with the ``config.concept_type`` templates. With
    ``config.ti_patience`` > 0, every ``config.ti_check_every`` steps the loss on a fixed held-out set of
    examples is measured and training stops once it has not improved by 1 % for ``ti_patience`` checks (the
    progress bar then skips the remaining steps). Returns the learned embedding (detached)."""
    backend = run.backend
    generator = torch.Generator().manual_seed(seed)
    embedding = torch.nn.Parameter(initial_embedding.detach().float().reshape(1, -1).clone().to(backend.device))
    optimizer = torch.optim.AdamW([embedding], lr=config.ti_lr)
    templates = TEMPLATES[config.concept_type]
    alphas = backend.alphas_cumprod
    order = [torch.randperm(len(latents), generator=generator), 0]
    plateau = _Plateau(config.ti_patience) if config.ti_patience else None
    held_out = None
    if plateau is not None:
        held_order = [torch.randperm(len(latents), generator=torch.Generator().manual_seed(seed + 1)), 0]
        held_out = _draw(latents, flipped_latents, templates, placeholder, alphas, held_order,
                         torch.Generator().manual_seed(seed + 1), config.ti_check_examples)

    def loss_of(batch) -> torch.Tensor:
        x_t, t, noise, prompts = batch
        with run.autocast():
            cond = backend.encode_text(prompts, {placeholder: embedding})
        return F.mse_loss(run.predict("student", x_t.to(backend.device), t, cond), noise.to(backend.device))

    with run.stage(name):
        for step in range(config.ti_steps):
            batch = _draw(latents, flipped_latents, templates, placeholder, alphas, order, generator,
                          config.ti_batch_size)
            value = run.optimise(loss_of(batch), optimizer, stage=name, step=step + 1, lr_name="ti_lr")
            run.step_done(name, {name: value}, f"{describe_stage(name)}: step {step + 1}/{config.ti_steps}, "
                                               f"loss {value:.4g}")
            if plateau is not None and (step + 1) % config.ti_check_every == 0 and step + 1 < config.ti_steps:
                with torch.no_grad():
                    held = float(loss_of(held_out))
                if plateau.check(held):
                    run.skip_steps(config.ti_steps - step - 1, f"{describe_stage(name)}: stopped at step "
                                   f"{step + 1} (held-out loss {held:.4g} no longer improving)")
                    break
    return embedding.detach().clone()
