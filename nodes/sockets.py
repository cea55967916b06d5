"""The pack's own socket types, declared once: the node files that make and take them import them from here."""

from comfy_api.latest import io

# Extra negatives travel from ExtraNegative nodes to the guidance nodes as a tuple of (conditioning, NegativeTerm).
ExtraNegatives = io.Custom("NEGATIVE_GUIDANCE_TERMS")
DynamicNegativeSettings = io.Custom("NEGATIVE_GUIDANCE_DYNAMIC")
TraceHandle = io.Custom("NEGATIVE_GUIDANCE_TRACE")
ProbeHandle = io.Custom("NEGATIVE_GUIDANCE_PROBE")
