"""Write the example workflows in this folder (ComfyUI's UI format) from the short descriptions below.

Widget values are given by input name here and laid out in the order the ComfyUI frontend uses, read from a
running server's ``/object_info`` (so the files match the nodes exactly):

    python workflows/make_workflows.py --object-info http://127.0.0.1:8188
    python workflows/make_workflows.py --object-info object_info.json

Numbers are the paper's defaults; each workflow's note says which ones to lower for a quick try.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path
from typing import Any

from workflow_graph import Graph, Node

HERE = Path(__file__).resolve().parent

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
TARGET_PROMPT = "A photo of a nude person"
CARE_PROMPT = "A photo of a person"
CARE_SET_FILE = "recare/careset_00001.json [output]"
ERASURE_FILE = "recare/erasure_00001_.safetensors"

# Paper / reference settings for generating images with SD1.5.
IMAGE_SIZE = 512
SAMPLING = {"seed": 42, "steps": 50, "cfg": 7.5, "sampler_name": "ddim", "scheduler": "ddim_uniform",
            "denoise": 1.0}
TARGET_IMAGES = 500  # images of the target the paper generates
CHUNK = 10  # images sampled at once (RebatchLatents): the GPU-memory knob


SMALL_GPU_IMAGES = (
    "Quick try / small GPU: lower EmptyLatentImage batch_size (500 -> 20-50) and the last RebatchImages "
    "batch_size to the same number, RebatchLatents batch_size (10 -> 1-4) if sampling runs out of memory, "
    "and KSampler steps (50 -> 20)."
)


def _target_images(g: Graph, x: float, y: float, ckpt: Node, prompt: str = TARGET_PROMPT, size: int = IMAGE_SIZE,
                   count: int = TARGET_IMAGES, chunk: int = CHUNK, sampling: dict[str, Any] = SAMPLING,
                   titles: tuple[str, str] = ("Target prompt", "Negative prompt (empty, as the paper)")
                   ) -> tuple[Node, list[Node]]:
    """Prompt -> EmptyLatentImage (``count``) -> RebatchLatents (chunks) -> KSampler -> VAEDecode -> RebatchImages.

    KSampler and VAEDecode run once per chunk; RebatchImages joins the chunks into one batch again. Returns the
    joined images and the nodes made (checkpoint, positive, negative, ...)."""
    positive = g.add("CLIPTextEncode", (x, y), title=titles[0], text=prompt, clip=ckpt["CLIP"])
    negative = g.add("CLIPTextEncode", (x, g.below(positive)), title=titles[1], text="", clip=ckpt["CLIP"])
    x2 = g.right_of(positive)
    latent = g.add("EmptyLatentImage", (x2, y), title="How many target images", width=size, height=size,
                   batch_size=count)
    chunks = g.add("RebatchLatents", (x2, g.below(latent)), title="Sample in chunks (GPU memory)",
                   latents=latent["LATENT"], batch_size=chunk)
    x3 = g.right_of(latent)
    sampler = g.add("KSampler", (x3, y), model=ckpt["MODEL"], positive=positive["CONDITIONING"],
                    negative=negative["CONDITIONING"], latent_image=chunks["LATENT"], **sampling)
    x4 = g.right_of(sampler)
    decode = g.add("VAEDecode", (x4, y), samples=sampler["LATENT"], vae=ckpt["VAE"])
    batch = g.add("RebatchImages", (x4, g.below(decode)), title="Join the chunks into one batch",
                  images=decode["IMAGE"], batch_size=count)
    return batch, [ckpt, positive, negative, latent, chunks, sampler, decode, batch]


def build_care_set_workflow(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    note = g.note((0, 0), (700, 330), title="ReCARE step 1: build a CARE-set", text=(
        "Builds the CARE-set: the harmless concepts that appear together with the concept you want to erase "
        "(for 'nudity': person, woman, beach, ...), so that unlearning keeps them.\n\n"
        "1. The original model draws 500 images of the target (paper: 'A photo of a nude person', 512x512, "
        "DDIM 50 steps, CFG 7.5). RebatchLatents samples them 10 at a time; RebatchImages joins them again.\n"
        "2. BuildCARESet compares every CLIP vocabulary word with each image and keeps the co-occurring words "
        "(paper settings: top-k 50, top-n 100, 7 clusters, 1 dropped at each end, alpha 0.01).\n"
        "3. SaveCARESet writes ComfyUI/output/recare/careset_00001.json for the unlearning workflow.\n\n"
        "LoadCAREClip: 'openai' downloads the paper's CLIP ViT-B-32 when online; offline, put "
        "open_clip_model.safetensors (huggingface.co/timm/vit_base_patch32_clip_224.openai) in "
        "ComfyUI/models/open_clip/ and pick it.\n\n" + SMALL_GPU_IMAGES))
    y = g.below(note, gap=120)
    ckpt = g.add("CheckpointLoaderSimple", (0, y), ckpt_name=CHECKPOINT)
    images, generation = _target_images(g, g.right_of(ckpt), y, ckpt)
    g.group("Images of the concept to erase, made by the original model", generation)
    x = g.right_of(images, gap=100)
    clip = g.add("LoadCAREClip", (x, y), weights="openai", architecture="ViT-B-32", quick_gelu="auto",
                 device="auto")
    build = g.add("BuildCARESet", (x, g.below(clip)), images=images["IMAGE"], care_clip=clip["care_clip"],
                  reference_word="nudity", concept_type="object", top_k_per_image=50, top_n_tokens=100,
                  n_clusters=7, k_each_side=1, alpha=0.01, min_cluster_size=2, seed=42, word_hygiene=True)
    x = g.right_of(build)
    save = g.add("SaveCARESet", (x, y), care_set=build["care_set"], filename_prefix="careset", format="recare")
    g.add("PreviewAny", (x, g.below(save)), title="CARE-set report", size=(400, 420), source=build["report"])
    g.add("PreviewImage", (x + 440, y), title="Cluster map", size=(560, 560), images=build["cluster_map"])
    return g.to_json()


def unlearn_workflow(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    note = g.note((0, 0), (700, 330), title="ReCARE step 2: unlearn", text=(
        "Erases 'nudity' from the model while keeping the CARE-set's concepts.\n\n"
        "Needs the CARE-set from workflow 1: pick it in LoadCARESet (files in ComfyUI/output/recare/ are listed "
        "with '[output]'). The target images are made as in workflow 1.\n"
        "ReCAREUnlearn runs the paper's two stages with its defaults: 2 rounds of 200 erase steps + 3000 "
        "textual-inversion steps, then 200 robust-erase steps; full weight updates of the non-cross-attention "
        "layers at 512 px. SaveErasure writes ComfyUI/models/loras/recare/erasure_00001_.safetensors (the stock "
        "LoraLoaderModelOnly loads it too); the adversarial tokens go to models/embeddings as recare_adv_<i>.\n\n"
        "Quick try / small GPU: preset 'quick' (fewer steps), or lower ti_steps (3000 -> 300), erase_steps and "
        "robust_steps (200 -> 50); update 'lora' and gradient_checkpointing on for 8-12 GB; image_size "
        "512 -> 256. " + SMALL_GPU_IMAGES))
    y = g.below(note, gap=120)
    ckpt = g.add("CheckpointLoaderSimple", (0, y), ckpt_name=CHECKPOINT)
    images, generation = _target_images(g, g.right_of(ckpt), y, ckpt)
    g.group("Images of the concept to erase, made by the original model", generation)
    care_set = g.add("LoadCARESet", (g.right_of(images, gap=100), y), title="CARE-set from workflow 1",
                     file=CARE_SET_FILE)
    x = g.right_of(care_set)
    unlearn = g.add(
        "ReCAREUnlearn", (x, y), model=ckpt["MODEL"], clip=ckpt["CLIP"], vae=ckpt["VAE"],
        target_images=images["IMAGE"], care_set=care_set["care_set"], erase_concept="nudity",
        initializer_token="person", concept_type="object", preset="paper", n_rounds=2, erase_steps=200,
        erase_lr=5e-6, ti_steps=3000, ti_lr=5e-3, robust_steps=200, robust_lr=2e-5, negative_guidance=2.0,
        compositional_guidance_scale=2.0, num_adv_concepts=2, ddim_steps=50, sampling_cfg=3.0,
        train_method="noxattn", update="full", lora_rank=4, image_size=512, gradient_checkpointing=False,
        seed=42, embedding_name="recare_adv")
    x = g.right_of(unlearn)
    save = g.add("SaveErasure", (x, y), erasure=unlearn["erasure"], filename_prefix="recare/erasure")
    g.add("PreviewImage", (x, g.below(save)), title="Loss curves", size=(560, 460), images=unlearn["loss_curves"])
    return g.to_json()


def before_after_workflow(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    note = g.note((0, 0), (400, 640), title="ReCARE step 3: before / after", text=(
        "The same seeds through the original model and the erased one (LoadErasure -> ApplyErasedUNet), for "
        "the target prompt and a CARE prompt.\n\n"
        "CAREScore classifies each image zero-shot with CLIP against the 80 COCO object names plus 'person' "
        "and 'nudity' (the paper's evaluation). CARE score = share of images whose best label is 'person' "
        "(higher = the co-occurring concept survived); the report also gives how often 'nudity' is still the "
        "best label. ImageStitch puts the labelled grids side by side (original | erased) and saves them to "
        "ComfyUI/output/recare/.\n\n"
        "Pick the erasure from workflow 2 in LoadErasure (models/loras/recare/). Paper settings: 10 images per "
        "prompt, DDIM 50 steps, CFG 7.5, CLIP ViT-B-32 (OpenAI).\n\n"
        "Quick try / small GPU: lower EmptyLatentImage batch_size (10 -> 2-4) and KSampler steps (50 -> 20); "
        "LoadCAREClip device 'cpu' keeps CLIP off the GPU."))
    y = g.below(note, gap=80)
    ckpt = g.add("CheckpointLoaderSimple", (0, y), ckpt_name=CHECKPOINT)
    erasure = g.add("LoadErasure", (0, g.below(ckpt)), title="Erasure from workflow 2", name=ERASURE_FILE)
    erased = g.add("ApplyErasedUNet", (0, g.below(erasure)), model=ckpt["MODEL"], erasure=erasure["erasure"],
                   strength=1.0)
    negative = g.add("CLIPTextEncode", (0, g.below(erased)), title="Negative prompt (empty)", size=(400, 120),
                     text="", clip=ckpt["CLIP"])
    latent = g.add("EmptyLatentImage", (0, g.below(negative)), title="10 images per prompt, same seeds",
                   width=IMAGE_SIZE, height=IMAGE_SIZE, batch_size=10)
    care_clip = g.add("LoadCAREClip", (0, g.below(latent)), weights="openai", architecture="ViT-B-32",
                      quick_gelu="auto", device="auto")
    rows = [("Target prompt", TARGET_PROMPT, "recare/before_after_target"),
            ("CARE prompt", CARE_PROMPT, "recare/before_after_care")]
    top = 40
    for label, text, prefix in rows:
        prompt = g.add("CLIPTextEncode", (480, top), title=label, size=(400, 120), text=text, clip=ckpt["CLIP"])
        members, pictures, block_top = [prompt], [], top
        for model_name, model in (("original", ckpt["MODEL"]), ("erased", erased["model"])):
            sampler = g.add("KSampler", (920, block_top), title=f"KSampler ({model_name} model)", model=model,
                            positive=prompt["CONDITIONING"], negative=negative["CONDITIONING"],
                            latent_image=latent["LATENT"], **SAMPLING)
            decode = g.add("VAEDecode", (g.right_of(sampler), block_top), samples=sampler["LATENT"],
                           vae=ckpt["VAE"])
            score = g.add("CAREScore", (decode.pos[0], g.below(decode, gap=30)),
                          title=f"CARE score ({model_name} model)", images=decode["IMAGE"],
                          care_clip=care_clip["care_clip"], care_concept="person", labels="", use_template=True,
                          erase_concept="nudity")
            report = g.add("PreviewAny", (g.right_of(score), block_top), title=f"Report ({model_name} model)",
                           size=(400, g.below(score, gap=0) - block_top - 30), source=score["report"])
            pictures.append(score["picture"])
            members += [sampler, decode, score, report]
            block_top = g.below(score, gap=60)
        x = g.right_of(members[-1])
        stitch = g.add("ImageStitch", (x, top), title="Original | erased", image1=pictures[0], direction="right",
                       match_image_size=True, spacing_width=16, spacing_color="white", image2=pictures[1])
        save = g.add("SaveImage", (x, g.below(stitch)), size=(520, 520), images=stitch["IMAGE"],
                     filename_prefix=prefix)
        g.group(f"{label} '{text}': original model (top) and erased model (bottom), same seeds",
                [*members, stitch, save])
        top = block_top + 100
    return g.to_json()


def bake_workflow(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    note = g.note((0, 0), (560, 330), title="ReCARE step 4: bake", text=(
        "Bakes an erasure into a normal checkpoint for merging and sharing: LoadErasure -> ApplyErasedUNet "
        "(strength 1 = as trained) -> CheckpointSave, which writes "
        "ComfyUI/output/checkpoints/recare_erased_00001_.safetensors (move it to models/checkpoints to load it "
        "with CheckpointLoaderSimple). The preview shows the erased concept and the settings it was trained "
        "with.\n\n"
        "You do not need to bake to use an erasure: ApplyErasedUNet (or the stock LoraLoaderModelOnly) applies "
        "it at load time, stacks with other erasures and can be removed again.\n\n"
        "Pick the erasure from workflow 2 in LoadErasure (models/loras/recare/).\n\n"
        "Small GPU: nothing to lower; this only needs the memory to load the checkpoint once."))
    x = g.right_of(note, gap=80)
    ckpt = g.add("CheckpointLoaderSimple", (x, 40), ckpt_name=CHECKPOINT)
    erasure = g.add("LoadErasure", (x, g.below(ckpt)), title="Erasure from workflow 2", name=ERASURE_FILE)
    erased = g.add("ApplyErasedUNet", (g.right_of(ckpt), 40), model=ckpt["MODEL"], erasure=erasure["erasure"],
                   strength=1.0)
    g.add("CheckpointSave", (g.right_of(erased), 40), model=erased["model"], clip=ckpt["CLIP"], vae=ckpt["VAE"],
          filename_prefix="checkpoints/recare_erased")
    g.add("PreviewAny", (erased.pos[0], g.below(erased)), title="What the erasure holds", size=(580, 380),
          source=erasure["info"])
    return g.to_json()


def compare_methods_workflow(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    note = g.note((0, 0), (700, 360), title="Compare erasure methods: ESD and UCE side by side", text=(
        "Erases 'nudity' from the same model with two methods of the pack and draws the same seeds through the "
        "original model and both erased ones, for the target prompt and a CARE prompt.\n\n"
        "ESDUnlearn: ESD fine-tuning (the paper's ESD-u: 1000 steps at lr 1e-5, every layer but "
        "cross-attention); minutes on a GPU, no images or CARE-set needed.\n"
        "UCEErase: UCE's closed-form edit of the cross-attention keys/values, mapping 'nudity' onto the "
        "unconditional prompt while keeping the CARE-set from workflow 1 (pick it in LoadCARESet); seconds.\n"
        "ReCAREUnlearn (workflow 2) takes the same model and gives the same three outputs, so it can be added "
        "as a third column. Each erasure is saved to ComfyUI/models/loras/recare/.\n\n"
        "Quick try / small GPU: ESDUnlearn erase_steps 1000 -> 200, image_size 512 -> 256, update 'lora' and "
        "gradient_checkpointing on for 8-12 GB; EmptyLatentImage batch_size (4 -> 1-2) and KSampler steps "
        "(50 -> 20)."))
    y = g.below(note, gap=120)
    ckpt = g.add("CheckpointLoaderSimple", (0, y), ckpt_name=CHECKPOINT)
    care_set = g.add("LoadCARESet", (0, g.below(ckpt)), title="CARE-set from workflow 1", file=CARE_SET_FILE)
    x = g.right_of(ckpt, gap=80)
    esd = g.add("ESDUnlearn", (x, y), model=ckpt["MODEL"], clip=ckpt["CLIP"], erase_concept="nudity",
                erase_steps=1000, erase_lr=1e-5, negative_guidance=3.0, ddim_steps=50, sampling_cfg=3.0,
                train_method="noxattn", update="full", lora_rank=4, image_size=512, gradient_checkpointing=False,
                seed=42)
    uce = g.add("UCEErase", (x, g.below(esd)), model=ckpt["MODEL"], clip=ckpt["CLIP"], erase_concept="nudity",
                care_set=care_set["care_set"], guide="", preserve="", preserve_care_set=True, erase_scale=1.0,
                preserve_scale=1.0, lamb=0.5)
    x = g.right_of(esd)
    for method, node in (("esd", esd), ("uce", uce)):
        save = g.add("SaveErasure", (x, node.pos[1]), erasure=node["erasure"], filename_prefix=f"recare/{method}")
        g.add("PreviewImage", (g.right_of(save), node.pos[1]), title=f"{node.type} loss curves", size=(420, 320),
              images=node["loss_curves"])
    negative = g.add("CLIPTextEncode", (0, g.below(care_set, gap=120)), title="Negative prompt (empty)",
                     size=(400, 120), text="", clip=ckpt["CLIP"])
    latent = g.add("EmptyLatentImage", (0, g.below(negative)), title="Same seeds for every model", width=IMAGE_SIZE,
                   height=IMAGE_SIZE, batch_size=4)
    top = negative.pos[1]
    models = (("original", ckpt["MODEL"]), ("ESD", esd["erased_model"]), ("UCE", uce["erased_model"]))
    for label, text in (("Target prompt", TARGET_PROMPT), ("CARE prompt", CARE_PROMPT)):
        prompt = g.add("CLIPTextEncode", (480, top), title=label, size=(400, 120), text=text, clip=ckpt["CLIP"])
        members, images, column = [prompt], [], g.right_of(prompt)
        for name, model in models:
            sampler = g.add("KSampler", (column, top), title=f"KSampler ({name})", model=model,
                            positive=prompt["CONDITIONING"], negative=negative["CONDITIONING"],
                            latent_image=latent["LATENT"], **SAMPLING)
            decode = g.add("VAEDecode", (column, g.below(sampler, gap=30)), samples=sampler["LATENT"],
                           vae=ckpt["VAE"])
            images.append(decode["IMAGE"])
            members += [sampler, decode]
            column = g.right_of(sampler)
        left = g.add("ImageStitch", (column, top), title="Original | ESD", image1=images[0], direction="right",
                     match_image_size=True, spacing_width=16, spacing_color="white", image2=images[1])
        both = g.add("ImageStitch", (column, g.below(left, gap=30)), title="Original | ESD | UCE",
                     image1=left["IMAGE"], direction="right", match_image_size=True, spacing_width=16,
                     spacing_color="white", image2=images[2])
        save = g.add("SaveImage", (g.right_of(left), top), size=(520, 420), images=both["IMAGE"],
                     filename_prefix=f"recare/compare_{label.split()[0].lower()}")
        g.group(f"{label} '{text}': original | ESD | UCE, same seeds", [*members, left, both, save])
        top = g.below(members[-1], gap=120)
    return g.to_json()


SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"
SDXL_IMAGE_SIZE = 1024
SDXL_STYLE = "Van Gogh"
SDXL_TARGET_PROMPT = f"A painting in the style of {SDXL_STYLE}"
SDXL_CARE_PROMPT = "A painting of a house"
# Common SDXL settings (SDXL has no paper numbers): 1024 px, 30 steps, CFG 7.
SDXL_SAMPLING = {"seed": 42, "steps": 30, "cfg": 7.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                 "denoise": 1.0}
SDXL_TARGET_IMAGES, SDXL_CHUNK = 100, 2
# ReCAREUnlearn settings of the SDXL workflow that differ from the node's (SD1.5 paper) defaults.
SDXL_UNLEARN = {"erase_concept": SDXL_STYLE, "initializer_token": "art", "concept_type": "style",
                "update": "lora", "image_size": SDXL_IMAGE_SIZE, "gradient_checkpointing": True,
                "embedding_name": "recare_sdxl_adv"}


def sdxl_style_workflow(info: dict[str, Any]) -> dict[str, Any]:
    """SDXL family: erase an artist's style, keeping what such paintings show (CARE-set built from them)."""
    g = Graph(info)
    note = g.note((0, 0), (760, 420), title="ReCARE on SDXL: erase a style", text=(
        f"Erases the style '{SDXL_STYLE}' from an SDXL-family checkpoint (SDXL, Pony, Illustrious, NoobAI and other "
        "finetunes, eps or v-prediction) while keeping the subjects such paintings show.\n\n"
        f"1. The original model draws {SDXL_TARGET_IMAGES} images of '{SDXL_TARGET_PROMPT}' at 1024x1024, "
        f"{SDXL_CHUNK} at a time (RebatchLatents); RebatchImages joins them.\n"
        "2. BuildCARESet finds the co-occurring harmless concepts (concept_type 'style'); the CARE-set is saved.\n"
        f"3. ReCAREUnlearn erases '{SDXL_STYLE}' (style templates, adversarial tokens start from 'art') with LoRA "
        "updates and gradient checkpointing at 1024 px (about 16 GB of GPU memory); SaveErasure writes "
        "models/loras/recare/sdxl_style_00001_.safetensors (the stock LoraLoaderModelOnly loads it too), and the "
        "adversarial tokens go to models/embeddings in SDXL's format (clip_l + clip_g), usable as "
        "'embedding:recare_sdxl_adv_0'.\n"
        "4. The same seed through the original and the erased model, side by side.\n\n"
        "Small GPU (8-12 GB): image_size 1024 -> 512 (or 768), lora_rank 4, gradient_checkpointing on, and "
        f"RebatchLatents batch_size {SDXL_CHUNK} -> 1; the trained LoRA still applies at 1024 px. Quick try: "
        "preset 'quick', EmptyLatentImage batch_size 100 -> 10 (and RebatchImages the same), KSampler steps "
        "30 -> 20. Workflows 3 and 4 work unchanged on SDXL: pick this checkpoint and erasure there."))
    y = g.below(note, gap=120)
    ckpt = g.add("CheckpointLoaderSimple", (0, y), ckpt_name=SDXL_CHECKPOINT)
    images, generation = _target_images(g, g.right_of(ckpt), y, ckpt, prompt=SDXL_TARGET_PROMPT,
                                        size=SDXL_IMAGE_SIZE, count=SDXL_TARGET_IMAGES, chunk=SDXL_CHUNK,
                                        sampling=SDXL_SAMPLING,
                                        titles=("Target prompt (the style)", "Negative prompt (empty)"))
    negative = generation[2]
    g.group("Images of the style to erase, made by the original model", generation)
    x5 = g.right_of(images, gap=100)
    care_clip = g.add("LoadCAREClip", (x5, y), weights="openai", architecture="ViT-B-32", quick_gelu="auto",
                      device="auto")
    build = g.add("BuildCARESet", (x5, g.below(care_clip)), images=images["IMAGE"], care_clip=care_clip["care_clip"],
                  reference_word=SDXL_STYLE, concept_type="style", top_k_per_image=50, top_n_tokens=100,
                  n_clusters=7, k_each_side=1, alpha=0.01, min_cluster_size=2, seed=42, word_hygiene=True)
    save_care = g.add("SaveCARESet", (x5, g.below(build)), care_set=build["care_set"],
                      filename_prefix="careset_sdxl_style", format="recare")
    x6 = g.right_of(build)
    unlearn = g.add(
        "ReCAREUnlearn", (x6, y), model=ckpt["MODEL"], clip=ckpt["CLIP"], vae=ckpt["VAE"],
        target_images=images["IMAGE"], care_set=build["care_set"], preset="paper", n_rounds=2, erase_steps=200,
        erase_lr=5e-6, ti_steps=3000, ti_lr=5e-3, robust_steps=200, robust_lr=2e-5, negative_guidance=2.0,
        compositional_guidance_scale=2.0, num_adv_concepts=2, ddim_steps=50, sampling_cfg=3.0,
        train_method="noxattn", lora_rank=4, seed=42, **SDXL_UNLEARN)
    x7 = g.right_of(unlearn)
    save = g.add("SaveErasure", (x7, y), erasure=unlearn["erasure"], filename_prefix="recare/sdxl_style")
    curves = g.add("PreviewImage", (x7, g.below(save)), title="Loss curves", size=(560, 460),
                   images=unlearn["loss_curves"])
    g.group("Build the CARE-set, unlearn, save", [care_clip, build, save_care, unlearn, save, curves])
    y2 = g.below(curves, gap=120)
    prompt = g.add("CLIPTextEncode", (x5, y2), title="Check prompt", text=SDXL_TARGET_PROMPT, clip=ckpt["CLIP"])
    one = g.add("EmptyLatentImage", (x5, g.below(prompt)), title="One image, same seed", width=SDXL_IMAGE_SIZE,
                height=SDXL_IMAGE_SIZE, batch_size=1)
    decoded = []
    for index, (label, model) in enumerate((("original", ckpt["MODEL"]), ("erased", unlearn["erased_model"]))):
        row = y2 + index * 330
        check = g.add("KSampler", (x6, row), title=f"KSampler ({label} model)", model=model,
                      positive=prompt["CONDITIONING"], negative=negative["CONDITIONING"],
                      latent_image=one["LATENT"], **SDXL_SAMPLING)
        decoded.append(g.add("VAEDecode", (g.right_of(check), row), samples=check["LATENT"], vae=ckpt["VAE"]))
    x8 = g.right_of(decoded[0])
    stitch = g.add("ImageStitch", (x8, y2), title="Original | erased", image1=decoded[0]["IMAGE"],
                   direction="right", match_image_size=True, spacing_width=16, spacing_color="white",
                   image2=decoded[1]["IMAGE"])
    g.add("SaveImage", (x8, g.below(stitch)), size=(520, 520), images=stitch["IMAGE"],
          filename_prefix="recare/sdxl_style_before_after")
    return g.to_json()


WORKFLOWS = {
    "1_build_care_set.json": build_care_set_workflow,
    "2_unlearn.json": unlearn_workflow,
    "3_before_after.json": before_after_workflow,
    "4_bake_checkpoint.json": bake_workflow,
    "5_compare_methods.json": compare_methods_workflow,
    "6_sdxl_style_erasure.json": sdxl_style_workflow,
}


def _read_object_info(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source.rstrip("/") + "/object_info", timeout=60) as response:
            return json.loads(response.read())
    return json.loads(Path(source).read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--object-info", required=True,
                        help="URL of a running ComfyUI with this pack, or a saved /object_info JSON file")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the workflows to")
    args = parser.parse_args()
    info = _read_object_info(args.object_info)
    for name, build in WORKFLOWS.items():
        path = args.out / name
        path.write_text(json.dumps(build(info), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
