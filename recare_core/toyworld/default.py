"""The pack's embedded default toy world: trained weights committed under ``recare_core/toyworld/weights/``.

Files (written by ``python -m recare_core.toyworld.train``):

* ``toy_t2i.safetensors``: the text-to-image model (float16 weights, its config in the safetensors metadata);
* ``clip/open_clip_config.json`` + ``clip/open_clip_model.safetensors``: the CLIP, in open_clip's layout;
* ``checker.safetensors``: the attribute checker;
* ``report.json``: training settings, times and the quality every part reached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..careset.clip_model import CareClip
from ..careset.clip_loading import FROM_CONFIG, load_care_clip
from .toy_model import ToyTextToImage
from .checkers import AttributeChecker

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WORLD_WEIGHTS_DIRS: dict[str, Path] = {"cooccurrence": DEFAULT_WEIGHTS_DIR,
                                       "partial": Path(__file__).resolve().parent / "weights_partial"}
"""The trained toy worlds the pack ships, by world name (:data:`~.world.WORLDS`): the original co-occurrence
world (stripes only on circles) and the fairer partial one (stripes elsewhere too, a checker that can answer
``none``, a UNet with pooled text conditioning, a CLIP trained against more vocabulary)."""
T2I_FILE = "toy_t2i.safetensors"
CLIP_DIR = "clip"
CLIP_FILE = "open_clip_model.safetensors"
CHECKER_FILE = "checker.safetensors"
REPORT_FILE = "report.json"


@dataclass
class ToyWorldModels:
    """The trained toy world: text-to-image model, CLIP and attribute checker."""

    model: ToyTextToImage
    clip: CareClip
    checker: AttributeChecker


class ToyWorldMissingError(FileNotFoundError):
    """A toy-world weights folder lacks one of its files."""


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ToyWorldMissingError(
            f"The toy-world file {path} is missing. Train the toy world with "
            f"'python -m recare_core.toyworld.train --out {path.parent}' or restore the pack's weights folder.")
    return path


def load_text_to_image(directory: str | Path = DEFAULT_WEIGHTS_DIR) -> ToyTextToImage:
    """The toy text-to-image model (float32, eval mode, CPU)."""
    return ToyTextToImage.load(_require(Path(directory) / T2I_FILE)).eval()


def load_clip(directory: str | Path = DEFAULT_WEIGHTS_DIR) -> CareClip:
    """The toy CLIP as a :class:`CareClip` (identity names the weights file's hash)."""
    clip = load_care_clip(FROM_CONFIG, _require(Path(directory) / CLIP_DIR / CLIP_FILE))
    clip.model.float()
    return clip


def load_checker(directory: str | Path = DEFAULT_WEIGHTS_DIR) -> AttributeChecker:
    checker, _ = AttributeChecker.load(_require(Path(directory) / CHECKER_FILE))
    return checker


def load_report(directory: str | Path = DEFAULT_WEIGHTS_DIR) -> dict:
    """The quality report written when the weights were trained."""
    return json.loads(_require(Path(directory) / REPORT_FILE).read_text(encoding="utf-8"))


def has_weights(directory: str | Path = DEFAULT_WEIGHTS_DIR) -> bool:
    """Whether ``directory`` holds every file of a trained toy world."""
    root = Path(directory)
    return all((root / name).is_file() for name in (T2I_FILE, f"{CLIP_DIR}/{CLIP_FILE}", CHECKER_FILE, REPORT_FILE))


def world_weights_dir(name: str) -> Path:
    """The weights folder of the shipped world ``name``."""
    if name not in WORLD_WEIGHTS_DIRS:
        raise ToyWorldMissingError(f"No shipped toy world '{name}'; the pack ships: {', '.join(WORLD_WEIGHTS_DIRS)}.")
    return WORLD_WEIGHTS_DIRS[name]


def load_world(directory: str | Path = DEFAULT_WEIGHTS_DIR) -> ToyWorldModels:
    """The text-to-image model, CLIP and checker of the toy world in ``directory``."""
    return ToyWorldModels(load_text_to_image(directory), load_clip(directory), load_checker(directory))
