"""A small synthetic world in which concept erasure and CARE preservation can be measured on a CPU.

Images of shapes x colours x textures x backgrounds with captions. The target texture (``striped``) only ever
appears on the benign shape ``circle``, which also appears without it — the co-occurrence that makes plain
erasure of ``nudity`` hurt ``person``. The renderer knows every attribute, so trained checkers give ground truth;
a tiny text-to-image model (:mod:`recare_core.toyworld.toy_model`) and a tiny open_clip model are trained on the world.
"""
