"""The pack's code. schedule.py, validation.py and dynamic.py (torch) import no ComfyUI; the rest are its two faces
(guidance.py) and the node files."""

import logging

# The pack's one logger, named after the pack.
log = logging.getLogger("comfyui-negative-guidance")
