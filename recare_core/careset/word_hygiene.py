"""Word hygiene for the CARE-set candidates: which CLIP vocabulary entries may become CARE words.

With hygiene on (the default) an entry survives when it is a whole word (BPE entries ending in ``</w>``; sub-word
fragments go), is made of letters (punctuation, symbols, emoji and numbers go), is longer than one letter, is not an
English stop word, is an English dictionary word (it, its singular or its lemma is in the WordNet-derived
``lemma_index`` of spacy-lookups-data; this removes word-ending pieces such as ``anist</w>`` from ``pianist``, and
hashtag run-ons), and is not the reference word. Plural nouns are merged into their singular (``persons`` →
``person``): spaCy's noun rules (``lemma_rules``/``lemma_exc``) and its POS-free lookup table (``lemma_lookup``),
both shipped by ``spacy-lookups-data``, must agree, which keeps ``painting`` apart from ``paint``. Everything works
offline with spaCy's English stop words and number rules and those tables (no trained pipeline needed; the noun
rules are applied on sets, as spaCy's rule lemmatizer applies them on lists). A part-of-speech filter (drop verbs,
adverbs, pronouns, ...) runs only when a trained English pipeline such as ``en_core_web_sm`` is installed.

With hygiene off the entries are used as the reference uses them; only entries that read the same once ``</w>``
is removed (``person``/``person</w>``) are counted once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from .clip_model import decode_bpe_entry

log = logging.getLogger(__name__)

DROPPED_POS = frozenset({"VERB", "AUX", "ADV", "ADP", "CCONJ", "SCONJ", "DET", "PRON", "PART", "INTJ", "NUM",
                         "PUNCT", "SYM"})
"""Parts of speech that are not concepts one can draw; removed when a trained pipeline tags the words."""


class HygieneError(ValueError):
    """The vocabulary has no usable candidate words left."""


@dataclass
class HygieneResult:
    """``word_of[i]``: the candidate word vocabulary row i counts for, or None when the row is not a candidate."""

    word_of: list[str | None]
    removed: dict[str, int] = field(default_factory=dict)
    merged: int = 0
    enabled: bool = True
    pos_pipeline: str | None = None

    @property
    def allowed_rows(self) -> list[int]:
        return [row for row, word in enumerate(self.word_of) if word is not None]

    def summary(self) -> str:
        header = "word hygiene: " + ("on" if self.enabled else "off")
        if self.enabled:
            header += f" (part-of-speech filter: {self.pos_pipeline or 'off, no trained spaCy pipeline installed'})"
        lines = [header]
        lines += [f"  {name}: {count} removed" for name, count in self.removed.items()]
        if self.enabled:
            lines.append(f"  plurals counted as their singular (persons -> person): {self.merged}")
        lines.append(f"  candidate entries left: {len(self.allowed_rows)} "
                     f"({len(set(w for w in self.word_of if w is not None))} distinct words)")
        return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def _lemma_tables() -> dict[str, Any]:
    """spacy-lookups-data's English tables: ``lookup`` (POS-free lemma per form), noun ``rules`` and
    ``exceptions``, and ``dictionary``/``nouns`` (base forms of the WordNet-derived ``lemma_index``, as sets)."""
    from spacy.lookups import load_lookups

    try:
        lookups = load_lookups("en", ["lemma_lookup", "lemma_rules", "lemma_exc", "lemma_index"], strict=True)
    except (OSError, ValueError, ImportError) as error:
        raise HygieneError(
            "spaCy's English lemma tables are missing: pip install spacy-lookups-data (or turn word hygiene off)."
        ) from error
    index = lookups.get_table("lemma_index")
    return {
        "lookup": lookups.get_table("lemma_lookup"),
        "rules": [tuple(rule) for rule in lookups.get_table("lemma_rules").get("noun", [])],
        "exceptions": lookups.get_table("lemma_exc").get("noun", {}),
        "nouns": frozenset(index.get("noun", [])),
        "dictionary": frozenset(word for pos in ("noun", "adj", "verb", "adv") for word in index.get(pos, [])),
    }


def noun_rule_lemma(word: str) -> str:
    """``word``'s lemma as a noun by spaCy's English rule lemmatizer (exceptions first, then suffix rules whose
    result is a known noun, then other suffix results), computed on sets instead of spaCy's lists."""
    tables = _lemma_tables()
    known, unknown = [], []
    for old, new in tables["rules"]:
        if word.endswith(old):
            form = word[:len(word) - len(old)] + new
            if form and (form in tables["nouns"] or not form.isalpha()):
                if form in tables["nouns"]:
                    known.insert(0, form)
                else:
                    known.append(form)
            elif form:
                unknown.append(form)
    forms = list(dict.fromkeys(known))
    for form in tables["exceptions"].get(word, []):
        if form not in forms:
            forms.insert(0, form)
    return (forms or unknown or [word])[0]


@functools.lru_cache(maxsize=None)
def singular(word: str) -> str:
    """``word`` as a singular noun when spaCy's noun rules and its lookup table agree on it, else ``word``."""
    lowered = word.lower()
    looked_up = _lemma_tables()["lookup"].get(lowered, lowered)
    if looked_up == lowered:
        return lowered
    return looked_up if noun_rule_lemma(lowered) == looked_up else lowered


def is_dictionary_word(word: str) -> bool:
    """True when ``word``, its singular or its looked-up lemma is an English dictionary base form."""
    tables = _lemma_tables()
    dictionary = tables["dictionary"]
    return word in dictionary or singular(word) in dictionary or tables["lookup"].get(word, word) in dictionary


