"""Exact-length needle prompts.

Layout (every part counted under the model's tokenizer)::

    [model-added prefix, e.g. BOS]  [head]  instruction "\\n"  haystack-with-needles  question [tail|sep] answer_prefix

``head``/``tail`` are a chat template's text around the user message (empty without one). The haystack is a
window of the (repeated) corpus that starts at a sentence start and ends at a sentence end; its size is chosen so
that the whole prompt has exactly the requested number of tokens. How:

1. Every part except the haystack is tokenized; what is left, less the needles' tokens, is the haystack size ``H``.
   A needle is written ``"needle\\n"`` after a line break or ``" needle"`` inside a paragraph, and the two forms
   may differ in length, so every possible needle total ``N`` is a separate search (likeliest first).
2. For each ``N`` and each ending, the windows of exactly ``H`` tokens are found with prefix sums over the repeated
   corpus: sentence-aligned starts first, then the first sentence entered at a word boundary, then (last resort)
   at any character. Endings: at a line end (the question follows directly), or mid-paragraph after a sentence,
   with the line break that precedes the question encoded together with that sentence (cl100k and o200k merge
   ``".\\n"`` into one token, so appending it as a separate piece could never match). The searches share their
   effort in rounds of doubling size until one yields a prompt or all are exhausted (then one error names the
   needle, haystack and tokenizer). Windows are drawn in a seeded random order, so trials see different text.
3. Each needle goes to the sentence boundary nearest to ``depth% × H`` haystack tokens (0% = before the first
   sentence, 100% = after the last), or, for RULER's variants, to a line or sentence index drawn as RULER draws it.
   Every new seam is checked to tokenize independently of its neighbours; a window is kept only when its needle
   forms add up to ``N``.
4. Ids are spliced from token slices (no re-tokenization of the haystack), then the text is re-encoded and compared
   with the spliced ids: whole up to ``FULL_VERIFY_TOKENS``, beyond that around every splice point (the rest is
   corpus text whose unit seams were all proven when it was tokenized). So ``len(encode(text))`` is the requested
   length exactly (tolerance 0).

Positions: ``token_position`` is the index of a needle's first token in the sequence the model sees;
``depth_actual`` is the share of haystack tokens (needles excluded) before it, in percent.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import numpy as np

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.corpus import Corpus, load_corpus
from yoco_eval.niah.tokens import TokenizedCorpus, tokenize_corpus
from yoco_eval.niah.variants import Sample, Variant, sample_needles
from yoco_eval.niah.windows import RAGGED, Piece, Window, WindowFinder, piece_ids
from yoco_eval.tokenizer import as_tokenizer, encode, tokenizer_name

MAX_SITE_BANS = 64  # needle sites that fail their seam check before a window is given up
FULL_VERIFY_TOKENS = 131072  # longer prompts are re-encoded around their splice points only
EXCERPT_CHARS = 200


@dataclass(frozen=True)
class PromptFormat:
    """Text around the user message. ``head`` goes before the instruction and ``tail`` between the question and
    the answer prefix (for a chat model: the template's opening up to the user turn, and its closing plus the
    assistant opener). Without a chat template both are empty and ``Variant.answer_sep`` joins question and
    answer prefix."""

    head: str = ""
    tail: str = ""
    chat_template: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> PromptFormat:
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})


@dataclass
class PlacedNeedle:
    key: str
    value: str
    text: str
    is_target: bool
    depth_requested: float
    token_position: int  # index of the needle's first token in the model's input
    n_tokens: int
    depth_actual: float  # percent of haystack tokens before the needle
    char_position: int  # index of the needle's first character in Prompt.text
    rendered: str  # the needle as inserted, with its separator

    def to_row(self) -> dict:
        return {
            "key": self.key,
            "value": self.value,
            "text": self.text,
            "token_position": self.token_position,
            "depth_actual": round(self.depth_actual, 4),
            "is_target": self.is_target,
            "depth_requested": self.depth_requested,
            "n_tokens": self.n_tokens,
        }


@dataclass
class Prompt:
    text: str
    ids: np.ndarray  # token ids of ``text`` (without tokens the model adds itself, such as BOS)
    n_tokens: int  # what the model sees: prefix_tokens + len(ids)
    target_length: int
    needles: list[PlacedNeedle]
    question: str
    answer_prefix: str
    expected: list[str]
    metric: str
    haystack_tokens: int
    corpus_tokens: int
    window: dict = field(default_factory=dict)
    verified: bool = False

    @property
    def passes(self) -> float:
        return self.haystack_tokens / self.corpus_tokens

    def ids_list(self) -> list[int]:
        return self.ids.tolist()

    def excerpts(self, width: int = EXCERPT_CHARS) -> list[dict]:
        out = []
        for nd in self.needles:
            c, e = nd.char_position, nd.char_position + len(nd.text)
            out.append(
                {
                    "token_position": nd.token_position,
                    "before": self.text[max(0, c - width) : c],
                    "needle": self.text[c:e],
                    "after": self.text[e : e + width],
                }
            )
        return out


class PromptBuilder:
    """Builds exact-length prompts for one (tokenizer, haystack, variant, format). Tokenizes the corpus once.

    ``verify``: True (default) re-encodes prompts up to ``FULL_VERIFY_TOKENS`` whole, longer ones around every
    splice point (the body between splices is corpus text whose unit seams were proven when it was tokenized);
    ``"full"`` always re-encodes the whole text (the plain twin of the local check); False skips the check."""

    def __init__(
        self,
        tokenizer,
        haystack: str | Corpus | TokenizedCorpus = "pg-essays",
        variant: Variant | None = None,
        fmt: PromptFormat | None = None,
        *,
        prefix_tokens: int = 0,
        verify: bool | str = True,
    ):
        from yoco_eval.niah.variants import VARIANTS, check_haystack, register_needle_template

        self.tok = as_tokenizer(tokenizer)
        if isinstance(haystack, TokenizedCorpus):
            self.tc = haystack
        else:
            corpus = haystack if isinstance(haystack, Corpus) else load_corpus(haystack)
            self.tc = tokenize_corpus(corpus, self.tok)
        self.variant = variant or VARIANTS["single"]
        check_haystack(self.variant, self.tc.corpus.name)
        register_needle_template(self.variant.needle)
        self.fmt = fmt or PromptFormat()
        self.prefix_tokens = int(prefix_tokens)
        self.verify = verify
        tc = self.tc
        self.win = WindowFinder(self.tok, tc)

    # --- pieces ------------------------------------------------------------------------------------------
    def _enc(self, text: str) -> list[int]:
        return self.tc.encode(text) if len(text) < 4000 else encode(self.tok, text)

    def _piece(self, text: str) -> Piece:
        return Piece(text, self._enc(text))

    def _prefix_text(self, s: Sample) -> str:
        return self.fmt.head + (s.instruction + "\n" if s.instruction else "")

    def _suffix_text(self, s: Sample) -> str:
        sep = self.fmt.tail if self.fmt.tail else (self.variant.answer_sep if s.answer_prefix else "")
        return s.question + sep + s.answer_prefix

    def frame_tokens(self, sample: Sample) -> int:
        """Tokens of everything except the haystack (shortest needle forms), for length validation."""
        fixed = self.prefix_tokens + len(self._enc(self._prefix_text(sample)))
        suffix = len(self._enc(self._suffix_text(sample)))
        needles = sum(min(len(self._enc(n.text + "\n")), len(self._enc(" " + n.text))) for n in sample.needles)
        return fixed + suffix + needles

    def min_length(self, seed: int = 0, depth: float = 50.0) -> int:
        return self.frame_tokens(sample_needles(self.variant, random.Random(seed), depth)) + 1

    def sample(self, depth: float, seed: int) -> Sample:
        return sample_needles(self.variant, random.Random(seed), depth)

    def _seam_ok(self, *pieces: Piece) -> bool:
        want: list[int] = []
        for p in pieces:
            want.extend(piece_ids(p))
        return self._enc("".join(p.text for p in pieces)) == want

    def _needle_totals(self, renders: list[dict]) -> list[int]:
        """Every possible total of needle tokens (each needle written as a line or inline), likeliest first."""
        totals = {0}
        for r in renders:
            totals = {t + len(r[s].ids) for t in totals for s in ("line", "inline")}
        tc = self.tc
        share = float(np.mean(tc.ends_newline[tc.sentence_end])) if tc.sentence_end.any() else 1.0
        if self.variant.sites == "lines":
            share = 1.0
        guess = sum(share * len(r["line"].ids) + (1 - share) * len(r["inline"].ids) for r in renders)
        return sorted(totals, key=lambda t: (abs(t - guess), t))

    # --- build -------------------------------------------------------------------------------------------
    def build(self, length: int, depth: float, seed: int) -> Prompt:
        """The prompt for one cell. Deterministic in (length, depth, seed) for a given builder.

        The search is exhaustive: for every possible needle-token total N and both endings, it walks every
        window of the (repeated) haystack whose size makes the prompt exactly ``length`` tokens, sharing its
        effort between these searches in rounds of doubling size; so it returns a prompt whenever the haystack
        holds one, and otherwise ends with one error naming the needle, haystack and tokenizer."""
        length, depth = int(length), float(depth)
        if not 0.0 <= depth <= 100.0:
            raise YocoEvalError(f"depth {depth:g} is outside 0–100: give depths in percent, e.g. 0:100:11")
        rng = random.Random(seed)
        sample = sample_needles(self.variant, rng, depth)
        prefix = self._piece(self._prefix_text(sample))
        suffix = self._piece(self._suffix_text(sample))
        renders = [{"line": self._piece(nd.text + "\n"), "inline": self._piece(" " + nd.text)} for nd in sample.needles]
        frame = self.frame_tokens(sample)
        if length < frame + 1:
            raise YocoEvalError(
                f"length {length} is below the prompt template's own size ({frame} tokens for instruction, "
                f"question and needles under {tokenizer_name(self.tok)}): use lengths ≥ {frame + 1}"
            )
        budget = length - self.prefix_tokens - len(prefix.ids) - len(suffix.ids)
        searches = [
            (N, self.win.windows(budget - N, kind, random.Random(rng.getrandbits(64))))
            for N in self._needle_totals(renders)
            for kind in ("nl", "sep")
            if budget - N >= 1
        ]
        why: dict[str, int] = {}
        deferred: list = []
        for _phase in range(3):  # sentence-aligned windows of every search first, then word starts, then any
            step = 4
            while searches:
                alive = []
                for N, gen in searches:
                    for _ in range(step):
                        w = next(gen, StopIteration)
                        if w is StopIteration:
                            break
                        if w is RAGGED:
                            deferred.append((N, gen))
                            break
                        if w is None:
                            continue
                        out = self._try(w, budget - N, N, length, sample, renders, prefix, suffix)
                        if isinstance(out, Prompt):
                            return out
                        why[out] = why.get(out, 0) + 1
                    else:
                        alive.append((N, gen))
                searches, step = alive, step * 2
            searches, deferred = deferred, []
        reasons = ", ".join(f"{k} ×{v}" for k, v in sorted(why.items(), key=lambda kv: -kv[1])) or "no window fits"
        raise YocoEvalError(
            f"cannot build an exact {length}-token prompt: needle {self.variant.needle!r} in haystack "
            f"{self.tc.corpus.name} under tokenizer {tokenizer_name(self.tok)} has no valid window ({reasons}); "
            "try another length, haystack or needle template"
        )

    def _try(self, w: Window, H, N, length, sample, renders, prefix, suffix) -> Prompt | str:
        m = w.m
        if m > 1 and not self._seam_ok(w.first, self.win.piece_at(w, 1)):
            return "start seam"
        if w.last is not None and m > 2 and not self._seam_ok(self.win.unit_piece(w.g - 2), w.last):
            return "end seam"
        if not self._seam_ok(self.win.piece_at(w, m - 1), suffix):
            return "question seam"
        pos = self.win.positions(w)
        if pos[m] != H:
            return "size"
        placed = self._place(sample, renders, w, pos, prefix, suffix)
        if placed is None:
            return "needle seams"
        if sum(len(p.ids) for _, grp in placed for _, p in grp) != N:
            return "needle forms"
        prompt = self._assemble(length, sample, prefix, suffix, w, pos, placed)
        return prompt if prompt is not None else "re-encoding differs"

    def _place(self, sample, renders, w: Window, pos, prefix, suffix):
        """Assign needles to boundaries: ``[(k, [(needle_idx, piece), ...]), ...]`` sorted by ``k``, or None."""
        tc, m, n = self.tc, w.m, self.tc.n_units
        H = int(pos[m])
        elig = np.zeros(m + 1, dtype=bool)
        elig[0] = elig[m] = True
        if m >= 2:
            before = (w.a + np.arange(0, m - 1, dtype=np.int64)) % n  # the unit ending at boundary 1..m-1
            elig[1:m] = tc.sentence_end[before]
            if self.variant.sites == "lines":
                elig[1:m] &= tc.ends_newline[before]
        order = sorted(range(len(sample.needles)), key=lambda i: (sample.needles[i].depth, i))
        for _ in range(MAX_SITE_BANS):
            cand = np.flatnonzero(elig)
            if len(cand) == 0:
                return None
            groups: dict[int, list[int]] = {}
            for i in order:
                spec = sample.needles[i]
                if spec.site is not None:  # RULER: a uniformly drawn line/sentence index
                    k = int(cand[min(int(spec.site * (len(cand) - 1)), len(cand) - 1)])
                else:  # our depth grid: the boundary nearest to depth% of the haystack's tokens
                    t = spec.depth / 100.0 * H
                    j = int(np.searchsorted(pos[cand], t))
                    lo, hi = max(j - 1, 0), min(j, len(cand) - 1)
                    k = int(cand[lo] if abs(pos[cand[lo]] - t) <= abs(pos[cand[hi]] - t) else cand[hi])
                groups.setdefault(k, []).append(i)
            out, bad = [], None
            for k in sorted(groups):
                left = prefix if k == 0 else self.win.piece_at(w, k - 1)
                right = suffix if k == m else self.win.piece_at(w, k)
                styles = ("line", "inline") if (k == 0 or left.text.endswith("\n")) else ("inline", "line")
                chosen = None
                for style in styles:
                    if self._seam_ok(left, *[renders[i][style] for i in groups[k]], right):
                        chosen = [(i, renders[i][style]) for i in groups[k]]
                        break
                if chosen is None:
                    bad = k
                    break
                out.append((k, chosen))
            if bad is None:
                return out
            elig[bad] = False
        return None

    def _assemble(self, length, sample, prefix, suffix, w: Window, pos, placed) -> Prompt | None:
        tc, m = self.tc, w.m
        body_end = w.g - 1 if w.last is not None else w.g
        tail = [np.asarray(piece_ids(w.last), dtype=np.int64)] if w.last is not None else []
        hay_ids = np.concatenate(
            [
                np.asarray(piece_ids(w.first), dtype=np.int64),
                tc.tokens(int(tc.cum(w.a + 1)), int(tc.cum(body_end))),
                *tail,
            ]
        )
        hay_text = w.first.text + tc.text_units(w.a + 1, body_end) + (w.last.text if w.last is not None else "")
        ks = np.array([k for k, _ in placed], dtype=np.int64)
        cpos = dict(zip(ks.tolist(), self.win.char_positions(w, ks).tolist()))
        ids_parts = [np.asarray(piece_ids(prefix), dtype=np.int64)]
        text_parts = [prefix.text]
        tok_at = self.prefix_tokens + len(prefix.ids)
        char_at = len(prefix.text)
        prev_t, prev_c = 0, 0
        needles: list[PlacedNeedle | None] = [None] * len(sample.needles)
        for k, chosen in placed:
            t, c = int(pos[k]), cpos[k]
            ids_parts.append(hay_ids[prev_t:t])
            text_parts.append(hay_text[prev_c:c])
            tok_at += t - prev_t
            char_at += c - prev_c
            prev_t, prev_c = t, c
            for i, piece in chosen:
                spec = sample.needles[i]
                lead = len(piece.text) - len(piece.text.lstrip(" "))
                needles[i] = PlacedNeedle(
                    key=spec.key,
                    value=spec.value,
                    text=spec.text,
                    is_target=spec.is_target,
                    depth_requested=spec.depth,
                    token_position=tok_at,
                    n_tokens=len(piece.ids),
                    depth_actual=100.0 * t / int(pos[m]),
                    char_position=char_at + lead,
                    rendered=piece.text,
                )
                ids_parts.append(np.asarray(piece_ids(piece), dtype=np.int64))
                text_parts.append(piece.text)
                tok_at += len(piece.ids)
                char_at += len(piece.text)
        ids_parts += [hay_ids[prev_t:], np.asarray(piece_ids(suffix), dtype=np.int64)]
        text_parts += [hay_text[prev_c:], suffix.text]
        ids = np.concatenate(ids_parts)
        text = "".join(text_parts)
        if self.prefix_tokens + len(ids) != length:
            return None
        mode = self._verify_mode(length)
        if mode == "full":
            re_ids = encode(self.tok, text)
            if len(re_ids) != len(ids) or not np.array_equal(np.asarray(re_ids, dtype=np.int64), ids):
                return None
        elif mode == "local" and not self.win.verify_local(w, pos, placed, prefix, text, ids):
            return None
        return Prompt(
            text=text,
            ids=ids,
            n_tokens=self.prefix_tokens + len(ids),
            target_length=length,
            needles=[nd for nd in needles if nd is not None],
            question=sample.question,
            answer_prefix=sample.answer_prefix,
            expected=sample.expected,
            metric=sample.metric,
            haystack_tokens=int(pos[m]),
            corpus_tokens=tc.n_tokens,
            window={
                "start_unit": w.a,
                "end_unit": w.g,
                "ragged_start": w.ragged,
                "ending": w.kind,
                "corpus_units": tc.n_units,
                "verify": mode,
            },
            verified=mode != "off",
        )

    def _verify_mode(self, length: int) -> str:
        if not self.verify:
            return "off"
        if self.verify == "full" or length <= FULL_VERIFY_TOKENS:
            return "full"
        return "local"
