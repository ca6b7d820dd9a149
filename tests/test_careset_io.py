"""CARE-set files: the reference implementation's careset.json and the pack's richer format."""

from __future__ import annotations

import json

import pytest

from recare_core.careset.build import CareCandidate, CareSet, CareSetInputError, ClusterSummary, reference_key
from recare_core.careset.io import CareSetFileError, load_care_set, save_care_set, write_care_set
from recare_core.safe_files import UnsafePathError

# What the reference's utils/dictionary.py writes for --reference_word 'Van Gogh' --prompt_style style.
REFERENCE_STYLE_FILE = {
    "vangogh_care_word": ["A starry", "A sunflower", "A painting"],
    "vangogh_care_word_painting": ["A painting of starry", "A painting of sunflower", "A painting of painting"],
}
REFERENCE_OBJECT_FILE = {
    "nudity_care_word": ["A person", "A woman", "A beach"],
    "nudity_care_word_photo": ["A photo of person", "A photo of woman", "A photo of beach"],
}


def _reference_trainer_keys(data: dict) -> tuple[str, str]:
    """How the reference trainer (utils/recare.py) finds its two lists: list-valued keys, the retain key being
    the one that contains 'photo' or 'painting'; exactly one of each."""
    lists = [k for k, v in data.items() if isinstance(v, list)]
    retain = [k for k in lists if "photo" in k.lower() or "painting" in k.lower()]
    anchor = [k for k in lists if k not in retain]
    assert len(retain) == 1 and len(anchor) == 1
    return anchor[0], retain[0]


def _rich_care_set() -> CareSet:
    candidates = [CareCandidate("person", 9, 0.31, 0.95, 2, True, "kept", 1.0, -2.0),
                  CareCandidate("nude", 8, 0.80, 0.60, 0, False, "dropped: near-synonyms", 3.0, 4.0)]
    clusters = [ClusterSummary(0, 1, 0.6, "dropped-low"), ClusterSummary(2, 1, 0.95, "kept")]
    return CareSet.from_words("Nudity", "object", ["person"], candidates=candidates, clusters=clusters,
                              settings={"top_k_per_image": 50, "seed": 42}, clip_identity="ViT-B-32/openai",
                              hygiene={"stop words": 302}, num_images=12)


@pytest.mark.parametrize("document, concept_type, words", [
    (REFERENCE_STYLE_FILE, "style", ["starry", "sunflower", "painting"]),
    (REFERENCE_OBJECT_FILE, "object", ["person", "woman", "beach"]),
])
def test_reference_file_round_trip(tmp_path, document, concept_type, words):
    source = tmp_path / "careset.json"
    source.write_text(json.dumps(document, indent=2), encoding="utf-8")
    care_set = load_care_set(source)
    assert care_set.concept_type == concept_type and care_set.words == words
    assert care_set.reference_word == next(iter(document))[:-len("_care_word")]
    assert care_set.to_reference_json() == document
    written = save_care_set(care_set, tmp_path / "out", fmt="reference")
    assert json.loads(written.read_text(encoding="utf-8")) == document
    # the pack's format keeps the reference's keys, so the reference trainer reads it unchanged
    rich = json.loads(save_care_set(care_set, tmp_path / "out", fmt="recare").read_text(encoding="utf-8"))
    anchor, retain = _reference_trainer_keys(rich)
    assert {anchor: rich[anchor], retain: rich[retain]} == document


def test_pack_format_round_trip_keeps_every_statistic(tmp_path):
    care_set = _rich_care_set()
    path = save_care_set(care_set, tmp_path)
    loaded = load_care_set(path)
    assert loaded == care_set
    data = json.loads(path.read_text(encoding="utf-8"))
    assert _reference_trainer_keys(data) == ("nudity_care_word", "nudity_care_word_photo")
    assert data["recare_careset"]["candidates"][1]["reason"].startswith("dropped")
    assert data["recare_careset"]["clip_identity"] == "ViT-B-32/openai"


