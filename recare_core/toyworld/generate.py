"""Full DDIM text-to-image sampling through the backend interface (for the toy world, the main job and
benchmarks; inside ComfyUI the stock KSampler does this)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..training.backend import DiffusionBackend
from ..training.sampling import partial_ddim_sample


@torch.no_grad()
def generate_latents(backend: DiffusionBackend, prompts: Sequence[str], seeds: Sequence[int], image_size: int,
                     steps: int = 25, guidance_scale: float = 5.0, negative_prompt: str = "",
                     batch_size: int = 32) -> torch.Tensor:
    """Latents of one image per prompt, each from its own seed (same seed and prompt -> same image)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt.")
    if not prompts:
        raise ValueError("No prompts to generate images from.")
    shape = backend.latent_shape(1, image_size)[1:]
    uncond = backend.encode_text([negative_prompt])
    cache: dict[str, torch.Tensor] = {}
    outputs = []
    for start in range(0, len(prompts), batch_size):
        chunk, chunk_seeds = prompts[start:start + batch_size], seeds[start:start + batch_size]
        for prompt in set(chunk) - set(cache):
            cache[prompt] = backend.encode_text([prompt])
        cond = torch.cat([cache[p] for p in chunk])
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                             for s in chunk_seeds]).to(backend.device)
        outputs.append(partial_ddim_sample(backend.predict_noise, noise, cond, uncond.expand_as(cond), steps, steps,
                                           backend.alphas_cumprod, guidance_scale))
    return torch.cat(outputs)


def generate_images(backend, prompts: Sequence[str], seeds: Sequence[int], steps: int = 25,
                    guidance_scale: float = 5.0) -> torch.Tensor:
    """Images ``(B, H, W, 3)`` in [0, 1] from a pixel-space :class:`~recare_core.toyworld.torch_backend.TorchBackend`."""
    model = backend.model
    latents = generate_latents(backend, prompts, seeds, model.config.image_size, steps, guidance_scale)
    return model.latents_to_images(latents).cpu()
