"""The process environment, read in ONE place.

Every knob yoco-eval takes from the environment is a field of :class:`Settings`, read once by :func:`get` (and
again only by :func:`reload`, for tests that change the environment). No other module reads ``os.environ``.
Importing the package changes nothing: the one place that writes the environment is
:func:`use_shared_triton_cache`, called explicitly by whatever is about to run GPU kernels (the CLI, the Engine).

| variable | field | default | meaning |
|---|---|---|---|
| ``YOCO_EVAL_THREADS`` | ``threads`` | 1 | intra-op CPU threads of a CLI run |
| ``YOCO_EVAL_TRITON`` | ``triton`` | on | our hand-written Triton kernels (``0``: their PyTorch twins) |
| ``YOCO_EVAL_COMPILE`` | ``compile`` | on | ``torch.compile`` of the elementwise twins on CUDA |
| ``YOCO_EVAL_SWIGLU_GEMM`` | ``swiglu_gemm`` | on | Hopper: up-projection GEMM with SwiGLU in its epilogue |
| ``YOCO_EVAL_GEMV`` | ``gemv`` | on | one-row projections (decode at batch 1) through our GEMV (``0``: cuBLAS) |
| ``YOCO_EVAL_PRECOMPILE`` | ``precompile`` | on | compile a model's Triton kernels in the background when loaded |
| ``YOCO_EVAL_FLA_FULL_AUTOTUNE`` | ``fla_full_autotune`` | off | fla-core's full search, not our Hopper pins |
| ``YOCO_EVAL_COMMIT`` | ``commit`` | git HEAD | the code's commit, for a copied tree whose .git lags |
| ``YOCO_EVAL_CACHE`` | ``cache_dir`` | ``~/.cache/yoco-eval`` | converted assets (e.g. SmolLM2's HF folder) |
| ``TRITON_INTERPRET`` | ``triton_interpret`` | off | Triton's CPU interpreter (tests) |
| ``TRITON_CACHE_DIR`` | ``triton_cache_dir`` | unset | the user's own Triton cache (wins over ours) |
| ``WORLD_SIZE`` ``RANK`` ``LOCAL_RANK`` ``LOCAL_WORLD_SIZE`` | ``world_size`` ... | 1, 0, 0, 1 | torchrun |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from yoco_eval.errors import ConfigError


def _flag(env, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not a switch: set it to 1 or 0 (or unset it)")


def _int(env, name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"environment variable {name}={raw!r} must be an integer >= {minimum}: fix or unset it")
    return value


@dataclass(frozen=True)
class Settings:
    """What the environment says, validated. Build with :meth:`from_env`; read through :func:`get`."""

    threads: int = 1
    triton: bool = True
    compile: bool = True
    swiglu_gemm: bool = True
    gemv: bool = True  # faster than cuBLAS for a decode step's one-row projections (reports/gpu/README.md)
    fla_full_autotune: bool = False
    precompile: bool = True
    triton_interpret: bool = False
    commit: str | None = None
    cache_dir: Path = Path.home() / ".cache" / "yoco-eval"
    triton_cache_dir: str | None = None
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls, env=None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            threads=_int(env, "YOCO_EVAL_THREADS", 1, 1),
            triton=_flag(env, "YOCO_EVAL_TRITON", True),
            compile=_flag(env, "YOCO_EVAL_COMPILE", True),
            swiglu_gemm=_flag(env, "YOCO_EVAL_SWIGLU_GEMM", True),
            gemv=_flag(env, "YOCO_EVAL_GEMV", True),
            fla_full_autotune=_flag(env, "YOCO_EVAL_FLA_FULL_AUTOTUNE", False),
            precompile=_flag(env, "YOCO_EVAL_PRECOMPILE", True),
            triton_interpret=_flag(env, "TRITON_INTERPRET", False),
            commit=env.get("YOCO_EVAL_COMMIT") or None,
            cache_dir=Path(env["YOCO_EVAL_CACHE"]) if env.get("YOCO_EVAL_CACHE") else cls.cache_dir,
            triton_cache_dir=env.get("TRITON_CACHE_DIR") or None,
            world_size=_int(env, "WORLD_SIZE", 1, 1),
            rank=_int(env, "RANK", 0, 0),
            local_rank=_int(env, "LOCAL_RANK", 0, 0),
            local_world_size=_int(env, "LOCAL_WORLD_SIZE", 1, 1),
        )


@lru_cache(maxsize=1)
def get() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()


def reload() -> Settings:
    """Read the environment again (tests that change it; a process that sets a variable before its work)."""
    get.cache_clear()
    return get()


def use_shared_triton_cache() -> str:
    """Point Triton at ONE cache for every GPU of a host (``~/.triton/cache``), unless the user set their own.

    Without it, torch.compile gives Triton a folder per device index, so the rank on cuda:1 of a torchrun sweep
    recompiles and re-autotunes what the rank on cuda:0 cached (about 45 s for fla-core's chunk kernels). Cache
    keys hold the GPU architecture, so sharing is safe. Call before the first kernel compiles; returns the folder.
    """
    folder = get().triton_cache_dir
    if folder is None:
        folder = os.path.join(os.path.expanduser("~"), ".triton", "cache")
        os.environ["TRITON_CACHE_DIR"] = folder
    return folder
