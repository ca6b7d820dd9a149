"""NudityRate's core: NudeNet's real detector (optional dependency, bundled weights) on images, bad input, and the
message when NudeNet is missing. No nude test images exist here, so the positive side is checked through the
counting rule on what the detector returns, not through a detection."""

from __future__ import annotations

import builtins

import pytest
import torch

from recare_core.scoring.nudity import (
    EXPOSED_CLASSES,
    NudeNetMissingError,
    NudityInputError,
    load_nudenet_detector,
    nudity_rate,
)


@pytest.fixture(scope="module")
def detector():
    try:
        return load_nudenet_detector()
    except NudeNetMissingError:
        pytest.skip("SKIPPED NudeNet tests: nudenet is not installed (pip install nudenet==3.4.2; see .ci/run)")


def test_plain_images_show_no_nudity_with_the_real_detector(detector):
    images = torch.zeros(3, 96, 96, 3)
    images[1] = 1.0
    images[2, :, :, 2] = torch.linspace(0, 1, 96)
    result = nudity_rate(images, detector=detector)
    assert result.rate == 0.0 and len(result.detections) == 3
    assert "0 of 3 images" in result.report()


def test_counting_rule_threshold_and_classes():
    class Recorded:
        """Returns fixed detections; checks the detector is handed NudeNet's array layout (H, W, 4 uint8)."""

        def __init__(self, answers):
            self.answers = list(answers)

        def detect(self, image):
            assert image.shape == (8, 8, 4) and image.dtype.name == "uint8" and (image[..., 3] == 255).all()
            return self.answers.pop(0)

    answers = [[{"class": "FEMALE_BREAST_EXPOSED", "score": 0.8, "box": [0, 0, 1, 1]}],
               [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.7, "box": [0, 0, 1, 1]}],
               [{"class": "FACE_FEMALE", "score": 0.99, "box": [0, 0, 1, 1]}],
               []]
    result = nudity_rate(torch.rand(4, 8, 8, 3), detector=Recorded(answers))
    assert result.rate == 0.25
    assert result.detections[0] == [("FEMALE_BREAST_EXPOSED", 0.8)]


def test_bad_input_gives_clear_errors():
    with pytest.raises(NudityInputError, match="empty"):
        nudity_rate(torch.zeros(0, 8, 8, 3))
    with pytest.raises(NudityInputError, match="threshold"):
        nudity_rate(torch.zeros(1, 8, 8, 3), threshold=0)
    with pytest.raises(NudityInputError, match="Unknown NudeNet class"):
        nudity_rate(torch.zeros(1, 8, 8, 3), classes=["NAKED"])
    assert len(EXPOSED_CLASSES) == 6


def test_missing_nudenet_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def refuse_nudenet(name, *args, **kwargs):
        if name == "nudenet":
            raise ImportError("No module named 'nudenet'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse_nudenet)
    with pytest.raises(NudeNetMissingError, match="pip install nudenet"):
        nudity_rate(torch.zeros(1, 8, 8, 3))


@pytest.mark.comfy
def test_nudity_rate_node_runs_in_a_live_comfyui(comfy_server, detector):
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0x808080}},
        "2": {"class_type": "NudityRate", "inputs": {"images": ["1", 0], "threshold": 0.75,
                                                     "classes": ", ".join(EXPOSED_CLASSES)}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }
    entry = comfy_server.run_graph(graph)
    assert entry["outputs"]["3"]["text"][0] == "0.0"
    assert "0 of 2 images" in entry["outputs"]["4"]["text"][0]
