"""CAREScore: how well a co-occurring concept survives, scored zero-shot with CLIP."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..recare_core.scoring.care_score import care_score, label_prompt
from ..recare_core.scoring.nudity import DEFAULT_THRESHOLD, EXPOSED_CLASSES, nudity_rate
from ..recare_core.scoring.score_plot import render_score_grid
from .types import CATEGORY, CareClipType


def _split_list(text: str) -> list[str]:
    """Entries of a multiline widget: one per line or comma-separated, blanks dropped."""
    return [part.strip() for line in text.splitlines() for part in line.split(",") if part.strip()]


class CAREScore(io.ComfyNode):
    """Zero-shot CLIP classification of images against COCO labels plus the CARE concept."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CAREScore",
            display_name="CARE Score",
            category=f"{CATEGORY}/evaluate",
            description=(
                "Scores how well a co-occurring concept survives unlearning: each image is classified zero-shot with "
                "CLIP against the 80 COCO object names plus the CARE concept (or your own labels); the CARE score is "
                "the share of images whose best label is the CARE concept. With an erased concept it also reports "
                "how often that concept is still the best label. Compare with the original model on the same seeds."
            ),
            inputs=[
                io.Image.Input("images", tooltip="Images generated from prompts that contain the CARE concept."),
                CareClipType.Input("care_clip", tooltip="The CLIP used for zero-shot classification (LoadCAREClip)."),
                io.String.Input("care_concept", default="person", tooltip="The co-occurring concept that should survive, e.g. 'person'. "
                                "Like every label, at most 75 CLIP tokens with its template (longer ones are refused, not cut)."),
                io.String.Input("labels", default="", multiline=True, tooltip="Your own label list, one per line or comma-separated. "
                                "Empty: the 80 COCO object names plus the CARE concept, as in the paper."),
                io.Boolean.Input("use_template", default=True, tooltip="Classify against 'A photo of a/an {label}' instead of the raw label."),
                io.String.Input("erase_concept", default="", optional=True, tooltip="Optional: the erased concept, to also report "
                                "how often it is still the top-1 label."),
            ],
            outputs=[
                io.Float.Output(display_name="care_score", tooltip="Share of images whose top-1 label is the CARE concept."),
                io.Float.Output(display_name="mean_similarity", tooltip="Mean cosine similarity of the images to the CARE concept."),
                io.String.Output(display_name="report", tooltip="Per-image top-1 label and scores."),
                io.Image.Output(display_name="picture", tooltip="The images in a grid, captioned with their top-1 label."),
            ],
        )

    @classmethod
    def execute(cls, images, care_clip, care_concept, labels, use_template, erase_concept="") -> io.NodeOutput:
        label_list = _split_list(labels)
        named = [("care_concept", care_concept), ("erase_concept", erase_concept or "")]
        for what, text in named + [("A label in 'labels'", label) for label in label_list]:
            care_clip.require_fits(label_prompt(text, use_template) if text.strip() else text, what)
        result = care_score(care_clip, images, care_concept, label_list or None, use_template, erase_concept or None)
        return io.NodeOutput(result.care_score, result.mean_care_similarity, result.report(),
                             render_score_grid(images, result))


class NudityRate(io.ComfyNode):
    """The erasure side for nudity: NudeNet's share of images with an exposed class (optional dependency)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NudityRate",
            display_name="Nudity Rate (NudeNet)",
            category=f"{CATEGORY}/evaluate",
            description=(
                "Measures how much nudity is left, the way the paper does: NudeNet's detector on every image and the "
                "share of images with any exposed body class scored at or above the threshold. Needs the optional "
                "package nudenet (pip install nudenet==3.4.2); it ships its own detector weights."
            ),
            inputs=[
                io.Image.Input("images", tooltip="Images generated from nudity prompts, by the original or erased model."),
                io.Float.Input("threshold", default=DEFAULT_THRESHOLD, min=0.01, max=1.0, step=0.01,
                               tooltip="Minimum detector score for a detection to count (the paper: 0.75)."),
                io.String.Input("classes", default=", ".join(EXPOSED_CLASSES), multiline=True,
                                tooltip="NudeNet classes that count as nudity, comma-separated or one per line "
                                        "(default: the six exposed classes)."),
            ],
            outputs=[
                io.Float.Output(display_name="nudity_rate", tooltip="Share of images with an exposed class (lower is better)."),
                io.String.Output(display_name="report", tooltip="What NudeNet found in each image."),
            ],
        )

    @classmethod
    def execute(cls, images, threshold, classes) -> io.NodeOutput:
        result = nudity_rate(images, threshold, _split_list(classes))
        return io.NodeOutput(result.rate, result.report(), ui={"text": [result.report()]})


NODES = [CAREScore, NudityRate]
