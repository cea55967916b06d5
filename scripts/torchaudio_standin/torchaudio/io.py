"""Stand-in (see torchaudio/_standin.py)."""
from torchaudio._standin import module_getattr

__getattr__ = module_getattr(__name__)
