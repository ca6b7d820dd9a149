"""Custom ComfyUI socket types shared by every node of the pack.

* ``CARE_SET``  – a :class:`recare_core.careset.build.CareSet` (CARE words, prompts, statistics, settings).
* ``ERASURE``   – a :class:`recare_core.erasure.increments.Erasure` (weight deltas plus metadata).
* ``CARE_CLIP`` – a :class:`recare_core.careset.clip_model.CareClip` (joint image-text CLIP used to build and score).
"""

from comfy_api.v0_0_2 import io

CareSetType = io.Custom("CARE_SET")
ErasureType = io.Custom("ERASURE")
CareClipType = io.Custom("CARE_CLIP")

CATEGORY = "ReCARE"
