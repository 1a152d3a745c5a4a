"""lm-evaluation-harness adapter: ``lm_eval --model yoco --model_args pretrained=DIR ...``.

A thin :class:`~lm_eval.api.model.TemplateLM`; every model call goes through :class:`yoco_eval.generate.Engine`,
so the same adapter runs YOCO checkpoints (ours or official) and HF Llama folders (loaded into the Transformer
baseline) and the two can be compared on one task.

Model args (``--model_args k=v,...``): the loading keys of :mod:`yoco_eval.loading` (``pretrained``, ``device``,
``dtype``, ``chunk_size``, ``max_length``, ``kv_dtype``, ``attn_backend``, ``retention_backend``, ``tokenizer``:
same names, defaults and errors as ``yoco-eval needle`` and ``generate``), plus ``max_gen_toks`` (256),
``add_bos``, ``prefix_token_id`` and ``truncate``. ``--device`` left out: auto (lm-eval's own ``cuda:0`` default
is read as auto). ``--batch_size`` N or ``auto`` (= 8, capped by ``--max_batch_size``).

Request semantics (same numbers as lm-eval's ``hf`` model on the same weights):
    * ``loglikelihood``: the model reads ``(ctx + cont)[:-1]``; requests sharing that prefix are prefilled once and
      logits are made only at continuation positions (never ``[T, vocab]``).
    * ``loglikelihood_rolling``: a document of at most ``max_length`` tokens is scored in ONE pass conditioned on
      ``prefix_token_id`` (BOS, else EOS); a longer one is cut into lm-eval's disjoint windows
      (``get_rolling_token_windows`` + ``make_disjoint_window``, ``context_len=1``). Documents and windows are
      scored in batches (one too long for :func:`logits_budget` alone goes through ``score_tokens``). The document
      is encoded without special tokens (the prefix token already starts it).
    * ``generate_until``: stop strings (``until``) and EOS end a row; ``max_gen_toks`` tokens at most; batches mix
      prompt lengths without padding leaking into the model.
    * A request that does not fit ``max_length`` is an error unless ``truncate=true``, which left-truncates as the
      ``hf`` model does (generation contexts to ``max_length - max_gen_toks``).
    * Chat templates come from an HF tokenizer folder; the YOCO tokenizer has none, so ``--apply_chat_template``
      is then a one-line error.

Data parallel (``torchrun --nproc_per_node N -m yoco_eval.lm_eval_cli ...`` or ``accelerate launch``): rank and
world size come from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; each rank runs its own copy on ``cuda:LOCAL_RANK``
(or the CPU) and the evaluator's collectives use ``torch.distributed`` (nccl on GPU, gloo on CPU).
"""

from __future__ import annotations

import atexit
import functools
import logging
import sys

import lm_eval.models  # noqa: F401  (built-ins must be registered before ours: lm-eval's registry gotcha)
import torch
import torch.distributed as dist
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from yoco_eval import settings
from yoco_eval.errors import YocoEvalError
from yoco_eval.loading import LoadSpec

log = logging.getLogger(__name__)
AUTO_BATCH_SIZE = 8
LOGITS_BUDGET = 2**27  # fp32 logits elements (rows x continuation x vocab) one scoring batch may hold: 512 MiB
_CLI_DEFAULT_DEVICE = "cuda:0"  # what the lm_eval CLI passes when --device is not given (lm-eval 0.4.13)
ADAPTER_KEYS = ("max_gen_toks", "add_bos", "prefix_token_id", "truncate", "batch_size", "max_batch_size")


