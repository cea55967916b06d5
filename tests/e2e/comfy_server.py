"""A real ComfyUI server for the end-to-end tests and the demo, and the helpers to drive it over HTTP.

The server runs ComfyUI's own main.py from the host tree (scripts/host.sh puts it at $COMFYUI_PATH), with a
throw-away --base-directory whose custom_nodes/ holds this pack under the folder name ComfyUI-Manager gives it
(a symlink to the checkout, as a manual `git clone` into custom_nodes would) and the test-only tiny-model node.
The host tree itself is never changed.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
PACK_FOLDER = "comfyui-negative-guidance"  # the registry / ComfyUI-Manager folder name
TINY_NODE_DIR = Path(__file__).resolve().parent / "tiny_models_node"
TINY_NODE_FOLDER = "negguide_test_tiny_models"
TINY_CHECKPOINT_NODE = "NegGuideTestTinyCheckpoint"
WORKFLOWS_DIR = PACK_ROOT / "workflows"
API_WORKFLOWS_DIR = WORKFLOWS_DIR / "api"
PACK_NODE_TYPES = ("NegativeGuidance", "NegativeGuidanceGuider")
# What the canvas shows for them: the pack's messages name a node so (with its id), not by its class name.
SHOWN_NAMES = {"NegativeGuidance": "Negative Guidance (patch)", "NegativeGuidanceGuider": "Negative Guidance Guider",
               "ExtraNegative": "Extra Negative (for Negative Guidance)"}
# Small enough that every example runs its full step count in seconds on a CPU: 64x64 pixels, an 8x8 latent.
TINY_IMAGE_SIZE = 64
STARTUP_TIMEOUT_S = 180


def comfyui_root() -> Path:
    path = Path(os.environ.get("COMFYUI_PATH") or PACK_ROOT / ".host" / "ComfyUI")
    if not (path / "main.py").is_file():
        raise RuntimeError(f"No ComfyUI at {path}: run through scripts/host.sh (test, demo or setup)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ui_workflow_files() -> list[Path]:
    return sorted(WORKFLOWS_DIR.glob("*.json"))


def api_twin(ui_file: Path) -> Path:
    return API_WORKFLOWS_DIR / ui_file.name


@dataclass
class ComfyServer:
    """main.py --cpu on a free loopback port; use as a context manager."""

    base_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def prepare_base_dir(self):
        custom_nodes = self.base_dir / "custom_nodes"
        custom_nodes.mkdir(parents=True, exist_ok=True)
        for folder in ("models/checkpoints", "input", "output", "user/default"):
            (self.base_dir / folder).mkdir(parents=True, exist_ok=True)
        for name, target in ((PACK_FOLDER, PACK_ROOT), (TINY_NODE_FOLDER, TINY_NODE_DIR)):
            link = custom_nodes / name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        # The frontend's first-run templates dialog would cover the canvas.
        settings = self.base_dir / "user" / "default" / "comfy.settings.json"
        if not settings.exists():
            settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))

    def start(self):
        self.prepare_base_dir()
        env = dict(os.environ)
        # One BLAS/OpenMP thread: the tiny models gain nothing from more, and on a 2-core machine shared with
        # the test process spinning OpenMP workers make every op ~100x slower.
        env["OMP_NUM_THREADS"] = "1"
        command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(self.base_dir), "--disable-auto-launch"]
        log = self.log_path.open("w")
        self.process = subprocess.Popen(command, cwd=comfyui_root(), stdout=log, stderr=subprocess.STDOUT,
                                        env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log_text()[-4000:]}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- HTTP ----

    def request(self, path: str, payload=None, method: str | None = None, timeout: float = 30):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
                return response.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                return error.code, json.loads(body)
            except ValueError:
                return error.code, body.decode(errors="replace")

    def get(self, path: str, timeout: float = 30):
        status, body = self.request(path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body}")
        return body

    def set_setting(self, name: str, value):
        status, body = self.request(f"/settings/{name}", value, method="POST")
        if status != 200:
            raise RuntimeError(f"POST /settings/{name}: {status} {body}")

    def run_prompt(self, prompt: dict, timeout: float = 300, extra_data: dict | None = None) -> dict:
        """Queue an API-format prompt and wait for its history entry; raises with the node errors on refusal.
        `extra_data`: what the frontend sends along (its `extra_pnginfo` holds the workflow, with node titles)."""
        status, body = self.request("/prompt", {"prompt": prompt, "client_id": "negguide-tests",
                                                **({"extra_data": extra_data} if extra_data else {})}, method="POST")
        if status != 200:
            raise PromptRefused(status, body)
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log_text()[-3000:]}")

    def fetch_output(self, image: dict) -> bytes:
        query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                        "type": image.get("type", "output")})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=30) as response:
            return response.read()


class PromptRefused(RuntimeError):
    def __init__(self, status, body):
        super().__init__(f"/prompt refused the prompt ({status}): {json.dumps(body, indent=1)[:4000]}")
        self.status = status
        self.body = body


def with_tiny_models(prompt: dict) -> dict:
    """The API prompt as the tests run it: the tiny test checkpoint instead of every CheckpointLoaderSimple,
    and every EmptyLatentImage at 64x64 (step counts, seeds and all guidance settings stay as written)."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["class_type"] = TINY_CHECKPOINT_NODE
            node["inputs"] = {"ckpt_name": node["inputs"]["ckpt_name"]}
        elif node["class_type"] == "EmptyLatentImage":
            node["inputs"]["width"] = node["inputs"]["height"] = TINY_IMAGE_SIZE
    return prompt


def ancestors(prompt: dict, node_id: str) -> set[str]:
    """Every node whose output reaches node_id (links are [source_id, slot] pairs in API format)."""
    found: set[str] = set()
    pending = [node_id]
    while pending:
        for value in prompt[pending.pop()]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in prompt:
                if value[0] not in found:
                    found.add(value[0])
                    pending.append(value[0])
    return found
