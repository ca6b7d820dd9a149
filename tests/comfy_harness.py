"""Test harness shared by every ComfyUI integration test.

* :func:`find_comfyui` locates a ComfyUI checkout (``COMFYUI_PATH``, then ``~/ComfyUI``, then the newest tree in
  ``../shared/comfyui/``, used through a writable copy in the temp directory).
* :func:`write_tiny_sd15_checkpoint` writes a randomly initialised checkpoint that ComfyUI's stock loader
  detects as SD1.5 (minimal UNet depth, full-size CLIP-L text tower and SD VAE, as the loader requires).
* :func:`import_comfy_in_process` makes ComfyUI importable in this process in CPU mode.
* :class:`ComfyServer` runs a real ``main.py --cpu`` on a free loopback port with its own base directory and
  this pack linked into its ``custom_nodes/``; :meth:`ComfyServer.run_graph` submits an API-format graph.

Random weights prove plumbing only; they say nothing about whether erasure works.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import torch

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-ReCARE"
PACK_PACKAGE = "comfyui_recare"
TINY_CHECKPOINT_NAME = "tiny_sd15.safetensors"


SHARED_COMFYUI = PACK_ROOT.parent / "shared" / "comfyui"


def is_comfyui_tree(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy").is_dir()


def comfyui_version(root: Path) -> str:
    """The release a ComfyUI tree declares in ``comfyui_version.py`` (``"unknown"`` when it has none)."""
    match = re.search(r'__version__\s*=\s*"([^"]+)"', _read_text(root / "comfyui_version.py"))
    return match.group(1) if match else "unknown"


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def shared_comfyui_trees() -> list[Path]:
    """The trees in ``../shared/comfyui/``, newest release first."""
    if not SHARED_COMFYUI.is_dir():
        return []
    trees = [path for path in SHARED_COMFYUI.iterdir() if is_comfyui_tree(path)]
    return sorted(trees, key=lambda path: _version_key(comfyui_version(path)), reverse=True)


def comfyui_copy(root: Path) -> Path:
    """A writable copy of a shared (read-only) tree in the temp directory, made once per release and user:
    ComfyUI creates folders and byte-code inside its tree when imported in-process."""
    copy = Path(tempfile.gettempdir()) / f"recare-comfyui-{comfyui_version(root)}-{os.getuid()}"
    if is_comfyui_tree(copy):
        return copy
    staging = Path(tempfile.mkdtemp(prefix=copy.name + "-", dir=copy.parent))
    shutil.copytree(root, staging / "tree", symlinks=True)
    for folder in [staging / "tree", *(staging / "tree").rglob("*")]:
        if folder.is_dir():
            folder.chmod(folder.stat().st_mode | stat.S_IWUSR)
    try:
        os.rename(staging / "tree", copy)
    except OSError:  # another process made the copy first
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rmdir()
    return copy


def find_comfyui() -> Path | None:
    """The ComfyUI tree the tests run against: ``COMFYUI_PATH``, then ``~/ComfyUI``, then the newest release in
    ``../shared/comfyui/`` (through a writable copy); None when there is none."""
    named = os.environ.get("COMFYUI_PATH")
    if named:
        return Path(named).expanduser() if is_comfyui_tree(Path(named).expanduser()) else None
    if is_comfyui_tree(Path.home() / "ComfyUI"):
        return Path.home() / "ComfyUI"
    shared = shared_comfyui_trees()
    return comfyui_copy(shared[0]) if shared else None


def import_comfy_in_process(comfy_root: Path, cpu: bool = True) -> None:
    """Put ComfyUI first on ``sys.path`` and (by default) switch it to CPU mode before ``comfy.model_management``
    loads."""
    root = str(comfy_root)
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)  # ahead of the repo root, whose `nodes/` package must not shadow ComfyUI's nodes.py
    stale = sys.modules.get("nodes")
    if stale is not None and not str(getattr(stale, "__file__", "")).startswith(root):
        del sys.modules["nodes"]
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu


def import_pack_in_process() -> Any:
    """Import this repository as the package ``comfyui_recare``, the way ComfyUI imports a custom node dir."""
    import importlib.util

    if PACK_PACKAGE in sys.modules:
        return sys.modules[PACK_PACKAGE]
    spec = importlib.util.spec_from_file_location(
        PACK_PACKAGE, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def _random_init_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Weights ~ N(0, 1/fan_in), norm scales 1, biases 0 (deterministic for a given generator)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1:
                param.fill_(1.0)
            else:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)


def _tiny_unet_state_dict(generator: torch.Generator) -> dict[str, torch.Tensor]:
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    import comfy.ops

    unet = UNetModel(
        image_size=32, in_channels=4, model_channels=320, out_channels=4, num_res_blocks=1,
        channel_mult=[1], num_heads=8, use_spatial_transformer=True, transformer_depth=[1],
        transformer_depth_middle=1, transformer_depth_output=[1, 1], context_dim=768, use_linear_in_transformer=False, legacy=False,
        operations=comfy.ops.disable_weight_init,
    )
    _random_init_(unet, generator)
    return {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}


def _sd_vae_state_dict(generator: torch.Generator) -> dict[str, torch.Tensor]:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {
        "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
        "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
    }
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    _random_init_(vae, generator)
    return {f"first_stage_model.{k}": v for k, v in vae.state_dict().items()}


def _clip_l_state_dict(generator: torch.Generator) -> dict[str, torch.Tensor]:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    )
    text_model = CLIPTextModel(config)
    _random_init_(text_model, generator)
    state = text_model.state_dict()
    state.pop("text_model.embeddings.position_ids", None)
    return {f"cond_stage_model.transformer.{k}": v for k, v in state.items()}


def write_tiny_sd15_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write a random SD1.5-format checkpoint (~300 MB fp16) that ``CheckpointLoaderSimple`` accepts."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for part in (_tiny_unet_state_dict, _clip_l_state_dict, _sd_vae_state_dict):
        state.update(part(generator))
    state = {k: v.to(torch.float16).contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
    return path


def unchanged(after: torch.Tensor, before: torch.Tensor) -> bool:
    """Bit-for-bit the same tensor, NaNs included: ComfyUI 0.3.64 leaves SD1's unused CLIP ``text_projection``
    uninitialised (whatever memory held, NaNs among it), and NaN never equals itself under ``torch.equal``."""
    return before.shape == after.shape and before.dtype == after.dtype and torch.equal(
        after.contiguous().view(torch.uint8) if after.is_floating_point() else after,
        before.contiguous().view(torch.uint8) if before.is_floating_point() else before)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GraphError(RuntimeError):
    """A graph submitted to the live server failed; the message carries ComfyUI's own error."""


