"""yoco-eval: a long-context evaluation harness around a full YOCO implementation."""

import os

__version__ = "0.1.0"

# One Triton cache for every GPU of a host. When TRITON_CACHE_DIR is unset, torch.compile points Triton at a
# folder per device index (<inductor cache>/triton/<index>), so the rank on cuda:1 of a torchrun sweep recompiles
# and re-autotunes (fla-core's chunk kernels: about 45 s) what the rank on cuda:0 cached. Cache keys already hold
# the GPU architecture, so sharing is safe; a user's own TRITON_CACHE_DIR wins.
os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".triton", "cache"))
