"""The inference engine: chunked prefill, decode, generation and scoring on top of a model and its tokenizer.

Everything that runs a model goes through :class:`Engine` (the needle runner, the lm-eval adapter, the
profiler). It never builds a ``[T, vocab]`` logits tensor for a long T: prefill asks the model for the logits of
one position per row (YOCO then runs its cross-decoder for that position only), and scoring asks only for the
continuation positions.

Batches of prompts with different lengths are right-padded; the padding is marked invalid, so it never reaches a
retention state, a window or an attention score, and each row then decodes from its own position.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from yoco_eval import settings
from yoco_eval.errors import YocoEvalError
from yoco_eval.model import precompile
from yoco_eval.model.cache import Cache, CacheState
from yoco_eval.model.inference import GraphDecoder, ScoringGraph, prepare_for_inference
from yoco_eval.ops.retention import prepare_fla
from yoco_eval.tokenizer import Tokenizer

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}  # fmt: skip


# Prefill chunk length per device type. GPU: 65,536 is the fastest measured prefill (README's results, H100);
# CPU: 2,048 (yoco-needle-7m, 2K and 4K prompts, 1 thread: 1,024-2,048 within noise of each other, 4,096 slower).
DEFAULT_CHUNK_SIZE = {"cuda": 65536, "cpu": 2048}


GRAPH_KEEP_BYTES = 1 << 30  # decode graphs of other sizes kept while their caches hold at most this (Engine)
SCORING_GRAPH_TOKENS = 8192  # the largest padded batch (rows x length) whose scoring forward is captured (Engine)


def default_chunk_size(device) -> int:
    """The documented prefill chunk length for ``device`` (see :data:`DEFAULT_CHUNK_SIZE`)."""
    return DEFAULT_CHUNK_SIZE["cuda" if getattr(device, "type", str(device)).startswith("cuda") else "cpu"]


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise YocoEvalError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclass
class Generation:
    """One generated continuation. ``tokens`` excludes the prompt and the stop token; ``finish_reason`` is
    ``"eos"``, ``"stop"`` (a stop string matched; ``text`` is cut before it) or ``"length"``."""

    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    prefill_s: float = 0.0
    decode_s: float = 0.0
    stats: dict = field(default_factory=dict)


@dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None
    ignore_eos: bool = False  # profiling: always generate max_new_tokens


class _Scoring:
    """The Engine's scoring methods (lm-eval's loglikelihood, rolling perplexity). They run on the Engine's
    ``model``, ``device``, ``max_length``, ``chunk_size``, ``prefill_only`` and ``_pad``."""

    @torch.inference_mode()
    def loglikelihood(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        batch_size: int = 8,
        progress: Callable[[int], None] | None = None,
    ) -> list[tuple[float, bool]]:
        """Log-probability of each continuation given its context, and whether it is the greedy one.

        ``requests``: ``(context_ids, continuation_ids)`` with a non-empty continuation and a context of at least
        one token. The model sees ``(context + continuation)[:-1]``, left-truncated to ``max_length``. Batches are
        sorted by length. Each batch runs one of two ways (:meth:`_flat_wins`): requests that share the same prefix
        (the input without its last ``len(continuation)`` tokens) prefill that prefix once and fork the state for
        each continuation; or, where that saves little, every row's whole input goes through ONE stateless forward.
        """
        self.ready()
        prepared = []
        for i, (ctx, cont) in enumerate(requests):
            if len(cont) == 0:
                raise ValueError(f"request {i}: empty continuation")
            inp = (list(ctx) + list(cont))[-(self.max_length + 1) :][:-1]
            n = len(cont)
            if len(inp) < n:
                raise ValueError(f"request {i}: no context token before the continuation")
            prepared.append((tuple(inp[: len(inp) - n]), inp[len(inp) - n :], list(cont), i))
        groups: dict[tuple, list] = {}
        for item in prepared:
            groups.setdefault(item[0], []).append(item)
        order = sorted(groups, key=lambda k: -(len(k) + max(len(x[1]) for x in groups[k])))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        batch: list[tuple] = []
        rows = 0
        for key in order:
            members = groups[key]
            if batch and rows + len(members) > batch_size:
                self._score_batch(batch, results, progress)
                batch, rows = [], 0
            batch.append((key, members))
            rows += len(members)
        if batch:
            self._score_batch(batch, results, progress)
        return results  # type: ignore[return-value]

    def _flat_wins(self, batch) -> bool:
        """Whether one stateless forward over every row's padded input beats prefill-and-fork for ``batch``: when
        it is at most one prefill chunk and costs at most twice the tokens of sharing the prefixes, or (on a GPU)
        at most 8K tokens in all, where kernel launches, not arithmetic, set the time of a forward (one forward
        instead of two, and no cache to build and fork)."""
        members = [m for _, ms in batch for m in ms]
        flat = len(members) * max(len(m[0]) + len(m[1]) for m in members)
        fork = sum(len(k) for k, _ in batch) + len(members) * max(len(m[1]) for m in members)
        launch_bound = 8192 if self.device.type == "cuda" else 0
        return flat <= self.chunk_size and (flat <= 2 * fork or flat <= launch_bound)

    def _score_batch(self, batch, results, progress) -> None:
        members = [m for _, ms in batch for m in ms]
        if self._flat_wins(batch):
            inputs = [list(m[0]) + m[1] for m in members]
            tokens, lens, _ = self._pad(inputs)
            # position p predicts token p + 1: the continuation's n tokens are predicted from the input's last n
            first = torch.tensor([len(x) - len(m[1]) for x, m in zip(inputs, members)])
            logits = self._rows_at(tokens, first, lens)
        else:
            logits = self._forked_logits(batch)
        out = self._continuation_scores(logits, [m[2] for m in members])
        for m, answer in zip(members, out):
            results[m[3]] = answer
        if progress is not None:
            progress(len(members))

    def _forked_logits(self, batch) -> torch.Tensor:
        """Logits ``[rows, max continuation, vocab]`` of every member of ``batch``: each prefix prefilled once, its
        state forked to its members, their suffixes run together."""
        prefixes = [list(k) for k, _ in batch]
        suffix_rows = [(g, m) for g, (_, members) in enumerate(batch) for m in members]
        max_suffix = max(len(m[1]) for _, m in suffix_rows)
        need = max(len(p) for p in prefixes) + max_suffix
        nonempty = [g for g, p in enumerate(prefixes) if p]
        cache = self.model.setup_cache(len(batch), need)
        if nonempty:
            # prefill every prefix (rows with an empty prefix just stay empty)
            sub = self.model.setup_cache(len(nonempty), need)
            self.prefill_only([prefixes[g] for g in nonempty], sub)
            cache.put_rows(nonempty, sub)
        rows = torch.tensor([g for g, _ in suffix_rows], device=self.device)
        cache = cache.select_rows(rows)
        tokens, lens, lens_d = self._pad([m[1] for _, m in suffix_rows])
        start = torch.tensor([len(prefixes[g]) for g, _ in suffix_rows], device=self.device)
        valid = torch.arange(max_suffix, device=self.device)[None] < lens_d[:, None]
        if bool(valid.all()) and len(set(start.tolist())) == 1:
            valid = None
        start_arg = int(start[0]) if valid is None else start
        return self.model(tokens, cache=cache, start_pos=start_arg, valid=valid, logits_from=None)

    def _rows_at(self, tokens, first: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """The model's logits ``[B, N, vocab]`` at positions ``first[b] .. lens[b] - 1`` of each row (N = the longest
        such run; shorter rows repeat their last position), from one stateless forward over ``tokens`` ``[B, L]``
        (replayed from a :class:`ScoringGraph` where :meth:`_scoring_graph` gives one)."""
        n = int((lens - first).max())
        idx = torch.minimum(first[:, None] + torch.arange(n)[None], lens[:, None] - 1).to(self.device)
        graph = self._scoring_graph(*tokens.shape, n)
        return graph.run(tokens, idx) if graph is not None else self.model(tokens, logits_from=idx)

    def _scoring_graph(self, batch: int, length: int, n: int):
        """The captured stateless forward for a padded shape, or None: CUDA with graphs on, at most
        :data:`SCORING_GRAPH_TOKENS` tokens (where launches, not arithmetic, bound a forward), and capture worked
        (a model whose forward cannot be captured is scored eagerly from then on). Shapes are padded to buckets
        (rows exact, length to 64, logit positions to 8); the 4 most recent graphs stay (each holds its own memory
        pool for the forward's activations)."""
        key = (batch, -(-length // 64) * 64, -(-n // 8) * 8)
        if not (self.cuda_graphs and self.device.type == "cuda" and self._scoring_graphs is not None):
            return None
        if key[0] * key[1] > SCORING_GRAPH_TOKENS or key[2] > key[1]:
            return None
        g = self._scoring_graphs.pop(key, None)
        if g is None:
            try:
                g = ScoringGraph(self.model, *key, self.device, self._pad_id())
            except Exception as e:  # noqa: BLE001 - a forward that cannot be captured still scores, eagerly
                import logging

                logging.getLogger("yoco_eval").warning("yoco-eval: scoring without CUDA graphs (%s)", e)
                self._scoring_graphs = None
                return None
        self._scoring_graphs[key] = g
        while len(self._scoring_graphs) > 4:
            del self._scoring_graphs[next(iter(self._scoring_graphs))]
        return g

    def _continuation_scores(self, logits: torch.Tensor, conts: list[list[int]]) -> list[tuple[float, bool]]:
        """``(sum of log p(continuation), greedy?)`` per row from logits ``[R, >= N, vocab]`` whose position j
        predicts continuation token j; computed on the device, read back with ONE synchronization."""
        n = max(len(c) for c in conts)
        target, lens, _ = self._pad(conts)
        mask = torch.arange(n, device=self.device)[None] < lens.to(self.device)[:, None]
        logits = logits[:, :n].float()
        lp = logits.gather(-1, target[..., None])[..., 0] - torch.logsumexp(logits, -1)
        total = (lp.double() * mask).sum(1)
        greedy = ((logits.argmax(-1) == target) | ~mask).all(1)
        return [(t, bool(g)) for t, g in zip(*torch.stack((total, greedy.double())).tolist())]

    @torch.inference_mode()
    def score_tokens(self, tokens: Sequence[int], prefix: Sequence[int], chunk: int | None = None) -> float:
        """Total log-probability of ``tokens`` given ``prefix`` in ONE pass (rolling perplexity without windows).

        The sequence ``prefix + tokens`` must fit ``max_length + 1``. Logits are made one chunk at a time."""
        self.ready()
        seq = list(prefix) + list(tokens)
        inp, n0 = seq[:-1], len(prefix) - 1  # position n0 predicts tokens[0]
        if len(inp) > self.max_length:
            raise ValueError(f"document of {len(seq)} tokens does not fit max_length {self.max_length}")
        chunk = chunk or min(self.chunk_size, 2048)
        cache = self.model.setup_cache(1, len(inp))
        x = torch.tensor([inp], device=self.device)
        target = torch.tensor(seq[1:], device=self.device)
        total = 0.0
        for s in range(0, len(inp), chunk):
            e = min(len(inp), s + chunk)
            if e <= n0:
                self.model(x[:, s:e], cache=cache, start_pos=s, logits_from=0)
                continue
            lo = max(s, n0)
            logits = self.model(x[:, s:e], cache=cache, start_pos=s, logits_from=e - lo)[0].float()
            lp = F.log_softmax(logits, -1).gather(-1, target[lo:e, None])
            total += lp.sum().item()
        return total


class Engine(_Scoring):
    """Runs a YOCO or Transformer model (see :mod:`yoco_eval.model`) for generation and scoring.

    The Engine REWRITES the model it is given, in place: an eval-mode model goes through
    :func:`~yoco_eval.model.inference.prepare_for_inference` (fused projections, residual-in-place GEMMs; the same
    function, the same parameters). On CUDA it also points Triton at the shared cache
    (:func:`yoco_eval.settings.use_shared_triton_cache`) and, on Hopper, pins fla-core's autotuned kernels to their
    H100 picks (:func:`yoco_eval.ops.retention.prepare_fla`).

    Args:
        model: a :class:`~yoco_eval.model.yoco.YOCO`, :class:`~yoco_eval.model.transformer.Transformer` or
            :class:`~yoco_eval.model.phi4flash.Phi4Flash` (any model with ``setup_cache`` and the same ``forward``).
        tokenizer: its tokenizer (``encode``/``decode``/``eos_id``...).
        chunk_size: prefill chunk length (tokens per forward call); bounds activation memory. None: the documented
            default for the model's device (:data:`DEFAULT_CHUNK_SIZE`).
        max_length: the longest sequence (prompt + generation) the engine accepts.
        cuda_graphs: replay decode steps as one CUDA graph (GPU only; see :meth:`graph_decoder`), and short
            scoring forwards too (:meth:`_scoring_graph`).
    """

    def __init__(
        self,
        model,
        tokenizer: Tokenizer,
        chunk_size: int | None = None,
        max_length: int | None = None,
        name: str | None = None,
        cuda_graphs: bool = True,
    ):
        self.model = model
        self.tokenizer = tokenizer
        if chunk_size is None:
            chunk_size = default_chunk_size(next(model.parameters()).device)
        self.chunk_size = int(chunk_size)
        self.max_length = int(max_length or model.config.max_seq_len)
        self.name = name or model.config.name
        self.cuda_graphs = cuda_graphs
        if not model.training:
            prepare_for_inference(model)
        if self.device.type == "cuda":
            settings.use_shared_triton_cache()
            prepare_fla(self.device)
        # the kernels compile in the background meanwhile (yoco_eval.model.precompile); every forward waits first
        self._precompiling = precompile.start(model, self.device) if self.device.type == "cuda" else None
        self._graphs: dict[tuple[int, int], GraphDecoder] = {}
        self._scoring_graphs: dict[tuple[int, int, int], ScoringGraph] | None = {}

    @classmethod
    def load(cls, spec, device="cpu", dtype="float32", attn_backend="auto", retention_backend="auto",
             chunk_size=None, max_length=None, tokenizer=None, kv_dtype="auto",
             decode_backend="auto") -> Engine:  # fmt: skip
        """Load a checkpoint folder or preset (see :func:`yoco_eval.model.checkpoint.load_model`; the backend names
        are those of :mod:`yoco_eval.ops`). ``kv_dtype="fp8"`` stores YOCO's shared K/V as e4m3 + scales (lossy,
        opt-in: see :mod:`yoco_eval.model.cache`)."""
        from yoco_eval.model.checkpoint import load_model

        loaded = load_model(spec, device, parse_dtype(dtype), attn_backend, retention_backend, tokenizer,
                            decode_backend=decode_backend, kv_dtype=kv_dtype)  # fmt: skip
        eng = cls(loaded.model, loaded.tokenizer, chunk_size, max_length, name=str(spec))
        eng.source, eng.path = loaded.source, loaded.path
        return eng

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def ready(self) -> None:
        """Wait until the background compilation started with the Engine (:mod:`yoco_eval.model.precompile`) is
        done. Every forward of the Engine calls it first; call it yourself before measuring memory or time."""
        if getattr(self, "_precompiling", None) is not None:
            self._precompiling.result()
            self._precompiling = None

    # -- prefill ----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Sequence[int]], cache: Cache, start: int = 0) -> torch.Tensor:
        """Feed ``prompts`` (token lists, lengths may differ) into ``cache`` from position ``start``; return the
        fp32 logits ``[B, vocab]`` of each row's last prompt token."""
        return self._prefill(prompts, cache, start, want_logits=True)

    @torch.inference_mode()
    def prefill_only(self, prompts: Sequence[Sequence[int]], cache: Cache, start: int = 0) -> None:
        """Feed prompts into the cache without computing any logits (cross-decoder fully skipped)."""
        self._prefill(prompts, cache, start, want_logits=False)

    def _pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-pad token lists: ``(tokens [B, L] on device, lengths [B] on CPU, lengths on device)``."""
        lens = torch.tensor([len(x) for x in seqs])
        tokens = torch.full((len(seqs), int(lens.max())), self._pad_id(), dtype=torch.long)
        for i, x in enumerate(seqs):
            tokens[i, : len(x)] = torch.tensor(list(x), dtype=torch.long)
        return tokens.to(self.device), lens, lens.to(self.device)

    def _prefill(self, prompts, cache: Cache, start: int, want_logits: bool) -> torch.Tensor | None:
        self.ready()
        B = len(prompts)
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt: every prompt needs at least one token (e.g. BOS)")
        cache.note_prefill()
        tokens, lens, lens_d = self._pad(prompts)
        L = tokens.shape[1]
        out = torch.empty(B, self.model.config.vocab_size, device=self.device) if want_logits else None
        for s in range(0, L, self.chunk_size):
            e = min(L, s + self.chunk_size)
            chunk = tokens[:, s:e]
            valid = None
            if int(lens.min()) < e:
                valid = (s + torch.arange(e - s, device=self.device))[None] < lens_d[:, None]
            ends_here = (lens - 1 >= s) & (lens - 1 < e)
            if not want_logits or not ends_here.any():
                self.model(chunk, cache=cache, start_pos=start + s, valid=valid, logits_from=0)
                continue
            if valid is None:  # every row ends at this chunk's last position
                logits = self.model(chunk, cache=cache, start_pos=start + s, logits_from=1)[:, -1]
            else:
                idx = (lens_d - 1 - s).clamp(0, e - s - 1)[:, None]
                logits = self.model(chunk, cache=cache, start_pos=start + s, valid=valid, logits_from=idx)[:, -1]
            rows = ends_here.nonzero().flatten().to(self.device)
            out[rows] = logits[rows].float()
        return out

    def _pad_id(self) -> int:
        t = self.tokenizer
        return t.pad_id if t.pad_id is not None else t.eos_id

    # -- generation -------------------------------------------------------------------------------------------

    def _banned(self) -> list[int]:
        t = self.tokenizer
        return [i for i in (t.bos_id, t.pad_id) if i is not None and i not in self._stop_ids()]

    def _stop_ids(self) -> set[int]:
        """Token ids that end a row: EOS, plus the tokenizer's ``stop_ids`` where it has them (a chat model's
        end-of-turn, e.g. Phi-4's ``<|end|>``)."""
        t = self.tokenizer
        return {i for i in (t.eos_id, *(getattr(t, "stop_ids", None) or ())) if i is not None}

    def _pick(self, logits: torch.Tensor, banned: torch.Tensor | None, p: SamplingParams,
              gen: torch.Generator | None) -> torch.Tensor:  # fmt: skip
        """The next tokens ``[B]`` (on the device) from logits ``[B, vocab]`` (BOS/PAD masked out in place)."""
        if banned is not None:
            logits.index_fill_(-1, banned, float("-inf"))
        return self._sample(logits, p, gen)

    @staticmethod
    def _sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> torch.Tensor:
        if p.temperature <= 0:
            return logits.argmax(-1)
        logits = logits / p.temperature
        if p.top_k > 0:
            kth = logits.topk(min(p.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if p.top_p < 1.0:
            srt, order = logits.sort(-1, descending=True)
            cum = srt.softmax(-1).cumsum(-1)
            drop = cum - srt.softmax(-1) > p.top_p
            logits = logits.scatter(-1, order, srt.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1)
        return torch.multinomial(probs.cpu(), 1, generator=gen).flatten().to(logits.device)

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | None = None,
        on_token: Callable[[int, int], None] | None = None,
        prefix: PrefixCache | None = None,
        **kw,
    ) -> list[Generation]:
        """Generate a continuation for each prompt (token lists of any lengths, batched together).

        Stops a row at EOS (or another of the tokenizer's ``stop_ids``, finish reason ``"eos"``), at the first stop
        string in its decoded text, or after ``max_new_tokens``.
        ``kw`` are :class:`SamplingParams` fields (``max_new_tokens=``, ``temperature=``, ``stop=``, ...).
        ``prefix``: one prompt only; continue from the longest prefix it shares with the prompts ``prefix`` saw
        before (see :class:`PrefixCache`); the result is the same as without it.
        """
        self.ready()
        p = params or SamplingParams(**kw)
        B = len(prompts)
        if prefix is not None and B != 1:
            raise ValueError("generate(prefix=...) takes one prompt at a time")
        need = max(len(x) for x in prompts) + p.max_new_tokens
        if need > self.max_length:
            from yoco_eval.errors import YocoEvalError

            raise YocoEvalError(
                f"prompt of {max(len(x) for x in prompts)} tokens + {p.max_new_tokens} new tokens exceeds "
                f"max_length {self.max_length}: shorten the prompt or raise max_length"
            )
        gen = torch.Generator().manual_seed(p.seed) if p.seed is not None else None
        graph = None
        if self.cuda_graphs and self.device.type == "cuda" and p.max_new_tokens > 1:
            graph = self.graph_decoder(B, need)
            cache = graph.cache
        elif prefix is not None:
            cache = prefix.cache_for(self.model, need)
        else:
            cache = self.model.setup_cache(B, need)
        self._sync()
        t0 = time.perf_counter()
        logits = prefix.prefill(self, prompts[0], cache) if prefix is not None else self.prefill(prompts, cache)
        self._sync()
        t1 = time.perf_counter()
        stats = {"prefill_peak_bytes": torch.cuda.max_memory_allocated()} if self.device.type == "cuda" else {}
        banned, stop_ids = self._banned(), self._stop_ids()
        banned_d = torch.tensor(banned, dtype=torch.long, device=self.device) if banned else None
        pos = torch.tensor([len(x) for x in prompts], device=self.device)
        out: list[list[int]] = [[] for _ in range(B)]
        reason = ["length"] * B
        done = [False] * B
        readback = _TokenReadback(self.device, p.max_new_tokens, B)
        # Look-ahead: step k+1's forward and sampling are queued BEFORE the host reads step k's tokens, so the GPU
        # never waits for the host's stop checks. When every row stops early, that one queued step is wasted; it
        # writes the cache one position past the last token returned, inside the prompt + max_new_tokens it holds.
        nxt = self._pick(logits, banned_d, p, gen) if p.max_new_tokens > 0 else None
        for step in range(p.max_new_tokens):
            readback.send(nxt)
            if step < p.max_new_tokens - 1:
                if graph is not None and p.temperature <= 0 and step > 0:
                    nxt = graph.step_greedy()  # the graph chose the token and moved the positions itself
                elif graph is not None:  # its logits come with the banned ids at -inf
                    logits = graph.step(nxt, pos)
                    nxt = graph.next_tokens if p.temperature <= 0 else self._pick(logits, None, p, gen)
                    pos = pos + 1
                else:
                    logits = self.model(nxt[:, None], cache=cache, start_pos=pos)[:, -1].float()
                    nxt = self._pick(logits, banned_d, p, gen)
                    pos = pos + 1
            host = readback.receive()
            for i in range(B):
                if done[i]:
                    continue
                if host[i] in stop_ids and not p.ignore_eos:
                    done[i], reason[i] = True, "eos"
                    continue
                out[i].append(host[i])
                if p.stop and self._hit_stop(out[i], p.stop):
                    done[i], reason[i] = True, "stop"
            if on_token is not None:
                on_token(step, B - sum(done))
            if all(done):
                break
        self._sync()
        t2 = time.perf_counter()
        results = []
        for i in range(B):
            text = self.tokenizer.decode(out[i])
            if reason[i] == "stop":
                text = cut_at_stop(text, p.stop)
            results.append(Generation(text, out[i], reason[i], len(prompts[i]), t1 - t0, t2 - t1, dict(stats)))
        return results

    def graph_decoder(self, batch: int, max_len: int) -> GraphDecoder:
        """A decode step captured as a CUDA graph over its own cache of ``batch`` rows and at least ``max_len``
        positions (CUDA only), with that cache reset: prefill into ``.cache``, then ``.step(tokens, pos)``. Reused
        for every length in the same bucket: powers of two from 256 to 4096 positions, then multiples of 4096 (a
        replayed step attends over its whole buffer under a mask, so a short prompt gets a short buffer). Graphs of
        other sizes stay while all of their caches together hold at most :data:`GRAPH_KEEP_BYTES` (lm-eval's batches
        of short prompts alternate between a full and a last, smaller batch; capturing again costs more than the
        step itself); the oldest go first."""
        self.ready()
        key = (batch, max(256, 1 << (max_len - 1).bit_length()) if max_len <= 4096 else -(-max_len // 4096) * 4096)
        g = self._graphs.pop(key, None)
        if g is None:
            # make room first: caches at long context are large, and two of them must never be alive together
            need = self._cache_nbytes(*key)
            while self._graphs and sum(x.cache.nbytes() for x in self._graphs.values()) + need > GRAPH_KEEP_BYTES:
                del self._graphs[next(iter(self._graphs))]  # the oldest first
            g = GraphDecoder(self.model, batch, key[1], self.device, banned=self._banned())
        self._graphs[key] = g  # the most recent last
        g.cache.reset()
        return g

    def _cache_nbytes(self, batch: int, max_len: int) -> int:
        """Bytes of a cache of ``batch`` rows and ``max_len`` positions (sized on the meta device: no allocation)."""
        dtype = next(self.model.parameters()).dtype
        return self.model.setup_cache(batch, max_len, device="meta", dtype=dtype).nbytes()

    def drop_graphs(self) -> None:
        """Let go of the captured decode graphs and their caches, and of the scoring graphs (e.g. before measuring
        memory at another length)."""
        self._graphs.clear()
        if self._scoring_graphs is not None:
            self._scoring_graphs.clear()

    def _hit_stop(self, toks: list[int], stop: Sequence[str]) -> bool:
        tail = self.tokenizer.decode(toks[-(max(len(s) for s in stop) + 8) :])
        return any(s and s in tail for s in stop)

    def generate_text(self, prompt: str, **kw) -> str:
        """Convenience: generate from a text prompt (BOS prepended when the tokenizer has one)."""
        ids = self.tokenizer.encode(prompt, bos=self.tokenizer.bos_id is not None)
        return self.generate([ids], **kw)[0].text

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class _TokenReadback:
    """Brings each decode step's sampled tokens ``[B]`` to the host without draining the device's queue: on CUDA an
    asynchronous copy into pinned memory and an event, so the host waits for that copy only, not for the step
    queued after it. One step is in flight at a time: :meth:`send`, then :meth:`receive`."""

    def __init__(self, device: torch.device, steps: int, batch: int):
        self.cuda = device.type == "cuda" and steps > 0
        if self.cuda:
            self.host = torch.empty(batch, dtype=torch.long, pin_memory=True)
            self.event = torch.cuda.Event()

    def send(self, tokens: torch.Tensor) -> None:
        self.sent = tokens
        if self.cuda:
            self.host.copy_(tokens, non_blocking=True)
            self.event.record()

    def receive(self) -> list[int]:
        if self.cuda:
            self.event.synchronize()
            return self.host.tolist()
        return self.sent.tolist()


class PrefixCache:
    """Prefix reuse across one-prompt generations (a needle sweep's depths over one haystack).

    After each prompt it keeps the prompt's tokens and the cache's constant-size state (:meth:`Cache.save_state`)
    at evenly spaced, chunk-aligned positions. The next prompt restores the latest saved state that lies inside
    the prefix the two prompts share and prefills only from there. Only the self-decoder state is saved: the
    shared K/V before that point already holds the right values, because K/V is append-only. The saved points are
    multiples of the engine's chunk size, so the chunks that run are the ones a full prefill would run and the
    logits are the same.

    Args:
        max_states: at most this many saved states per prompt (YOCO-3B: about 20 MB each).
    """

    def __init__(self, max_states: int = 32):
        self.max_states = int(max_states)
        # The cache the saved states belong to, by weak reference: a CUDA-graph decoder's cache belongs to the
        # engine, which drops it when the next prompt needs another size; pinning it here would hold two full K/V
        # caches at once (+3.9 GiB at 1M tokens for YOCO-3B). Only a cache made by cache_for() is owned here.
        self._ref: weakref.ref[Cache] | None = None
        self._own: Cache | None = None
        self._writes = -1
        self._ids: list[int] = []
        self._states: dict[int, CacheState] = {}
        self.tokens_prefilled = 0  # counters, for tests and reports
        self.tokens_reused = 0

    @property
    def _cache(self) -> Cache | None:
        return self._ref() if self._ref is not None else None

    def cache_for(self, model, need: int) -> Cache:
        """The cache to run in when no CUDA graph provides one: the previous one while it is big enough (a bigger
        one is made only after the old one is let go, so the two never coexist)."""
        last = self._cache
        if last is not None and last.max_seq_len >= need:
            return last
        self._ref = self._own = last = None
        self._states, self._ids = {}, []
        self._own = model.setup_cache(1, need)
        return self._own

    def _shared(self, ids: list[int]) -> int:
        """Length of the common prefix of ``ids`` and the previous prompt. Compared a block at a time (list
        equality runs in C): a token-by-token Python loop costs about 0.1 s per 1M-token prompt."""
        n, block = min(len(ids), len(self._ids)), 4096
        i = 0
        while i < n and ids[i : i + block] == self._ids[i : i + block]:
            i += block
        while i < n and ids[i] == self._ids[i]:
            i += 1
        return min(i, n)

    def prefill(self, engine: Engine, ids: Sequence[int], cache: Cache) -> torch.Tensor:
        """Prefill ``ids`` into ``cache`` reusing what it can; return the last token's fp32 logits ``[1, vocab]``."""
        ids = list(ids)
        if cache is not self._cache or cache.writes != self._writes:
            self._states, self._ids = {}, []  # another cache, or someone else wrote into this one
        shared = self._shared(ids)
        keep = {q: st for q, st in self._states.items() if q <= shared}
        start = max((q for q in keep if q < len(ids)), default=0)
        if start:
            cache.load_state(keep[start])
        else:
            cache.reset()
        chunk = engine.chunk_size
        every = chunk * max(1, -(-len(ids) // (chunk * self.max_states)))
        self._states = keep
        s = start
        for q in range(start + every - start % every, len(ids), every):
            engine.prefill_only([ids[s:q]], cache, start=s)
            self._states[q] = cache.save_state()
            s = q
        logits = engine.prefill([ids[s:]], cache, start=s)
        self.tokens_prefilled += len(ids) - start
        self.tokens_reused += start
        self._ref, self._writes, self._ids = weakref.ref(cache), cache.writes, ids
        return logits


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]
