"""Test-host workaround: let the CUDA-linked torchvision 0.28 wheel import on CPU-only torch 2.13.

ComfyUI imports torchvision (through comfy/ldm/cosmos) but never runs its detection ops. The wheel registers
kernels for `torchvision::nms`/`qnms` whose schemas live in its missing C++ library, so the import fails with
"operator torchvision::nms does not exist". Defining the two schemas just before torchvision's first import is
enough. Installed into the host venv as a .pth hook by scripts/host.sh; a user's real ComfyUI never needs it.
"""
import importlib.abc
import sys


class _DefineTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch

        library = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            try:
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:
                pass  # already defined: a working torchvision build is present
        _LIBRARIES.append(library)  # keep the registration alive
        return None


_LIBRARIES = []
sys.meta_path.insert(0, _DefineTorchvisionOps())