class ComfyServer:
    """A real ComfyUI server (``main.py --cpu``) on loopback, with its own base directory."""

    def __init__(self, comfy_root: Path, base_dir: Path, checkpoint: Path, python: str = sys.executable):
        self.comfy_root = comfy_root
        self.base_dir = base_dir
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base_dir / "server.log"
        self._python = python
        self._checkpoint = checkpoint
        self._process: subprocess.Popen | None = None
        self._log_file = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def _prepare_base_dir(self) -> None:
        custom_nodes = self.base_dir / "custom_nodes"
        checkpoints = self.base_dir / "models" / "checkpoints"
        for folder in (custom_nodes, checkpoints, self.base_dir / "input", self.base_dir / "output"):
            folder.mkdir(parents=True, exist_ok=True)
        link = custom_nodes / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(PACK_ROOT, target_is_directory=True)
        ckpt_link = checkpoints / TINY_CHECKPOINT_NAME
        if not ckpt_link.exists():
            ckpt_link.symlink_to(self._checkpoint)

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        self._prepare_base_dir()
        self._log_file = open(self.log_path, "w")
        command = [
            self._python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir), "--disable-auto-launch",
            "--database-url", "sqlite:///:memory:",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(
            command, cwd=self.comfy_root, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self._process.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=20)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- HTTP ------------------------------------------------------------------------------------------------
    def get_json(self, route: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(self.url + route, timeout=timeout) as response:
            return json.loads(response.read())

    def post_json(self, route: str, payload: Any, timeout: float = 30) -> Any:
        request = urllib.request.Request(
            self.url + route, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise GraphError(f"{route} answered {error.code}: {error.read().decode(errors='replace')}") from error

    def object_info(self) -> dict[str, Any]:
        return self.get_json("/object_info")

    def widget_defaults(self, node_id: str) -> dict[str, Any]:
        """The default of every required widget input of a node, as this server declares them: a core node can
        gain required inputs between releases (0.33.0's ``LoraModelLoader`` has ``bypass``, 0.3.64's has not), and
        a graph written for one release runs on the other with the new inputs at their defaults, as the web page
        fills them when it loads an older workflow."""
        required = self.object_info()[node_id]["input"].get("required", {})
        return {name: spec[1]["default"] for name, spec in required.items()
                if len(spec) > 1 and isinstance(spec[1], dict) and "default" in spec[1]}

    def core_node_id(self, *ids: str) -> str:
        """The first of ``ids`` this server knows: core renames nodes between releases (0.3.64's ``SaveLoRANode``
        is ``SaveLoRA`` in 0.33.0)."""
        known = self.object_info()
        for node_id in ids:
            if node_id in known:
                return node_id
        raise LookupError(f"this ComfyUI has none of the nodes {', '.join(ids)}")

    def run_graph(self, graph: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """Submit an API-format graph, wait until it finishes, return its history entry (outputs, status).

        Raises :class:`GraphError` with ComfyUI's message when validation or execution fails."""
        prompt_id = self.post_json("/prompt", {"prompt": graph, "client_id": uuid.uuid4().hex})["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") != "success":
                    errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
                    if not errors:
                        raise GraphError(json.dumps(status, indent=1)[-6000:])
                    raise GraphError("\n".join(
                        f"{e.get('node_type')} #{e.get('node_id')}: {e.get('exception_type')}: "
                        f"{e.get('exception_message')}\n{''.join(e.get('traceback', []))[-3000:]}" for e in errors))
                return entry
            if self._process is not None and self._process.poll() is not None:
                raise GraphError(f"ComfyUI died while running the graph:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"graph {prompt_id} did not finish within {timeout:.0f}s")

    def interrupt(self) -> None:
        self.post_json("/interrupt", {})

    def output_files(self, entry: dict[str, Any], node_id: str, kind: str = "images") -> list[Path]:
        """Paths on disk of the files a node of a finished graph reported under ``kind``."""
        items = entry["outputs"].get(node_id, {}).get(kind, [])
        return [self.base_dir / item.get("type", "output") / item.get("subfolder", "") / item["filename"]
                for item in items]


def txt2img_graph(prompt: str, seed: int = 0, steps: int = 2, size: int = 64, batch: int = 1,
                  prefix: str = "recare_test") -> dict[str, Any]:
    """The stock txt2img API graph on the tiny checkpoint: node ids 1..7, SaveImage is node "7"."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CHECKPOINT_NAME}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": steps, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }
