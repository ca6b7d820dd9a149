"""What exists in the toy world: attributes, how scenes are drawn at random, and how they are captioned.

Two scene distributions share one renderer:

* the **co-occurrence world** (``cooccurrence=True``) that the text-to-image model and the CLIP learn from:
  the target texture ``striped`` appears only on circles, and circles also appear plain or dotted;
* the **full world** (``cooccurrence=False``) with every combination, used only to train the attribute checkers,
  so that they recognise stripes on any shape (an erased model may draw them anywhere).

A co-occurrence world may be *partial* (``striped_elsewhere`` > 0): the other shapes are then striped that share
of the time too, so the target co-occurs with circles often but not always (:data:`WORLDS` names the variants).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
BACKGROUNDS: tuple[str, ...] = ("dark", "light")
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "colour": COLOURS, "texture": TEXTURES, "background": BACKGROUNDS,
}

TARGET_ATTRIBUTE, TARGET_VALUE = "texture", "striped"
"""The concept to erase."""
CARE_ATTRIBUTE, CARE_VALUE = "shape", "circle"
"""The benign concept that every target image contains (the world's ``person`` to ``nudity``)."""

CAPTION_PREFIXES: tuple[str, ...] = ("", "a photo of ", "a picture of ", "a rendering of ", "an image of ")
GENERIC_NOUN = "shape"


class WorldError(ValueError):
    """A scene or attribute that the toy world does not have."""


@dataclass(frozen=True)
class Scene:
    """Everything the renderer needs for one image; positions and sizes are in output pixels."""

    shape: str
    colour: str
    texture: str
    background: str
    centre_x: float
    centre_y: float
    radius: float
    phase_x: int
    phase_y: int
    brightness: float

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise WorldError(f"Unknown {name} '{getattr(self, name)}'; the toy world has: {', '.join(values)}.")

    def attributes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def labels(self) -> dict[str, int]:
        """Class index of each attribute."""
        return {name: ATTRIBUTES[name].index(getattr(self, name)) for name in ATTRIBUTES}

    def to_dict(self) -> dict:
        return asdict(self)


WORLDS: dict[str, float] = {"cooccurrence": 0.0, "partial": 0.1}
"""The co-occurrence worlds by name, each with its ``striped_elsewhere``: ``cooccurrence`` (stripes only on
circles) and ``partial`` (squares, triangles and diamonds striped a tenth of the time; about half of the striped
scenes are then circles)."""


def check_striped_elsewhere(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise WorldError(f"striped_elsewhere is a probability below 1, got {value}.")
    return float(value)


def textures_allowed(shape: str, cooccurrence: bool, striped_elsewhere: float = 0.0) -> tuple[str, ...]:
    """Textures a shape can have: in the co-occurrence world only circles can be striped (other shapes too
    when it is partial)."""
    if cooccurrence and shape != CARE_VALUE and not striped_elsewhere:
        return tuple(t for t in TEXTURES if t != TARGET_VALUE)
    return TEXTURES


def _draw_texture(rng: np.random.Generator, shape: str, cooccurrence: bool, striped_elsewhere: float) -> str:
    if cooccurrence and shape != CARE_VALUE and striped_elsewhere:
        if rng.random() < striped_elsewhere:
            return TARGET_VALUE
        others = tuple(t for t in TEXTURES if t != TARGET_VALUE)
        return others[rng.integers(len(others))]
    allowed = textures_allowed(shape, cooccurrence)
    return allowed[rng.integers(len(allowed))]


def sample_scene(rng: np.random.Generator, image_size: int, cooccurrence: bool = True,
                 striped_elsewhere: float = 0.0, **fixed: str) -> Scene:
    """A random scene; ``fixed`` pins attributes (``shape="circle"``). In the co-occurrence world (partial with
    ``striped_elsewhere`` > 0, see :data:`WORLDS`) a pinned combination that cannot occur (a striped square)
    raises :class:`WorldError`."""
    unknown = set(fixed) - set(ATTRIBUTES)
    if unknown:
        raise WorldError(f"Unknown attribute(s) {sorted(unknown)}; choose among {list(ATTRIBUTES)}.")
    striped_elsewhere = check_striped_elsewhere(striped_elsewhere)
    shape = fixed.get("shape") or SHAPES[rng.integers(len(SHAPES))]
    allowed = textures_allowed(shape, cooccurrence, striped_elsewhere)
    texture = fixed.get("texture") or _draw_texture(rng, shape, cooccurrence, striped_elsewhere)
    if texture not in allowed:
        raise WorldError(f"A {texture} {shape} does not occur in the co-occurrence world.")
    colour = fixed.get("colour") or COLOURS[rng.integers(len(COLOURS))]
    background = fixed.get("background") or BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    scale = image_size / 16.0
    return Scene(
        shape=shape, colour=colour, texture=texture, background=background,
        centre_x=image_size / 2 + rng.uniform(-1.5, 1.5) * scale,
        centre_y=image_size / 2 + rng.uniform(-1.5, 1.5) * scale,
        radius=rng.uniform(5.0, 6.5) * scale,
        phase_x=int(rng.integers(4)), phase_y=int(rng.integers(4)),
        brightness=float(rng.uniform(-0.04, 0.04)),
    )


def describe(scene: Scene, *, colour: bool = True, texture: bool = True, shape: bool = True,
             background: bool = True, prefix: str = "") -> str:
    """A caption of ``scene`` naming the chosen attributes: ``a red striped circle on a dark background``."""
    words = [scene.colour] if colour else []
    words += [scene.texture] if texture else []
    words.append(scene.shape if shape else GENERIC_NOUN)
    article = "an" if words[0][0] in "aeiou" else "a"
    caption = f"{prefix}{article} {' '.join(words)}"
    if background:
        caption += f" on a {scene.background} background"
    return caption


@dataclass(frozen=True)
class CaptionStyle:
    """How often a training caption names each attribute (the rest are left out, as in web captions)."""

    colour: float = 0.7
    texture: float = 0.7
    shape: float = 0.9
    background: float = 0.5
    prefix: float = 0.4


def random_caption(scene: Scene, rng: np.random.Generator, style: CaptionStyle = CaptionStyle()) -> str:
    """A caption that names a random subset of the scene's attributes, sometimes with a prefix
    (``a photo of ...``)."""
    prefix = ""
    if rng.random() < style.prefix:
        prefix = CAPTION_PREFIXES[1 + rng.integers(len(CAPTION_PREFIXES) - 1)]
    return describe(scene, colour=rng.random() < style.colour, texture=rng.random() < style.texture,
                    shape=rng.random() < style.shape, background=rng.random() < style.background, prefix=prefix)


def vocabulary_words() -> list[str]:
    """Every word that captions use."""
    words = {"a", "an", "on", "background", GENERIC_NOUN}
    for values in ATTRIBUTES.values():
        words.update(values)
    for prefix in CAPTION_PREFIXES:
        words.update(prefix.split())
    return sorted(words)
