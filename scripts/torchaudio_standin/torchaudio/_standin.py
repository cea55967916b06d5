"""Test-host stand-in for torchaudio: importable, raises as soon as anything in it is used.

ComfyUI 0.33.0 imports torchaudio eagerly (comfy/sd.py → the LTX audio VAE; comfy/text_encoders/gemma4.py), but no
torchaudio wheel fits torch 2.13.0 on CPU. The pack and its tests never touch audio. Installed only into the
0.33.0 test venv by scripts/host.sh; a user's real ComfyUI has the real torchaudio.
"""


def unavailable(qualified_name: str):
    """A stand-in for a torchaudio function or class: calling or instantiating it raises."""

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"{qualified_name}: torchaudio is a stand-in in this test host (no wheel fits "
                               "torch 2.13.0 on CPU); audio features are not available here")

    Unavailable.__name__ = Unavailable.__qualname__ = qualified_name.rsplit(".", 1)[-1]
    return Unavailable


def module_getattr(module_name: str):
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return unavailable(f"{module_name}.{name}")

    return __getattr__
