"""Word hygiene of the CARE-set candidates (spaCy, offline: blank English pipeline + spacy-lookups-data)."""

from __future__ import annotations

import pytest
import spacy

from tiny_models import build_tiny_care_clip
from recare_core.careset.word_hygiene import HygieneError, clean_vocabulary, reference_lemmas, singular


@pytest.fixture(scope="module")
def raw_vocabulary():
    return build_tiny_care_clip(0).raw_vocabulary()


def _rows(raw, *entries):
    return [raw.index(entry) for entry in entries]


def test_filters_remove_what_they_say_and_report_counts(raw_vocabulary):
    result = clean_vocabulary(raw_vocabulary, "Dog")
    word_of = result.word_of
    person, persons, pers = _rows(raw_vocabulary, "person</w>", "persons</w>", "pers")
    assert word_of[person] == "person" and word_of[persons] == "person"  # plural merged into its singular
    assert word_of[pers] is None  # sub-word fragment
    for entry in ("!</w>", "7</w>", "twenty</w>", "the</w>", "x</w>", "anist</w>", "dog</w>", "dogs</w>",
                  "ðŁĺĤ</w>"):
        assert word_of[raw_vocabulary.index(entry)] is None, entry
    for entry in ("painting</w>", "paintings</w>", "beach</w>", "woman</w>", "women</w>"):
        assert word_of[raw_vocabulary.index(entry)] is not None, entry
    assert word_of[raw_vocabulary.index("painting</w>")] == "painting"  # not merged into 'paint'
    assert word_of[raw_vocabulary.index("women</w>")] == "woman"
    removed = result.removed
    assert removed["sub-word fragments"] == sum(not e.endswith("</w>") for e in raw_vocabulary)
    assert removed["the reference word itself"] == 2  # dog, dogs
    assert all(count > 0 for name, count in removed.items() if name != "the reference word itself")
    assert len(raw_vocabulary) == sum(removed.values()) + len(result.allowed_rows)
    assert result.merged > 1000
    summary = result.summary()
    assert "stop words" in summary and "persons -> person" in summary


def test_singular_merges_plurals_only_when_rules_and_lookup_agree():
    assert singular("persons") == "person"
    assert singular("children") == "child"
    assert singular("painting") == "painting"
    assert singular("news") == "news"
    assert singular("leaves") == "leaves"


def test_reference_word_phrases_drop_each_of_their_words(raw_vocabulary):
    assert reference_lemmas("Van Gogh") == {"van", "gogh", "vangogh"}
    result = clean_vocabulary(raw_vocabulary, "Van Gogh")
    for entry in ("van</w>", "vans</w>", "gogh</w>"):
        assert result.word_of[raw_vocabulary.index(entry)] is None
    assert result.removed["the reference word itself"] >= 3


def test_hygiene_off_only_merges_identical_texts(raw_vocabulary):
    result = clean_vocabulary(raw_vocabulary, "nudity", enabled=False)
    person, pers_subword = _rows(raw_vocabulary, "person</w>", "person")
    assert {result.word_of[person], result.word_of[pers_subword]} == {"person", None}
    assert result.word_of[raw_vocabulary.index("!</w>")] is None  # '!' is also an entry without </w>
    result = clean_vocabulary(raw_vocabulary, "dog", enabled=False)
    assert "dog" in result.word_of  # the reference keeps it too
    assert len(set(w for w in result.word_of if w is not None)) == len(result.allowed_rows)


def test_part_of_speech_filter_uses_a_tagging_pipeline(raw_vocabulary):
    # A blank pipeline whose attribute ruler tags like a trained one would, for a few known words.
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    ruler.add(patterns=[[{"LOWER": {"IN": ["run", "quickly", "beach"]}}]], attrs={"POS": "NOUN"})
    ruler.add(patterns=[[{"LOWER": "run"}]], attrs={"POS": "VERB"})
    ruler.add(patterns=[[{"LOWER": "quickly"}]], attrs={"POS": "ADV"})
    without = clean_vocabulary(raw_vocabulary, "nudity")
    result = clean_vocabulary(raw_vocabulary, "nudity", pos_pipeline=nlp)
    assert result.word_of[raw_vocabulary.index("run</w>")] is None
    assert result.word_of[raw_vocabulary.index("quickly</w>")] is None
    assert result.word_of[raw_vocabulary.index("beach</w>")] == "beach"
    tagged_away = sum(word in ("run", "quickly") for word in without.word_of)  # 'runs' counts as 'run'
    assert result.removed["not a noun or adjective (part of speech)"] == tagged_away >= 2
    assert len(result.allowed_rows) == len(without.allowed_rows) - tagged_away
    assert result.pos_pipeline == "en_pipeline"


def test_nothing_left_is_a_clear_error():
    with pytest.raises(HygieneError, match="no candidate CARE words"):
        clean_vocabulary(["pers", "!</w>", "the</w>", "2018</w>"], "nudity")


def test_noun_rule_lemma_is_spacys_rule_lemmatizer(raw_vocabulary):
    from spacy.tokens import Doc

    from recare_core.careset.word_hygiene import noun_rule_lemma

    nlp = spacy.blank("en")
    lemmatizer = nlp.add_pipe("lemmatizer", config={"mode": "rule"})
    nlp.initialize()
    words = [e[:-4] for e in raw_vocabulary[5000:45000:40] if e.endswith("</w>") and e[:-4].isalpha()]
    words += ["persons", "children", "women", "leaves", "glasses", "boxes", "ladies", "species", "mice"]
    for word in words:
        doc = Doc(nlp.vocab, words=[word])
        doc[0].pos_ = "NOUN"
        assert noun_rule_lemma(word) == lemmatizer.rule_lemmatize(doc[0])[0], word