@functools.lru_cache(maxsize=1)
def installed_trained_pipeline() -> Any | None:
    """A trained English spaCy pipeline (``en_core_web_*``) when one is installed, else None."""
    import spacy

    for name in sorted(spacy.util.get_installed_models()):
        if name.startswith("en_core_web"):
            try:
                return spacy.load(name, exclude=["parser", "ner", "lemmatizer"])
            except Exception as error:  # a broken install must not stop the CARE-set
                log.warning("spaCy pipeline %s is installed but failed to load (%s); no POS filter.", name, error)
    return None


def _is_number(text: str) -> bool:
    from spacy.lang.en.lex_attrs import like_num

    return like_num(text) or any(char.isdigit() for char in text)


def reference_lemmas(reference_word: str) -> set[str]:
    """The words that count as the reference word itself: the whole phrase squashed (``vangogh``) and each of its
    non-stop words, singular."""
    from spacy.lang.en.stop_words import STOP_WORDS

    parts = [part for part in "".join(c if c.isalpha() else " " for c in reference_word.lower()).split()]
    lemmas = {singular(part) for part in parts if part not in STOP_WORDS}
    if parts:
        lemmas.add("".join(parts))
    return lemmas


def clean_vocabulary(raw_entries: list[str], reference_word: str, enabled: bool = True,
                     pos_pipeline: Any | None = None) -> HygieneResult:
    """Decide which vocabulary rows are CARE-word candidates and which word each one counts for.

    ``raw_entries`` are the BPE entries in token-id order (``person</w>``); they are judged by the text they stand
    for (byte-level BPE decoded as UTF-8). ``pos_pipeline`` (a spaCy ``Language`` with a tagger) enables the
    part-of-speech filter; by default an installed ``en_core_web_*`` pipeline is used."""
    if not enabled:
        word_of: list[str | None] = []
        seen: set[str] = set()
        for entry in raw_entries:
            text = entry.replace("</w>", "")
            word_of.append(None if text in seen else text)
            seen.add(text)
        result = HygieneResult(word_of, {"identical once </w> is removed": word_of.count(None)}, enabled=False)
    else:
        if pos_pipeline is None:
            pos_pipeline = installed_trained_pipeline()
        word_of, removed, merged = _filtered_words(tuple(raw_entries), pos_pipeline)
        word_of = list(word_of)
        removed = dict(removed)
        dropped_reference = reference_lemmas(reference_word)
        removed["the reference word itself"] = 0
        for row, word in enumerate(word_of):
            if word is not None and word in dropped_reference:
                word_of[row] = None
                removed["the reference word itself"] += 1
        pipeline_name = None
        if pos_pipeline is not None:
            meta = getattr(pos_pipeline, "meta", {})
            pipeline_name = f"{meta.get('lang', 'xx')}_{meta.get('name', 'pipeline')}"
        result = HygieneResult(word_of, removed, merged, enabled=True, pos_pipeline=pipeline_name)
    if not result.allowed_rows:
        raise HygieneError("Word hygiene removed every vocabulary entry; no candidate CARE words are left.")
    return result


def restrict_to_candidates(result: HygieneResult, candidate_words: tuple[str, ...] | list[str]) -> HygieneResult:
    """``result`` with every row whose word is not in ``candidate_words`` (compared lower-case) removed; it may
    leave no row."""
    allowed = {word.strip().lower() for word in candidate_words if word.strip()}
    word_of = [word if word is not None and word.lower() in allowed else None for word in result.word_of]
    dropped = sum(word is not None for word in result.word_of) - sum(word is not None for word in word_of)
    removed = {**result.removed, "not in the candidate words": dropped}
    return dataclasses.replace(result, word_of=word_of, removed=removed)


@functools.lru_cache(maxsize=4)
def _filtered_words(raw_entries: tuple[str, ...], pos_pipeline: Any | None
                    ) -> tuple[tuple[str | None, ...], tuple[tuple[str, int], ...], int]:
    """The reference-independent part of :func:`clean_vocabulary` (cached: it takes seconds for 49k entries)."""
    from spacy.lang.en.stop_words import STOP_WORDS

    removed = {name: 0 for name in ("sub-word fragments", "numbers", "punctuation, symbols and mixed entries",
                                    "single letters", "stop words", "word-ending fragments and non-dictionary words")}
    if pos_pipeline is not None:
        removed["not a noun or adjective (part of speech)"] = 0
    words: list[str | None] = [None] * len(raw_entries)
    texts: dict[int, str] = {}
    for row, entry in enumerate(raw_entries):
        if not entry.endswith("</w>"):
            removed["sub-word fragments"] += 1
            continue
        text = decode_bpe_entry(entry[:-len("</w>")]).lower()
        if _is_number(text):
            removed["numbers"] += 1
            continue
        if not text.isalpha():
            removed["punctuation, symbols and mixed entries"] += 1
            continue
        lemma = singular(text)
        if len(lemma) == 1 or len(text) == 1:
            removed["single letters"] += 1
        elif text in STOP_WORDS or lemma in STOP_WORDS:
            removed["stop words"] += 1
        elif not is_dictionary_word(text):
            removed["word-ending fragments and non-dictionary words"] += 1
        else:
            words[row], texts[row] = lemma, text
    if pos_pipeline is not None:
        rows = [row for row, word in enumerate(words) if word is not None]
        for row, doc in zip(rows, pos_pipeline.pipe([words[row] for row in rows], batch_size=1000)):
            if len(doc) and doc[0].pos_ in DROPPED_POS:
                words[row] = None
                removed["not a noun or adjective (part of speech)"] += 1
    merged = sum(1 for row, text in texts.items() if words[row] is not None and words[row] != text)
    return tuple(words), tuple(removed.items()), merged
