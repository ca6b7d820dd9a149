"""Vocabulary-embedding time of a real-size CLIP ViT-B-32 (random weights, no download): first build (cache miss)
against the cached second build, and the short-context text tower against the full 77-position context.

    python benchmarks/vocab_embedding.py [--threads N] [--full-context-sample 1024] [--check-file-load]

The 77-position time is measured on a sample of vocabulary entries and scaled to the whole vocabulary.
``--check-file-load`` also writes the random weights to a temporary .safetensors file and loads them back through
``load_care_clip('ViT-B-32', file)`` (checks the offline loading path on the real architecture; ~600 MB on disk).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recare_core.careset.clip_loading import load_care_clip  # noqa: E402
from recare_core.careset.clip_model import CareClip  # noqa: E402
from recare_core.careset.vocabulary import vocabulary_embeddings  # noqa: E402


def random_vit_b_32() -> CareClip:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    return CareClip(model, "ViT-B-32+quickgelu/random-benchmark-seed-0")


def full_context_seconds_per_entry(clip: CareClip, sample: int) -> float:
    entries = list(dict.fromkeys(clip.vocabulary()))[:sample]
    tokens = clip.tokenize(entries)
    start = time.perf_counter()
    with torch.no_grad():
        for chunk in tokens.split(256):
            clip.model.encode_text(chunk)
    return (time.perf_counter() - start) / len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--full-context-sample", type=int, default=1024)
    parser.add_argument("--check-file-load", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

    clip = random_vit_b_32()
    unique = len(set(clip.vocabulary()))
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        first = vocabulary_embeddings(clip, cache_dir)
        first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        second = vocabulary_embeddings(clip, cache_dir)
        second_seconds = time.perf_counter() - start
        size_mb = first.path.stat().st_size / 2**20
    assert not first.from_cache and second.from_cache and torch.equal(first.matrix, second.matrix)
    print(f"vocabulary: {len(first.entries)} entries, {unique} distinct texts embedded, "
          f"matrix {tuple(first.matrix.shape)} fp16, cache file {size_mb:.1f} MiB")
    print(f"first build (short context, cache miss): {first_seconds:.1f} s")
    print(f"second build (read from cache):          {second_seconds:.2f} s")

    per_entry = full_context_seconds_per_entry(clip, args.full_context_sample)
    print(f"77-position context, measured on {args.full_context_sample} entries: {per_entry * 1000:.2f} ms/entry "
          f"-> about {per_entry * unique:.0f} s for the whole vocabulary "
          f"({per_entry * unique / first_seconds:.1f}x the short-context build)")

    if args.check_file_load:
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "ViT-B-32-random.safetensors"
            save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(path))
            start = time.perf_counter()
            loaded = load_care_clip("ViT-B-32", path, quick_gelu=True)
            seconds = time.perf_counter() - start
            words = ["person", "a photo of a dog"]
            difference = (loaded.embed_texts(words) - clip.embed_texts(words)).abs().max().item()
            print(f"load_care_clip('ViT-B-32', file): {seconds:.1f} s, identity {loaded.identity}, "
                  f"max difference to the in-memory model {difference:.1e}")


if __name__ == "__main__":
    main()
