"""Headless Chromium (Debian's /usr/bin/chromium) for the browser tests, driven by playwright-core from node.

Python starts one browser for the session and each test runs tests/e2e/browser.mjs, which attaches over the
DevTools protocol, does one scenario in a fresh browser context and prints its findings as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e.comfy_server import PACK_ROOT, free_port

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_SCRIPT = Path(__file__).resolve().parent / "browser.mjs"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def browser_tools_missing() -> str | None:
    """Why the browser tests cannot run here, or None (scripts/setup_e2e.sh installs all three)."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (Debian package chromium)"
    if shutil.which("node") is None:
        return "node is missing"
    if not (PACK_ROOT / "node_modules" / "playwright-core").is_dir():
        return "node_modules/playwright-core is missing (npm ci)"
    return None


@dataclass
class Chromium:
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    profile: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.profile = Path(tempfile.mkdtemp(prefix="negguide-chromium-"))
        self.process = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={self.port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/json/version", timeout=2) as response:
                    json.loads(response.read())
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("chromium's DevTools endpoint did not come up within 60 s")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def run(self, scenario: str, server_url: str, timeout: float = 240, **arguments) -> dict:
        """Run one scenario of browser.mjs against the server; returns what it printed as JSON."""
        request = {"scenario": scenario, "cdp": self.endpoint, "server": server_url, **arguments}
        result = subprocess.run(["node", str(BROWSER_SCRIPT)], input=json.dumps(request), cwd=PACK_ROOT,
                                capture_output=True, text=True, timeout=timeout)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"browser scenario {scenario} failed ({result.returncode}):\n"
                               f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return json.loads(lines[-1])
