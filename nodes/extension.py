"""ComfyUI entry point: gathers every node module's NODES list."""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from . import dynamic_nodes, negative_guidance, testbed_nodes, trace_nodes


class NegativeGuidanceExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*negative_guidance.NODES, *trace_nodes.NODES, *dynamic_nodes.NODES, *testbed_nodes.NODES]


async def comfy_entrypoint() -> NegativeGuidanceExtension:
    return NegativeGuidanceExtension()
