"""The one interface through which the core reaches a text-to-image diffusion model.

ComfyUI's MODEL/CLIP/VAE objects are one implementation (``nodes/comfy_backend.py``); a plain torch model is
another (``recare_core/toyworld/torch_backend.py``). Everything the method needs goes through these few calls, so the
method can be tested and benchmarked without ComfyUI.

Conventions
-----------
* Noise-prediction ("eps") space, DDPM-style discrete schedule of ``num_train_timesteps`` steps described by
  ``alphas_cumprod``: ``x_t = sqrt(a_t) * x_0 + sqrt(1 - a_t) * eps``. This is the one parameterisation of every
  guidance target and loss: a backend whose model predicts v converts its output to eps in :meth:`predict_noise`
  (:mod:`recare_core.training.parameterisation`).
* Conditioning is whatever tensor ``encode_text`` returns (SD1.x: ``(B, 77, 768)`` hidden states; SD2.x
  ``(B, 77, 1024)``; SDXL ``(B, 78, 2048)``, the last row carrying the pooled output); the core treats it as
  opaque apart from batching along dim 0.
* Learned textual-inversion tokens are passed as a mapping ``{placeholder: embedding}``; a prompt that
  contains the placeholder as a whole whitespace-separated word gets that embedding (``(n_vectors, token_dim)``)
  in its place, differentiably. Placeholders are plain words such as ``recare_adv_1``.

What training relies on
-----------------------
* The core freezes the denoiser's own parameters for the run and trains an update held in forward hooks on the
  layers of :meth:`trainable_modules` (:class:`recare_core.training.weight_update.WeightUpdate`), so those layers must be
  called through ``nn.Module.__call__`` and :meth:`predict_noise` must keep the autograd graph (no ``no_grad`` /
  ``inference_mode`` inside; ``torch.inference_mode(False)`` is opened by the core). It may run under
  ``torch.autocast`` on CUDA.
* :meth:`encode_text` must not give gradients to the text encoder's own weights (keep them frozen); only the
  learned embeddings receive gradients. Fixed prompts are encoded once per run under ``no_grad``.
* :meth:`encode_images` is called once per run, before any training step, on the target images used by the
  stage-1 rounds and their mirror images (in chunks of 8).

What closed-form edits rely on
------------------------------
* :meth:`cross_attention_projections` gives the cross-attention key/value layers whose weights a closed-form
  method (UCE) solves for from text embeddings; :meth:`last_token_index` says which row of :meth:`encode_text`'s
  output holds a prompt's last word token. The edit is returned as increments, the layers are not changed.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class DiffusionBackend(Protocol):
    """A text-conditioned eps-prediction diffusion model with its text encoder and autoencoder."""

    @property
    def device(self) -> torch.device:
        """Device on which the denoiser runs."""

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the denoiser (inputs are cast to it)."""

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``(num_train_timesteps,)`` float64 cumulative alpha products of the training schedule (CPU)."""

    def latent_shape(self, batch: int, image_size: int) -> tuple[int, ...]:
        """Shape of a latent batch for images of ``image_size`` pixels square."""

    def denoiser(self) -> nn.Module:
        """The module whose Linear/Conv layers erasure fine-tunes (the UNet)."""

    def trainable_modules(self, method: str) -> dict[str, nn.Module]:
        """``nn.Linear`` / ``nn.Conv2d`` layers of :meth:`denoiser` selected by a train method (``noxattn``,
        ``xattn``, ``selfattn``, ``full``; see :mod:`recare_core.training.train_methods`), keyed by their parameter-name
        prefix in the model's own state dict; erasure increments are keyed ``<prefix>.weight`` / ``.bias``."""

    def checkpoint_blocks(self) -> Sequence[nn.Module]:
        """Blocks of :meth:`denoiser` whose activations gradient checkpointing may recompute during backward
        (each called through ``__call__``, not mutating its inputs); empty when checkpointing is unsupported."""

    def predict_noise(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps prediction at integer training ``timesteps`` (shape ``(B,)``) for conditioning ``cond`` (converted
        from the model's own parameterisation, e.g. v, where it differs)."""

    def encode_text(
        self, prompts: Sequence[str], learned_tokens: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Conditioning for ``prompts``; placeholder words in ``learned_tokens`` are replaced by their
        embeddings, differentiably with respect to those embeddings."""

    def token_embedding(self, word: str) -> torch.Tensor:
        """``(n_tokens, token_dim)`` input embeddings of ``word``'s tokens (to initialise a learned token);
        zero rows, or a ``ValueError``, for a word that tokenises to nothing."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Latents (already scaled for the denoiser) of ``images``: ``(B, H, W, 3)`` floats in [0, 1]."""

    def cross_attention_projections(self) -> dict[str, nn.Linear]:
        """The key and value projections (``to_k`` / ``to_v``) of every cross-attention layer of :meth:`denoiser`,
        which map conditioning rows to keys and values, keyed by their parameter-name prefix (increments are keyed
        ``<prefix>.weight``)."""

    def last_token_index(self, prompt: str) -> int:
        """Row of ``encode_text([prompt])[0]`` holding ``prompt``'s last word token (0, the start token, for an
        empty prompt); capped at the last row a word token can take."""
