"""CARE score (spec section 3): how well a co-occurring concept survives unlearning.

Each image is classified zero-shot with a CLIP against a label set (by default the 80 COCO object names plus the
CARE concepts); the CARE score is the share of images whose top-1 label is the CARE concept, reported with the
mean cosine similarity to it. With an erased concept, the share of images whose top-1 label is that concept
measures the erasure side of the trade-off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

COCO_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


class CareScoreInputError(ValueError):
    """The images or labels given to the CARE score are unusable."""


@dataclass
class ImageVerdict:
    """Top-1 label of one image and its similarity to every label of interest."""

    top_label: str
    top_similarity: float
    care_similarity: float
    erase_similarity: float | None = None


@dataclass
class CareScoreResult:
    care_concept: str
    care_score: float
    mean_care_similarity: float
    erase_concept: str | None
    erase_rate: float | None
    labels: list[str]
    verdicts: list[ImageVerdict] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"CARE concept: {self.care_concept}",
                 f"CARE score (top-1 accuracy): {self.care_score:.3f} over {len(self.verdicts)} images",
                 f"mean cosine similarity to '{self.care_concept}': {self.mean_care_similarity:.4f}"]
        if self.erase_concept is not None:
            lines.append(f"erased concept '{self.erase_concept}' still top-1 in {self.erase_rate:.3f} of the images")
        lines.append(f"labels: {len(self.labels)}")
        lines.append("")
        for index, verdict in enumerate(self.verdicts):
            extra = "" if verdict.erase_similarity is None else f"  erase_sim={verdict.erase_similarity:.4f}"
            lines.append(f"image {index:3d}: top-1 '{verdict.top_label}' ({verdict.top_similarity:.4f})  "
                         f"care_sim={verdict.care_similarity:.4f}{extra}")
        return "\n".join(lines)


def label_prompt(label: str, use_template: bool) -> str:
    """``A photo of a/an {label}`` with the template, the raw name without."""
    if not use_template:
        return label
    article = "an" if label[:1].lower() in "aeiou" else "a"
    return f"A photo of {article} {label}"


def build_label_set(care_concepts: Sequence[str], labels: Sequence[str] | None = None,
                    erase_concept: str | None = None) -> list[str]:
    """The 80 COCO names plus the CARE concepts (and the erased concept), or the user's own ``labels``, which
    must then contain every CARE concept themselves."""
    care = [c.strip() for c in care_concepts if c.strip()]
    if not care:
        raise CareScoreInputError("Give at least one CARE concept (e.g. 'person').")
    base = list(COCO_LABELS) if labels is None else [label.strip() for label in labels if label.strip()]
    if labels is not None:
        absent = [c for c in care if c.lower() not in {label.lower() for label in base}]
        if absent:
            raise CareScoreInputError(
                f"The CARE concept {', '.join(repr(a) for a in absent)} is not among your labels; add it to the "
                "label list (or leave the list empty to use the 80 COCO names plus the CARE concept).")
    seen: set[str] = set()
    duplicates = sorted({label for label in base if label.lower() in seen or seen.add(label.lower())})
    if duplicates:
        raise CareScoreInputError(f"Duplicate labels: {', '.join(duplicates)}. Each label must appear once.")
    extra = care + ([erase_concept.strip()] if erase_concept and erase_concept.strip() else [])
    lowered = {label.lower() for label in base}
    for concept in extra:
        if concept.lower() not in lowered:
            base.append(concept)
            lowered.add(concept.lower())
    return base


def care_score(clip, images: torch.Tensor, care_concept: str, labels: Sequence[str] | None = None,
               use_template: bool = True, erase_concept: str | None = None) -> CareScoreResult:
    """Zero-shot CARE score of ``images`` (``(B, H, W, 3)`` in [0, 1]) with ``clip`` (a :class:`CareClip`).

    ``labels=None`` uses the 80 COCO names plus the CARE concept; the erased concept is added when absent."""
    if images is None or images.ndim != 4 or images.shape[0] == 0:
        raise CareScoreInputError("No images to score: the image batch is empty.")
    care_concept = care_concept.strip()
    label_set = build_label_set([care_concept], labels, erase_concept)
    index = {label.lower(): i for i, label in enumerate(label_set)}
    with torch.no_grad():
        image_features = clip.embed_images(images)
        text_features = clip.embed_texts([label_prompt(label, use_template) for label in label_set])
        similarity = (image_features @ text_features.T).float().cpu()
    top_values, top_indices = similarity.max(dim=1)
    care_column = similarity[:, index[care_concept.lower()]]
    erase_column = None
    if erase_concept and erase_concept.strip():
        erase_column = similarity[:, index[erase_concept.strip().lower()]]
    verdicts = [
        ImageVerdict(label_set[int(top_indices[i])], float(top_values[i]), float(care_column[i]),
                     None if erase_column is None else float(erase_column[i]))
        for i in range(similarity.shape[0])
    ]
    hits = [v.top_label.lower() == care_concept.lower() for v in verdicts]
    erase_rate = None
    if erase_column is not None:
        erase_rate = sum(v.top_label.lower() == erase_concept.strip().lower() for v in verdicts) / len(verdicts)
    return CareScoreResult(
        care_concept=care_concept, care_score=sum(hits) / len(hits), mean_care_similarity=float(care_column.mean()),
        erase_concept=erase_concept.strip() if erase_concept and erase_concept.strip() else None,
        erase_rate=erase_rate, labels=label_set, verdicts=verdicts,
    )
