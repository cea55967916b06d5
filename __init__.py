"""ComfyUI Negative Guidance: three-way negative guidance with a negative-activation window.

ComfyUI imports this folder as a package; everything lives under nodes/.
"""

from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./js"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
