"""Negative Guidance Testbed: a tiny text-to-image model trained on synthetic scenes, shipped with the pack.

It loads in a second on any ComfyUI, needs no download and runs on a CPU, so that what a negative prompt does can be
tried (and tested) without a real checkpoint. The model and its card are in testbed/.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..testbed import model as testbed_model
from .validation import DISPLAY_NAMES


class NegativeGuidanceTestbed(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NegativeGuidanceTestbed",
            display_name=DISPLAY_NAMES["NegativeGuidanceTestbed"],
            category="advanced/guidance/testbed",
            description=(
                "A 5 M-parameter model trained by this pack on synthetic 16×16 scenes (testbed/MODEL_CARD.md), to "
                "try negative prompts on a CPU in seconds, with no download. Not a general image model: it draws one "
                "shape (circle, square, triangle; red, blue, yellow, purple; small or big; left or right) on grass, "
                "sand or sky, often wearing a black hat. Use Empty Latent Image 128×128, cfg 5, 30 steps, "
                "euler; prompts like 'a big red circle on grass, left', negative prompt 'a hat'."),
            inputs=[],
            outputs=[io.Model.Output(tooltip="The testbed's UNet (SD1.5 architecture, v-prediction)."),
                     io.Clip.Output(tooltip="Its text encoder (the SD1 tokenizer, a small CLIP text model)."),
                     io.Vae.Output(tooltip="A fixed decoder: the latent is the picture at 16×16, shown 8× larger.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(*testbed_model.load())


NODES = [NegativeGuidanceTestbed]
