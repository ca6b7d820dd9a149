"""Prompt-like inputs of ReCAREUnlearn checked against the text encoder's length before any training starts.

ComfyUI's CLIPTextEncode accepts a prompt of any length by encoding it in chunks of 75 tokens and joining the
chunks; training needs one fixed-size conditioning per prompt (CLIP's 77 positions), so the pack does not chunk:
a prompt longer than CLIP reads (75 tokens plus the start and end tokens) is refused with an error naming the
input and its length, before the model is touched, and nothing is cut short silently.
"""

from __future__ import annotations

from typing import Iterable

from ..recare_core.methods.registry import MethodInputs
from ..recare_core.methods.textual_inversion import TEMPLATES
from ..recare_core.safe_files import quoted
from .comfy_backend import CLIP_CONTEXT_LENGTH, ComfyTextEncoder

MAX_PROMPT_TOKENS = CLIP_CONTEXT_LENGTH - 2
"""BPE tokens one prompt may have: CLIP's 77 positions less the start and end tokens."""


class PromptTooLongError(ValueError):
    """A prompt-like input has more tokens than the text encoder reads."""


def check_prompt(text: ComfyTextEncoder, what: str, prompt: str, limit: int = MAX_PROMPT_TOKENS) -> int:
    """The token count of ``prompt``; raises :class:`PromptTooLongError` naming ``what`` when over ``limit``."""
    count = len(text.word_ids(prompt))
    if count > limit:
        raise PromptTooLongError(
            f"{what} {quoted(prompt, 70)} is {count} tokens long, but the text encoder reads at most {limit} tokens "
            f"here (CLIP's {CLIP_CONTEXT_LENGTH} positions less the start and end tokens"
            + ("" if limit == MAX_PROMPT_TOKENS else " and the textual-inversion template words") + "). Shorten it.")
    return count


def check_unlearn_prompts(text: ComfyTextEncoder, erase_concept: str, initializer_token: str, concept_type: str,
                          anchor_prompts: Iterable[str], retain_prompts: Iterable[str], uses_initializer: bool) -> None:
    """Every prompt ReCAREUnlearn will encode fits CLIP: the concept, the CARE-set's prompts, and (when stage 1
    runs) the initializer token inside the longest textual-inversion template."""
    check_prompt(text, "erase_concept", erase_concept)
    for kind, prompts in (("anchor", anchor_prompts), ("retain", retain_prompts)):
        for prompt in prompts:
            check_prompt(text, f"The CARE-set's {kind} prompt", prompt)
    if uses_initializer:
        template_tokens = max(len(text.word_ids(template.format(""))) for template in TEMPLATES[concept_type])
        check_prompt(text, "initializer_token", initializer_token, MAX_PROMPT_TOKENS - template_tokens)


def check_method_prompts(text: ComfyTextEncoder, inputs: MethodInputs, config: object) -> None:
    """Every prompt an erasure method will encode fits CLIP: the concept and the CARE-set's prompts; for ReCARE
    the initializer token inside the textual-inversion templates (when stage 1 runs); for UCE its guide and each
    preserved concept."""
    initializer = getattr(config, "initializer_token", "")
    uses_initializer = bool(initializer and getattr(config, "n_rounds", 0) and getattr(config, "ti_steps", 0))
    check_unlearn_prompts(text, inputs.concept.strip(), initializer, getattr(config, "concept_type", "object"),
                          inputs.anchor_prompts, inputs.retain_prompts, uses_initializer)
    if getattr(config, "guide", ""):
        check_prompt(text, "guide", config.guide)
    for concept in str(getattr(config, "preserve", "")).split(";"):
        if concept.strip():
            check_prompt(text, "preserve", concept.strip())