def logits_budget(device: torch.device) -> int:
    """Logits elements one scoring batch may hold: :data:`LOGITS_BUDGET` on the CPU; on a GPU also up to a 16th of
    the free memory in bytes (each element costs its logit, its fp32 copy and the log-softmax temporaries)."""
    if device.type != "cuda":
        return LOGITS_BUDGET
    return max(LOGITS_BUDGET, torch.cuda.mem_get_info(device)[0] // 16)


def _one_line_uncaught_errors() -> None:
    """Make an uncaught :class:`YocoEvalError` print one line (the plain ``lm_eval`` command shows tracebacks).

    Installed when lm-eval builds the model from its CLI arguments; errors of every other type keep the normal
    traceback, and a caller that catches the error sees no difference."""
    previous = sys.excepthook
    if getattr(previous, "_yoco_eval", False):
        return

    def hook(kind, value, tb):
        if isinstance(value, YocoEvalError):
            print(f"error: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)

    hook._yoco_eval = True
    sys.excepthook = hook


def _parse_batch_size(batch_size, max_batch_size) -> int:
    text = str(batch_size).strip().lower()
    if text.startswith("auto"):
        return max(1, min(AUTO_BATCH_SIZE, int(max_batch_size or AUTO_BATCH_SIZE)))
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise YocoEvalError(f"bad --batch_size {batch_size!r}: use a positive integer or 'auto'")
    return value


@register_model("yoco", "yoco-eval")
class YOCOLM(TemplateLM):
    """``lm_eval`` model backed by :class:`~yoco_eval.generate.Engine` (see the module docstring for the args)."""

    def __init__(self, pretrained: str | None = None, max_gen_toks: int = 256, add_bos: bool | None = None,
                 prefix_token_id: int | None = None, truncate: bool = False, batch_size: int | str = 1,
                 max_batch_size: int | None = None, **load):  # fmt: skip
        super().__init__()
        spec, _ = LoadSpec.from_model_args({"pretrained": pretrained, **load}, extra=ADAPTER_KEYS,
                                           flag="--model_args", what="yoco")  # fmt: skip
        env = settings.get()
        self._world_size = env.world_size
        self._rank = env.rank if self._world_size > 1 else 0
        self.batch_size = _parse_batch_size(batch_size, max_batch_size)
        self.spec = spec.resolved()
        self._device = torch.device(self.spec.device)
        self.engine = self.spec.load_engine()
        self.tok = self.engine.tokenizer
        hf = getattr(self.tok, "hf_tokenizer", None)
        self.tokenizer = hf  # lm-eval reads chat templates and special tokens from here; None without HF
        self.pretrained, self.dtype, self.truncate = spec.model, self.spec.dtype, bool(truncate)
        self._max_gen_toks = int(max_gen_toks)
        # HF tokenizers keep their own default (what lm-eval's hf model does); ours get BOS like Llama's
        self.add_bos = add_bos if add_bos is not None else (None if hf is not None else self.tok.bos_id is not None)
        self._prefix = prefix_token_id
        self._bos_text = self.tok_decode([self.tok.bos_id], False) if self.tok.bos_id is not None else ""
        if self._world_size > 1:
            self._init_distributed()

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        """What lm-eval calls: ``--model_args`` (``arg_dict``) over its own ``--batch_size``/``--device``.

        lm-eval's CLI passes ``device="cuda:0"`` when ``--device`` is not given; that value is read as ``auto``
        (so a CPU-only machine runs on the CPU, and torchrun ranks take their own GPU). ``device=`` in
        ``--model_args`` and any other ``--device`` value are taken as asked (CUDA on a CPU machine: one line)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if extra.get("device") == _CLI_DEFAULT_DEVICE:
            extra["device"] = "auto"
        _one_line_uncaught_errors()
        return cls(**{**extra, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # -- properties lm-eval reads -------------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        if self._prefix is not None:
            return int(self._prefix)
        return self.tok.bos_id if self.tok.bos_id is not None else self.tok.eos_id

    @property
    def max_length(self) -> int:
        return self.engine.max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return (getattr(self.tokenizer, "name_or_path", None) or self.tok.name).replace("/", "__")

    # -- tokenization ---------------------------------------------------------------------------------------

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        add = self.add_bos if add_special_tokens is None else add_special_tokens
        bos = self.tok.bos_id
        if add_special_tokens is None and self._bos_text and string.startswith(self._bos_text):
            add = False  # the text already starts with BOS (as lm-eval's hf model checks)
        if self.tokenizer is not None:
            ids = self.tokenizer.encode(string, **({} if add is None else {"add_special_tokens": bool(add)}))
            if self.add_bos and add and bos is not None and ids[:1] != [bos]:
                ids = [bos, *ids]
        else:
            ids = self.tok.encode(string, bos=bool(add) and bos is not None)
        return ids

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        tokens = [tokens] if isinstance(tokens, int) else list(tokens)
        if self.tokenizer is not None:
            return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)
        return self.tok.decode(tokens)

    # -- scoring --------------------------------------------------------------------------------------------

    def _check_fits(self, n_input: int, n_cont: int, what: str) -> None:
        if n_cont > self.max_length:
            raise YocoEvalError(
                f"a {what} request scores {n_cont} tokens, more than max_length={self.max_length}: "
                "raise max_length in --model_args"
            )
        if n_input > self.max_length and not self.truncate:
            raise YocoEvalError(
                f"a {what} request needs {n_input} tokens, more than max_length={self.max_length}: raise max_length "
                "or pass truncate=true in --model_args (left-truncates like lm-eval's hf model)"
            )

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        pairs = []
        for _key, ctx, cont in requests:
            self._check_fits(len(ctx) + len(cont) - 1, len(cont), "loglikelihood")
            pairs.append((ctx, cont))
        # fewer rows per batch when continuations are long, so the continuation logits stay within the budget
        per_row = max((len(c) for _, c in pairs), default=1) * self.engine.model.config.vocab_size
        rows = max(1, min(self.batch_size, logits_budget(self.device) // per_row))
        with tqdm(total=len(pairs), disable=disable_tqdm or self.rank != 0, desc="yoco loglikelihood") as bar:
            out = self.engine.loglikelihood(pairs, batch_size=rows, progress=bar.update)
        for (key, _, _), answer in zip(requests, out):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        prefix = self.prefix_token_id
        totals = [0.0] * len(requests)
        windows: list[tuple[int, list[int], list[int]]] = []
        budget = logits_budget(self.device)
        for i, (text,) in enumerate(tqdm([r.args for r in requests], disable=disable_tqdm or self.rank != 0,
                                         desc="yoco loglikelihood_rolling")):  # fmt: skip
            tokens = self.tok_encode(text, add_special_tokens=False)
            if not tokens:
                continue
            # the whole document in one pass (one window: the prefix token, then the document), else lm-eval's
            # disjoint windows; windows are scored in batches
            parts = [([prefix], tokens)] if len(tokens) <= self.max_length else map(
                make_disjoint_window, get_rolling_token_windows(tokens, prefix, self.max_length, 1))  # fmt: skip
            for ctx, cont in parts:
                if len(cont) * self.engine.model.config.vocab_size > budget:
                    totals[i] += self.engine.score_tokens(cont, ctx)  # a long window: logits made chunk by chunk
                else:
                    windows.append((i, ctx, cont))
        if windows:
            scores = self._loglikelihood_tokens([(None, c, t) for _, c, t in windows], disable_tqdm=True)
            for (i, _, _), (logprob, _) in zip(windows, scores):
                totals[i] += logprob
        for r, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, total)
        return totals

    # -- generation -----------------------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        eos_text = self.tok_decode([self.eot_token_id], False) if self.tokenizer is not None else None
        encode = functools.lru_cache(maxsize=None)(self.tok_encode)
        coll = Collator([r.args for r in requests], sort_fn=lambda a: (-len(encode(a[0])), a[0]),
                        group_by="gen_kwargs", group_fn=lambda a: a[1])  # fmt: skip
        out = []
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="yoco generate_until")
        for chunk in coll.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kw = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)
            until = handle_stop_sequences(kw.pop("until", None), eos=eos_text)
            new = int(kw.pop("max_gen_toks"))
            room = self.max_length - new
            if room < 1:
                raise YocoEvalError(
                    f"max_gen_toks={new} leaves no room for a prompt in max_length={self.max_length}: "
                    "lower max_gen_toks or raise max_length"
                )
            prompts = []
            for ctx in contexts:
                ids = encode(ctx)
                self._check_fits(len(ids) + new, 0, "generate_until")
                prompts.append(ids[-room:] or [self.prefix_token_id])
            sample = bool(kw.get("do_sample")) and float(kw.get("temperature", 1.0) or 0.0) > 0
            gens = self.engine.generate(
                prompts, max_new_tokens=new, stop=[s for s in until if s], seed=kw.get("seed"),
                temperature=float(kw.get("temperature", 1.0)) if sample else 0.0,
                top_p=float(kw.get("top_p", 1.0) or 1.0) if sample else 1.0,
                top_k=int(kw.get("top_k", 0) or 0) if sample else 0,
            )  # fmt: skip
            for ctx, gk, g in zip(contexts, all_kwargs, gens):
                text = postprocess_generated_text(g.text, until, None)
                out.append(text)
                self.cache_hook.add_partial("generate_until", (ctx, gk), text)
                bar.update(1)
        bar.close()
        return coll.get_original(out)

    # -- chat templates -------------------------------------------------------------------------------------

    def _template_or_error(self) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            raise YocoEvalError(
                f"tokenizer {self.tok.name} of {self.pretrained} has no chat template: drop --apply_chat_template, "
                "or pass tokenizer=<HF tokenizer folder with a chat template> in --model_args"
            )

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if chat_template is False or chat_template is None:
            return None
        self._template_or_error()
        return super().chat_template(chat_template)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        self._template_or_error()
        kw = dict(tokenize=False, add_generation_prompt=add_generation_prompt,
                  continue_final_message=not add_generation_prompt)  # fmt: skip
        try:
            return self.tokenizer.apply_chat_template(chat_history, **kw)
        except Exception:  # templates that reject a system turn (as lm-eval's hf model retries)
            return self.tokenizer.apply_chat_template([m for m in chat_history if m["role"] != "system"], **kw)

    def get_model_info(self) -> dict:
        m = self.engine.model
        return {"yoco_source": getattr(self.engine, "source", ""), "yoco_arch": type(m).__name__,
                "yoco_config": m.config.name, "yoco_dtype": self.dtype, "yoco_tokenizer": self.tok.name,
                "yoco_num_params": sum(p.numel() for p in m.parameters())}  # fmt: skip

    # -- data parallel --------------------------------------------------------------------------------------

    def _init_distributed(self) -> None:
        if not dist.is_initialized():
            if self._device.type == "cuda":
                torch.cuda.set_device(self._device)
            dist.init_process_group("nccl" if self._device.type == "cuda" else "gloo")
            atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
        log.info("yoco data parallel: rank %d of %d on %s", self._rank, self._world_size, self._device)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._world_size == 1:
            return tensor
        tensor = tensor.reshape(-1) if tensor.dim() == 0 else tensor
        parts = [torch.empty_like(tensor) for _ in range(self._world_size)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        if self._world_size == 1:
            return [obj]
        out = [None] * self._world_size if self._rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self._world_size > 1:
            dist.barrier()
