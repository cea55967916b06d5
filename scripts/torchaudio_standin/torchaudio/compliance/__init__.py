"""Stand-in (see torchaudio/_standin.py)."""
import torchaudio.compliance.kaldi  # noqa: F401
from torchaudio._standin import module_getattr

__getattr__ = module_getattr(__name__)