def test_reference_keys_are_normalised_like_the_reference():
    assert reference_key(" Van Gogh ") == "vangogh"
    assert reference_key("Nudity!") == "nudity"
    assert reference_key("Pablo_Picasso-2") == "pablo_picasso-2"
    assert CareSet.from_words("Van Gogh", "style", ["starry"]).to_reference_json() == {
        "vangogh_care_word": ["A starry"], "vangogh_care_word_painting": ["A painting of starry"]}


def test_files_are_never_overwritten(tmp_path):
    care_set = _rich_care_set()
    paths = [save_care_set(care_set, tmp_path, "nudity") for _ in range(3)]
    assert [p.name for p in paths] == ["nudity_00001.json", "nudity_00002.json", "nudity_00003.json"]
    (tmp_path / "nudity_00007.json").write_text("{}", encoding="utf-8")
    assert save_care_set(care_set, tmp_path, "nudity").name == "nudity_00008.json"
    with pytest.raises(CareSetFileError, match="never overwritten"):
        write_care_set(care_set, paths[0])
    assert load_care_set(paths[0]) == care_set


def test_unsafe_prefixes_are_refused_and_subfolders_stay_inside(tmp_path):
    with pytest.raises(UnsafePathError, match=r"filename_prefix '\.\./\.\./evil name' is refused: it goes up"):
        save_care_set(_rich_care_set(), tmp_path / "out", "../../evil name")
    assert not (tmp_path / "evil name_00001.json").exists()
    path = save_care_set(_rich_care_set(), tmp_path / "out", "sub/evil name")
    assert path == (tmp_path / "out" / "sub" / "evil name_00001.json").resolve()


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "is a list in JSON, not an object"),
    (json.dumps({"nudity_care_word": ["A person"]}), "exactly one anchor list"),
    (json.dumps({"a_care_word": ["A x"], "a_care_word_photo": []}), "non-empty list"),
    (json.dumps({**REFERENCE_OBJECT_FILE, "recare_careset": {"format": "other"}}), "Unsupported"),
])
def test_bad_files_are_refused_clearly(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CareSetFileError, match=message):
        load_care_set(path)


def test_missing_file_and_bad_format_name(tmp_path):
    with pytest.raises(CareSetFileError, match="not found"):
        load_care_set(tmp_path / "absent.json")
    with pytest.raises(CareSetFileError, match="Unknown CARE-set format"):
        save_care_set(_rich_care_set(), tmp_path, fmt="yaml")
    with pytest.raises(CareSetInputError, match="concept_type"):
        CareSet.from_words("x", "scene", ["y"])


@pytest.mark.parametrize("content, message", [
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    (json.dumps({"a_care_word": [1, 2], "a_care_word_photo": ["x"]}), "not a CARE-set file"),
    (json.dumps({"a_care_word": ["A x"], "a_care_word_photo": ["y"], "recare_careset": {
        "format": "comfyui-recare/careset", "version": 1, "candidates": [{"nonsense": 1}]}}), "not a CARE-set file"),
    (json.dumps({"a_care_word": ["A x"], "a_care_word_photo": ["y"], "recare_careset": {
        "format": "comfyui-recare/careset", "version": "many"}}), "not a CARE-set file"),
])
def test_hostile_files_are_refused_with_the_file_named(tmp_path, content, message):
    path = tmp_path / "hostile.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CareSetFileError, match=message) as refused:
        load_care_set(path)
    assert "hostile.json" in str(refused.value)


def test_folders_binary_files_and_partial_writes(tmp_path):
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(CareSetFileError, match="folder.json is a folder"):
        load_care_set(tmp_path / "folder.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CareSetFileError, match="binary.json is not a text file"):
        load_care_set(tmp_path / "binary.json")
    (tmp_path / "taken_00001.json").mkdir()  # a folder holding the next name is skipped, never written into
    assert save_care_set(_rich_care_set(), tmp_path, "taken").name == "taken_00002.json"
    assert list((tmp_path / "taken_00001.json").iterdir()) == []
