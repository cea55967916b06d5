"""Stand-in torchaudio for the test host (see _standin.py)."""
# Submodules first: once __getattr__ is defined, `from torchaudio import x` would get a stand-in class instead.
import torchaudio.compliance  # noqa: F401
import torchaudio.functional  # noqa: F401
import torchaudio.io  # noqa: F401
import torchaudio.transforms  # noqa: F401
from torchaudio._standin import module_getattr

__version__ = "0.0.0+negguide.standin"
__getattr__ = module_getattr(__name__)
