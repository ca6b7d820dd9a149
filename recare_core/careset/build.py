"""CARE-set construction (spec section 1): the benign words that co-occur with a target concept in its images.

1. every CLIP BPE vocabulary entry is text-embedded once (:mod:`.vocabulary`, cached);
2. each image's top-k most similar entries are counted over the batch;
3. the top-n most frequent words are embedded as words (W) next to the reference word (c); each word's residual
   is its component orthogonal to c;
4. W is mapped to 2-D with t-SNE (init pca, seeded) and clustered there with k-means, as the reference does; the
   k_each_side clusters with the lowest mean residual norm (near-synonyms of the target) and the highest
   (unrelated noise) are dropped;
5. inside each kept cluster of at least min_cluster_size words, word i is dropped when the leave-one-out mean of
   the others, projected orthogonal to c, has a squared norm above (1 + alpha) times the mean of the same quantity
   over the other members;
6. each kept word t gives the anchor prompt ``A {t}`` and the retain prompt ``A photo of {t}`` (objects) or
   ``A painting of {t}`` (styles).

Departures from the reference, all deliberate: entries are embedded with ``</w>`` removed (the reference passes
``person</w>`` to the tokenizer, which reads the marker as the extra text ``</ w >``); each image's top-k is
taken among the entries that word hygiene (:mod:`.word_hygiene`, optional) leaves as candidates, so with hygiene
on it holds up to k distinct whole English words; entries that stand for the same word (``person``/``persons``,
or ``person``/``person</w>`` with hygiene off) count once per image; words are embedded in step 3 as clean text;
the t-SNE perplexity is capped at n_words - 1 so that short candidate lists work (the reference's 30 applies from
31 words on); k_each_side = 0 drops no cluster (in the reference it drops all of them).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..progress import ProgressCallback, StopCallback, check_stop
from .clip_model import CareClip, check_image_batch
from .selection import CareSetInputError, REFINED_AWAY, select_care_words
from .vocabulary import vocabulary_embeddings
from .word_hygiene import clean_vocabulary, restrict_to_candidates

CONCEPT_TYPES = ("object", "style")
RETAIN_KIND = {"object": "photo", "style": "painting"}
RETAIN_TEMPLATE = {"object": "A photo of {}", "style": "A painting of {}"}
ANCHOR_TEMPLATE = "A {}"

@dataclass
class CareSetSettings:
    """The knobs of CARE-set construction; the defaults are the reference implementation's."""

    top_k_per_image: int = 50
    top_n_tokens: int = 100
    n_clusters: int = 7
    k_each_side: int = 1
    alpha: float = 0.01
    min_cluster_size: int = 2
    seed: int = 42
    word_hygiene: bool = True
    candidate_words: tuple[str, ...] = ()
    """When given, only these words can be CARE words (after word hygiene); empty: the whole vocabulary. For a
    CLIP that learned only some of its vocabulary (the toy world's), or a curated list of benign words."""

    def validate(self) -> None:
        for name in ("top_k_per_image", "top_n_tokens", "n_clusters", "min_cluster_size"):
            if int(getattr(self, name)) < 1:
                raise CareSetInputError(f"{name} must be at least 1 (it is {getattr(self, name)}).")
        if self.k_each_side < 0 or self.alpha < 0 or self.seed < 0:
            raise CareSetInputError("k_each_side, alpha and seed must not be negative.")
        if self.top_n_tokens < self.n_clusters:
            raise CareSetInputError(
                f"top_n_tokens ({self.top_n_tokens}) is smaller than n_clusters ({self.n_clusters}): "
                "k-means cannot make more clusters than there are words.")
        if 2 * min(self.k_each_side, self.n_clusters // 2) >= self.n_clusters:
            raise CareSetInputError(
                f"k_each_side={self.k_each_side} with n_clusters={self.n_clusters} drops every cluster; "
                f"use k_each_side < n_clusters / 2.")


def parse_word_list(text: str) -> tuple[str, ...]:
    """The words of a comma- or line-separated list, stripped, blanks and repeats left out, in order."""
    words = [word.strip() for word in re.split(r"[,\n]", text)]
    return tuple(dict.fromkeys(word for word in words if word))


@dataclass
class CareCandidate:
    """One of the top-n words with everything the selection looked at."""

    word: str
    count: int
    similarity: float
    residual_norm: float
    cluster: int
    kept: bool
    reason: str
    x: float
    y: float


@dataclass
class ClusterSummary:
    cluster: int
    size: int
    mean_residual: float
    status: str  # "kept", "dropped-low" or "dropped-high"


@dataclass
class CareSet:
    """A CARE-set: anchor and retain prompts, plus (when built here) how every candidate word was judged."""

    reference_word: str
    concept_type: str
    anchor_prompts: list[str]
    retain_prompts: list[str]
    candidates: list[CareCandidate] = field(default_factory=list)
    clusters: list[ClusterSummary] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    clip_identity: str | None = None
    hygiene: dict[str, int] = field(default_factory=dict)
    num_images: int | None = None

    def __post_init__(self) -> None:
        if self.concept_type not in CONCEPT_TYPES:
            raise CareSetInputError(f"concept_type must be 'object' or 'style', not {self.concept_type!r}.")
        for name in ("anchor_prompts", "retain_prompts"):
            prompts = getattr(self, name)
            if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise CareSetInputError(f"A CARE-set needs a non-empty list of {name.replace('_', ' ')}.")

    @classmethod
    def from_words(cls, reference_word: str, concept_type: str, words: list[str], **details: Any) -> "CareSet":
        """Anchor prompts ``A {t}`` and retain prompts ``A photo of {t}`` / ``A painting of {t}`` for ``words``."""
        if concept_type not in CONCEPT_TYPES:
            raise CareSetInputError(f"concept_type must be 'object' or 'style', not {concept_type!r}.")
        return cls(reference_word, concept_type, [ANCHOR_TEMPLATE.format(w) for w in words],
                   [RETAIN_TEMPLATE[concept_type].format(w) for w in words], **details)

    @property
    def words(self) -> list[str]:
        """The CARE words (anchor prompts without their leading ``A ``)."""
        return [p[2:] if p.startswith("A ") else p for p in self.anchor_prompts]

    @property
    def reference_key(self) -> str:
        """The reference word as the reference implementation writes it into JSON keys."""
        return reference_key(self.reference_word)

    def to_reference_json(self) -> dict[str, list[str]]:
        """The reference implementation's ``careset.json`` content."""
        key = self.reference_key
        return {f"{key}_care_word": list(self.anchor_prompts),
                f"{key}_care_word_{RETAIN_KIND[self.concept_type]}": list(self.retain_prompts)}

    def to_json_dict(self) -> dict[str, Any]:
        """The pack's format: the reference's two keys (so the reference trainer reads it too) plus a
        ``recare_careset`` block with words, statistics, settings and the CLIP used."""
        return {**self.to_reference_json(), RICH_BLOCK: {
            "format": RICH_FORMAT, "version": RICH_VERSION,
            "reference_word": self.reference_word, "concept_type": self.concept_type, "words": self.words,
            "clip_identity": self.clip_identity, "num_images": self.num_images, "settings": self.settings,
            "hygiene": self.hygiene, "clusters": [asdict(c) for c in self.clusters],
            "candidates": [asdict(c) for c in self.candidates],
        }}

    @classmethod
    def from_json_dict(cls, data: Any) -> "CareSet":
        """Read the pack's format or the reference's ``careset.json`` (anchor key ``<key>_care_word``, retain key
        containing ``photo`` or ``painting``; found as the reference trainer finds them)."""
        if not isinstance(data, dict):
            raise CareSetInputError("A CARE-set file must hold a JSON object.")
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        retain_keys = [k for k in lists if "photo" in k.lower() or "painting" in k.lower()]
        anchor_keys = [k for k in lists if k not in retain_keys]
        if len(retain_keys) != 1 or len(anchor_keys) != 1:
            raise CareSetInputError(
                "Not a CARE-set file: expected exactly one anchor list ('<word>_care_word') and one retain list "
                f"('<word>_care_word_photo' or '_painting'); found anchor keys {anchor_keys} and retain keys "
                f"{retain_keys}.")
        anchors, retains = lists[anchor_keys[0]], lists[retain_keys[0]]
        rich = data.get(RICH_BLOCK)
        if isinstance(rich, dict):
            if rich.get("format") != RICH_FORMAT or int(rich.get("version", 0)) > RICH_VERSION:
                raise CareSetInputError(
                    f"Unsupported CARE-set format {rich.get('format')!r} version {rich.get('version')!r}.")
            return cls(
                reference_word=str(rich.get("reference_word", "")), concept_type=rich.get("concept_type", "object"),
                anchor_prompts=anchors, retain_prompts=retains,
                candidates=[CareCandidate(**c) for c in rich.get("candidates", [])],
                clusters=[ClusterSummary(**c) for c in rich.get("clusters", [])],
                settings=dict(rich.get("settings") or {}), clip_identity=rich.get("clip_identity"),
                hygiene=dict(rich.get("hygiene") or {}), num_images=rich.get("num_images"))
        anchor_key = anchor_keys[0]
        reference = anchor_key[:-len("_care_word")] if anchor_key.endswith("_care_word") else anchor_key
        concept_type = "style" if "painting" in retain_keys[0].lower() else "object"
        return cls(reference, concept_type, anchors, retains)

    def report(self) -> str:
        return care_set_report(self)


RICH_BLOCK = "recare_careset"
RICH_FORMAT = "comfyui-recare/careset"
RICH_VERSION = 1


def reference_key(word: str) -> str:
    """Lower-cased, spaces removed, only ``[a-z0-9_-]`` kept (the reference's ``keyify``)."""
    return re.sub(r"[^a-z0-9_-]", "", word.strip().lower().replace(" ", ""))


# -- the whole construction ------------------------------------------------------------------------------------
class _Stages:
    """Maps each stage's own (step, total) onto one progress scale of 1000."""

    SCALE = 1000

    def __init__(self, progress: ProgressCallback | None, spans: dict[str, tuple[int, int]]):
        self.progress = progress
        self.spans = spans

    def __call__(self, stage: str) -> ProgressCallback:
        start, span = self.spans[stage]

        def report(step: int, total: int, message: str) -> None:
            if self.progress is not None:
                self.progress(start + span * min(step, total) // max(total, 1), self.SCALE, message)

        return report


def count_top_words(image_features: torch.Tensor, vocabulary: torch.Tensor, word_of: list[str | None],
                    top_k: int) -> Counter:
    """How many images have each candidate word among their ``top_k`` most similar vocabulary entries.

    Only rows with a word count; a word reached by several rows (``person``/``persons``) counts once per image.
    Similarities are computed in float64 and rounded to 1e-12 before a stable sort, so that equal (and equal up
    to summation order) similarities rank by vocabulary row on every machine. Insertion order (image order, then
    rank) breaks frequency ties, as in the reference."""
    rows = torch.tensor([row for row, word in enumerate(word_of) if word is not None])
    candidates = vocabulary[rows].double()
    k = min(top_k, len(rows))
    counter: Counter = Counter()
    for start in range(0, image_features.shape[0], 64):
        similarity = image_features[start:start + 64].double() @ candidates.T
        rounded = torch.round(similarity * 1e12)
        for ranked in torch.sort(-rounded, dim=1, stable=True).indices[:, :k].tolist():
            seen: set[str] = set()
            for index in ranked:
                word = word_of[int(rows[index])]
                if word not in seen:
                    seen.add(word)
                    counter[word] += 1
    return counter


def build_care_set(images: torch.Tensor, clip: CareClip, reference_word: str, concept_type: str = "object",
                   settings: CareSetSettings | None = None, cache_dir: str | None = None,
                   progress: ProgressCallback | None = None, should_stop: StopCallback | None = None,
                   pos_pipeline: Any | None = None) -> CareSet:
    """Build the CARE-set of ``reference_word`` from ``images`` (ComfyUI ``IMAGE`` ``(B, H, W, C)`` in [0, 1])."""
    settings = settings or CareSetSettings()
    settings.validate()
    if concept_type not in CONCEPT_TYPES:
        raise CareSetInputError(f"concept_type must be 'object' or 'style', not {concept_type!r}.")
    reference_word = (reference_word or "").strip()
    if not reference_word or not clip.token_ids(reference_word):
        raise CareSetInputError(
            f"The reference word {reference_word!r} gives no CLIP tokens; type the concept to erase, e.g. 'nudity'.")
    if images is None or not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise CareSetInputError("The image batch is empty: generate images of the concept to erase first.")
    if images.shape[0] < 2:
        raise CareSetInputError(
            "A CARE-set needs several images of the target (the paper uses 500): co-occurrence cannot be counted "
            "on a single image. Generate a batch of images.")
    check_image_batch(images)

    stages = _Stages(progress, {"vocabulary": (0, 700), "hygiene": (700, 50), "images": (750, 150),
                                "words": (900, 100)})
    with clip.float64():  # every embedding in float64, rounded once: the same on every machine
        return _build(images, clip, reference_word, concept_type, settings, cache_dir, stages, should_stop,
                      pos_pipeline)


def _build(images: torch.Tensor, clip: CareClip, reference_word: str, concept_type: str, settings: CareSetSettings,
           cache_dir: str | None, stages: _Stages, should_stop: StopCallback | None, pos_pipeline: Any | None
           ) -> CareSet:
    vocabulary = vocabulary_embeddings(clip, cache_dir, progress=stages("vocabulary"), should_stop=should_stop)
    stages("hygiene")(0, 1, "word hygiene")
    hygiene = clean_vocabulary(clip.raw_vocabulary(), reference_word, enabled=settings.word_hygiene,
                               pos_pipeline=pos_pipeline)
    if settings.candidate_words:
        hygiene = restrict_to_candidates(hygiene, settings.candidate_words)
        if not hygiene.allowed_rows:
            raise CareSetInputError(
                f"None of the {len(settings.candidate_words)} candidate words is a vocabulary word that word hygiene "
                f"keeps: give whole English nouns or adjectives the CLIP knows, or clear candidate_words to use "
                f"the whole vocabulary.")
    stages("hygiene")(1, 1, "word hygiene")

    features = []
    report_images = stages("images")
    for start in range(0, images.shape[0], 32):
        check_stop(should_stop, "CARE-set construction stopped by the user.")
        features.append(clip.embed_images(images[start:start + 32]))
        report_images(min(start + 32, images.shape[0]), images.shape[0], "embedding the images")
    image_features = torch.cat(features)
    counter = count_top_words(image_features, vocabulary.matrix, hygiene.word_of, settings.top_k_per_image)
    top = counter.most_common(settings.top_n_tokens)
    if len(top) < max(settings.n_clusters, 2):
        raise CareSetInputError(
            f"Only {len(top)} distinct candidate words were found in the images' top-{settings.top_k_per_image} "
            f"lists, fewer than n_clusters={settings.n_clusters}. Use more images, a larger top_k_per_image, or "
            f"fewer clusters.")
    words = [word for word, _ in top]
    word_features = clip.embed_texts(words).double().numpy()
    reference_feature = clip.embed_texts([reference_word])[0].double().numpy()
    stages("words")(1, 3, "clustering the candidate words")
    selection = select_care_words(word_features, reference_feature, settings.n_clusters, settings.k_each_side,
                                  settings.alpha, settings.min_cluster_size, settings.seed)
    stages("words")(3, 3, "CARE-set ready")
    kept_mask = selection.kept
    kept_words = [word for word, keep in zip(words, kept_mask) if keep]
    if not kept_words:
        raise CareSetInputError(
            "Every candidate word was removed by the cluster rules; lower k_each_side, raise alpha, or use more "
            "images.")
    candidates = [
        CareCandidate(word=word, count=int(count), similarity=float(selection.similarities[i]),
                      residual_norm=float(selection.residual_norms[i]), cluster=int(selection.labels[i]),
                      kept=bool(kept_mask[i]), reason=selection.reason(i), x=float(selection.coords[i, 0]),
                      y=float(selection.coords[i, 1]))
        for i, (word, count) in enumerate(top)
    ]
    clusters = []
    for cluster in selection.cluster_order:
        members = selection.labels == cluster
        status = ("dropped-low" if cluster in selection.dropped_low else
                  "dropped-high" if cluster in selection.dropped_high else "kept")
        clusters.append(ClusterSummary(cluster, int(members.sum()),
                                       float(selection.residual_norms[members].mean()), status))
    hygiene_counts = {**hygiene.removed, **({"plurals counted as their singular": hygiene.merged}
                                            if hygiene.enabled else {})}
    return CareSet.from_words(
        reference_word, concept_type, kept_words, candidates=candidates, clusters=clusters,
        settings={**asdict(settings), "distinct_candidate_words": len(counter),
                  "vocabulary_from_cache": vocabulary.from_cache},
        clip_identity=clip.identity, hygiene=hygiene_counts, num_images=int(images.shape[0]))


# -- report ----------------------------------------------------------------------------------------------------
def care_set_report(care_set: CareSet) -> str:
    """A plain-text account: settings, hygiene, every cluster and why it was kept or dropped, the kept words."""
    lines = [f"CARE-set for '{care_set.reference_word}' ({care_set.concept_type}): {len(care_set.words)} CARE words"]
    if care_set.num_images is not None:
        lines.append(f"built from {care_set.num_images} images with CLIP {care_set.clip_identity}")
    settings = care_set.settings
    if settings:
        lines.append("settings: " + ", ".join(f"{k}={settings[k]}" for k in (
            "top_k_per_image", "top_n_tokens", "n_clusters", "k_each_side", "alpha", "min_cluster_size", "seed",
            "word_hygiene") if k in settings))
        if settings.get("candidate_words"):
            listed = list(settings["candidate_words"])
            lines.append(f"candidate words given ({len(listed)}): " + ", ".join(listed[:30])
                         + (" ..." if len(listed) > 30 else ""))
        if "vocabulary_from_cache" in settings:
            lines.append("vocabulary embeddings: " + ("read from the cache" if settings["vocabulary_from_cache"]
                                                       else "built now and cached for next time"))
    if care_set.hygiene:
        lines.append("word hygiene (vocabulary entries):")
        lines += [f"  {name}: {count}" for name, count in care_set.hygiene.items()]
    if care_set.candidates:
        distinct = settings.get("distinct_candidate_words", "?")
        lines.append(f"candidates: the {len(care_set.candidates)} most frequent of {distinct} words found")
        lines.append("clusters by mean residual norm (low = close to the reference word):")
        for summary in care_set.clusters:
            members = [c for c in care_set.candidates if c.cluster == summary.cluster]
            members.sort(key=lambda c: -c.count)
            status = {"kept": "kept", "dropped-low": "DROPPED (closest: near-synonyms of the target)",
                      "dropped-high": "DROPPED (farthest: unrelated)"}.get(summary.status, summary.status)
            lines.append(f"  cluster {summary.cluster:>2} | {summary.size:>3} words | mean residual "
                         f"{summary.mean_residual:.4f} | {status} | " + ", ".join(c.word for c in members[:8]))
        refined = [c for c in care_set.candidates if c.reason == REFINED_AWAY]
        alpha = settings.get("alpha", "?")
        lines.append(f"refined away inside kept clusters (alpha={alpha}): "
                     + (", ".join(f"{c.word} (cluster {c.cluster})" for c in refined) or "none"))
    else:
        lines.append("(no candidate statistics: this CARE-set came from a file in the reference format)")
    lines.append(f"kept CARE words ({len(care_set.words)}): " + ", ".join(care_set.words))
    lines.append("anchor prompts: " + "; ".join(care_set.anchor_prompts))
    lines.append("retain prompts: " + "; ".join(care_set.retain_prompts))
    return "\n".join(lines)
