"""BuildCARESet, SaveCARESet, LoadCARESet: the CARE-set built from images of the target, on disk and back."""

from __future__ import annotations

import os
from pathlib import Path

from comfy_api.v0_0_2 import io, ui

import folder_paths

from ..recare_core.careset.build import CONCEPT_TYPES, CareSetSettings, build_care_set, parse_word_list
from ..recare_core.careset.io import FORMATS, load_care_set, save_care_set
from ..recare_core.careset.plot import render_cluster_map
from ..recare_core.safe_files import require_inside
from .compat import advanced
from .file_inputs import check_choice
from .training_context import ComfyProgress, interrupted, stops_as_comfy_interrupt
from .types import CATEGORY, CareClipType, CareSetType

OUTPUT_SUBFOLDER = "recare"
OUTPUT_MARK = " [output]"
_DEFAULTS = CareSetSettings()


class BuildCARESet(io.ComfyNode):
    """Finds the benign words that co-occur with the target in its images (ReCARE's CARE-set)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BuildCARESet",
            display_name="Build CARE-Set",
            category=f"{CATEGORY}/care-set",
            description=(
                "Builds the CARE-set: the harmless concepts that co-occur with the concept to erase (for 'nudity': "
                "person, woman, beach, ...), so that unlearning keeps them. Every CLIP vocabulary word is compared "
                "with each image; the words most often among an image's best matches are clustered, the cluster "
                "closest to the reference word (near-synonyms) and the farthest one (noise) are dropped, and "
                "outliers inside clusters are refined away. The first run embeds the 49,408-entry CLIP vocabulary "
                "once and caches it. Defaults are the paper's."
            ),
            inputs=[
                io.Image.Input("images", tooltip="Images of the concept to erase, made by the original model "
                                                 "(the paper uses 500; at least 2)."),
                CareClipType.Input("care_clip", tooltip="The CLIP from LoadCAREClip (paper: ViT-B-32, OpenAI)."),
                io.String.Input("reference_word", default="nudity",
                                tooltip="The concept to erase, as a word or short phrase ('nudity', 'Van Gogh')."),
                io.Combo.Input("concept_type", options=list(CONCEPT_TYPES), default="object",
                               tooltip="'object' writes retain prompts 'A photo of {word}', 'style' writes "
                                       "'A painting of {word}'."),
                io.Int.Input("top_k_per_image", default=_DEFAULTS.top_k_per_image, min=1, max=49408,
                             tooltip="How many best-matching vocabulary words each image contributes."),
                io.Int.Input("top_n_tokens", default=_DEFAULTS.top_n_tokens, min=1, max=10000,
                             tooltip="How many of the most frequent words become candidates."),
                io.Int.Input("n_clusters", default=_DEFAULTS.n_clusters, min=1, max=1000,
                             tooltip="k-means clusters over the t-SNE map of the candidates."),
                io.Int.Input("k_each_side", default=_DEFAULTS.k_each_side, min=0, max=500,
                             tooltip="Clusters dropped at each end of the ranking by mean residual norm: the "
                                     "closest to the reference word (near-synonyms) and the farthest (noise)."),
                io.Float.Input("alpha", default=_DEFAULTS.alpha, min=0.0, max=10.0, step=0.001,
                               tooltip="Refinement margin: a word is dropped when its leave-one-out score exceeds "
                                       "(1 + alpha) times the mean of the others in its cluster."),
                io.Int.Input("min_cluster_size", default=_DEFAULTS.min_cluster_size, min=1, max=10000,
                             tooltip="Clusters smaller than this are not refined."),
                io.Int.Input("seed", default=_DEFAULTS.seed, min=0, max=2**31 - 1,
                             tooltip="Seed of t-SNE and k-means (the result is deterministic for a seed)."),
                io.Boolean.Input("word_hygiene", default=_DEFAULTS.word_hygiene,
                                 tooltip="Keep only whole English words: drop word pieces, punctuation, numbers, "
                                         "stop words and the reference word, and count plurals as their "
                                         "singular. Off = the raw vocabulary, as the reference implementation."),
                advanced(io.String.Input(
                    "candidate_words", default="", multiline=True, optional=True,
                    tooltip="Optional: only these words (comma- or line-separated) can become CARE words, e.g. a "
                            "curated list of harmless words. Empty (default, the paper's): every vocabulary word "
                            "left by word hygiene.")),
            ],
            outputs=[
                CareSetType.Output(display_name="care_set", tooltip="The CARE words with their anchor and retain "
                                                                    "prompts, for ReCAREUnlearn or SaveCARESet."),
                io.String.Output(display_name="report", tooltip="The kept words, every cluster and why it was kept "
                                                                 "or dropped, and the word-hygiene counts."),
                io.Image.Output(display_name="cluster_map", tooltip="The candidate words on the t-SNE map, coloured "
                                                                    "by cluster; dropped ones crossed out."),
            ],
        )

    @classmethod
    def execute(cls, images, care_clip, reference_word, concept_type, top_k_per_image, top_n_tokens, n_clusters,
                k_each_side, alpha, min_cluster_size, seed, word_hygiene, candidate_words: str = "") -> io.NodeOutput:
        check_choice(concept_type, CONCEPT_TYPES, "concept_type")
        care_clip.require_fits(reference_word, "reference_word")
        settings = CareSetSettings(top_k_per_image, top_n_tokens, n_clusters, k_each_side, alpha, min_cluster_size,
                                   seed, word_hygiene, parse_word_list(candidate_words or ""))
        with stops_as_comfy_interrupt():
            care_set = build_care_set(images, care_clip, reference_word, concept_type, settings,
                                      progress=ComfyProgress(1000), should_stop=interrupted)
        return io.NodeOutput(care_set, care_set.report(), render_cluster_map(care_set))


class SaveCARESet(io.ComfyNode):
    """Writes a CARE-set as JSON under output/recare/, with a counter; never overwrites."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveCARESet",
            display_name="Save CARE-Set",
            category=f"{CATEGORY}/care-set",
            description=(
                "Saves a CARE-set as JSON in ComfyUI/output/recare/ as <prefix>_00001.json, 00002, ... (never "
                "overwriting). 'recare' keeps every statistic and is also readable by the reference implementation; "
                "'reference' is exactly the reference's careset.json."
            ),
            inputs=[
                CareSetType.Input("care_set", tooltip="The CARE-set to save (BuildCARESet or LoadCARESet)."),
                io.String.Input("filename_prefix", default="careset",
                                tooltip="File name start, may include subfolders ('/'); files go under "
                                        "output/recare/. Absolute paths, '..', hidden names and links leading "
                                        "out of output/recare/ are refused."),
                io.Combo.Input("format", options=list(FORMATS), default="recare",
                               tooltip="'recare': anchor/retain lists plus words, counts, similarities, residual "
                                       "norms, clusters, settings and the CLIP used. 'reference': only the two "
                                       "lists, as the reference's careset.json."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Where the file was written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, care_set, filename_prefix, format) -> io.NodeOutput:
        check_choice(format, FORMATS, "format")
        root = Path(folder_paths.get_output_directory()) / OUTPUT_SUBFOLDER
        path = save_care_set(care_set, root, filename_prefix, format, "filename_prefix", "output/recare")
        return io.NodeOutput(str(path), ui=ui.PreviewText(f"saved {path.name} ({len(care_set.words)} CARE words)"))


def care_set_files() -> list[str]:
    """JSON files in ComfyUI's input folder, and under output/recare/ (annotated ``[output]``)."""
    choices = []
    for base, suffix in ((folder_paths.get_input_directory(), ""), (folder_paths.get_output_directory(), OUTPUT_MARK)):
        top = os.path.join(base, OUTPUT_SUBFOLDER) if suffix else base
        for directory, _, names in os.walk(top):
            for name in names:
                if name.lower().endswith(".json"):
                    relative = os.path.relpath(os.path.join(directory, name), base).replace(os.sep, "/")
                    choices.append(relative + suffix)
    return sorted(choices)


class LoadCARESet(io.ComfyNode):
    """Reads a CARE-set JSON file in the pack's or the reference's format."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoadCARESet",
            display_name="Load CARE-Set",
            category=f"{CATEGORY}/care-set",
            description=(
                "Loads a CARE-set JSON file from ComfyUI/input/ or ComfyUI/output/recare/: the pack's own format or "
                "the reference implementation's careset.json (anchor key '<word>_care_word', retain key "
                "'<word>_care_word_photo' or '_painting')."
            ),
            inputs=[io.Combo.Input("file", options=care_set_files(),
                                   tooltip="A CARE-set JSON from ComfyUI/input/ or from output/recare/ ([output]).")],
            outputs=[
                CareSetType.Output(display_name="care_set", tooltip="The loaded CARE-set."),
                io.String.Output(display_name="report", tooltip="What the file holds."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, file) -> str:
        if file not in care_set_files():
            return "not an option"
        path, _, _ = _listed_path(file)
        return f"{os.path.getmtime(path)}:{os.path.getsize(path)}" if os.path.isfile(path) else "missing"

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        return io.NodeOutput(*_load_listed(file))


def _load_listed(file: str) -> tuple:
    """The CARE-set (and its report) of ``file``, a value of LoadCARESet's list, read only from inside
    ComfyUI/input/ or output/recare/ (links followed)."""
    check_choice(file, care_set_files(), "file")
    path, root, label = _listed_path(file)
    care_set = load_care_set(require_inside(path, [root], f"file {file!r}", label))
    return care_set, care_set.report()


def _listed_path(file: str) -> tuple[Path, Path, str]:
    """(path, the folder it must stay in, that folder's name) of a value of :func:`care_set_files`."""
    if file.endswith(OUTPUT_MARK):
        relative = file[: -len(OUTPUT_MARK)]
        return Path(folder_paths.get_output_directory()) / relative, \
            Path(folder_paths.get_output_directory()) / OUTPUT_SUBFOLDER, "output/recare"
    return Path(folder_paths.get_input_directory()) / file, Path(folder_paths.get_input_directory()), "input"


NODES = [BuildCARESet, SaveCARESet, LoadCARESet]
