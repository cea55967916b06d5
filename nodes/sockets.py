"""The pack's own socket types, declared once: the node files that make and take them import them from here."""

from comfy_api.latest import io

# Extra negatives travel from ExtraNegative nodes to the guidance nodes as a tuple of (conditioning, NegativeTerm).
ExtraNegatives = io.Custom("NEGATIVE_GUIDANCE_TERMS")
DynamicNegativeSettings = io.Custom("NEGATIVE_GUIDANCE_DYNAMIC")
TraceHandle = io.Custom("NEGATIVE_GUIDANCE_TRACE")
ProbeHandle = io.Custom("NEGATIVE_GUIDANCE_PROBE")

# The hidden inputs a node asks for so that its messages can name it as the canvas shows it (validation.node_name):
# its id and the workflow with its title.
NAMING_INPUTS = [io.Hidden.unique_id, io.Hidden.extra_pnginfo]
