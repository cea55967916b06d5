"""ComfyUI Negative Guidance: three-way negative guidance with a negative-activation window.

ComfyUI imports this folder as a package and awaits `comfy_entrypoint`. The nodes are imported inside it, not
at the top, so that pytest (which imports this file because the repository root is a package) can run the pure
tests without ComfyUI.
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes import extension

    return await extension.comfy_entrypoint()


__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
