"""Exact-length needle prompts.

Layout (every part counted under the model's tokenizer)::

    [model-added prefix, e.g. BOS]  [head]  instruction "\\n"  haystack-with-needles  question [tail|sep] answer_prefix

``head``/``tail`` are a chat template's text around the user message (empty without one). The haystack is a
window of the (repeated) corpus that starts at a sentence start and ends at a sentence end; its size is chosen so
that the whole prompt has exactly the requested number of tokens. How:

1. Every part except the haystack is tokenized; the haystack budget ``H`` is what is left.
2. A window of units whose token counts sum to exactly ``H`` is found with prefix sums over the repeated corpus
   (sentence-aligned at both ends; if no such window exists, the first sentence is entered at a word boundary).
   Candidate windows are drawn with the cell's seeded RNG, so trials see different parts of the corpus.
3. Each needle goes to the sentence boundary nearest to ``depth% × H`` haystack tokens (0% = before the first
   sentence, 100% = after the last). It is written as ``" needle."`` inside a paragraph or ``"needle.\\n"`` after a
   line break, whichever tokenizes independently of its neighbours (checked).
4. Ids are spliced from token slices (no re-tokenization of the haystack), then the whole text is encoded once and
   compared with the spliced ids. A prompt is returned only if they are identical, so ``len(encode(text))`` is
   the requested length exactly (tolerance 0).

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
from yoco_eval.tokenizer import as_tokenizer, encode

MAX_WINDOW_TRIES = 24
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


@dataclass
class _Piece:
    text: str
    ids: list[int] | np.ndarray


class PromptBuilder:
    """Builds exact-length prompts for one (tokenizer, haystack, variant, format). Tokenizes the corpus once."""

    def __init__(
        self,
        tokenizer,
        haystack: str | Corpus | TokenizedCorpus = "pg-essays",
        variant: Variant | None = None,
        fmt: PromptFormat | None = None,
        *,
        prefix_tokens: int = 0,
        verify: bool = True,
    ):
        from yoco_eval.niah.variants import VARIANTS

        self.tok = as_tokenizer(tokenizer)
        if isinstance(haystack, TokenizedCorpus):
            self.tc = haystack
        else:
            corpus = haystack if isinstance(haystack, Corpus) else load_corpus(haystack)
            self.tc = tokenize_corpus(corpus, self.tok)
        self.variant = variant or VARIANTS["single"]
        self.fmt = fmt or PromptFormat()
        self.prefix_tokens = int(prefix_tokens)
        self.verify = verify
        tc = self.tc
        self._start_ok = np.roll(tc.sentence_end, 1) & np.array([bool(u.strip()) for u in tc.units])
        self._end_ok = {
            "nl": tc.sentence_end & tc.ends_newline,
            "sep": tc.sentence_end & ~tc.ends_newline,
        }
        self._first_len: np.ndarray | None = None

    # --- pieces ------------------------------------------------------------------------------------------
    def _enc(self, text: str) -> list[int]:
        return self.tc.encode(text) if len(text) < 4000 else encode(self.tok, text)

    def _piece(self, text: str) -> _Piece:
        return _Piece(text, self._enc(text))

    def _prefix_text(self, s: Sample) -> str:
        return self.fmt.head + (s.instruction + "\n" if s.instruction else "")

    def _suffixes(self, s: Sample) -> list[tuple[str, str]]:
        sep = self.fmt.tail if self.fmt.tail else (self.variant.answer_sep if s.answer_prefix else "")
        block = s.question + sep + s.answer_prefix
        return [("nl", block), ("sep", "\n" + block)]

    def frame_tokens(self, sample: Sample) -> int:
        """Tokens of everything except the haystack (smallest suffix form), for length validation."""
        fixed = self.prefix_tokens + len(self._enc(self._prefix_text(sample)))
        suffix = min(len(self._enc(t)) for _, t in self._suffixes(sample))
        needles = sum(len(self._enc(n.text + "\n")) for n in sample.needles)
        return fixed + suffix + needles

    def min_length(self, seed: int = 0, depth: float = 50.0) -> int:
        return self.frame_tokens(sample_needles(self.variant, random.Random(seed), depth)) + 1

    def sample(self, depth: float, seed: int) -> Sample:
        return sample_needles(self.variant, random.Random(seed), depth)

    def _first_lengths(self) -> np.ndarray:
        if self._first_len is None:
            tc = self.tc
            lens = np.diff(tc.off).copy()
            idx = [u for u in range(tc.n_units) if tc.starts_space[u] and self._start_ok[u]]
            if idx:
                from yoco_eval.tokenizer import encode_many

                enc = encode_many(self.tok, [tc.units[u].lstrip() for u in idx])
                lens[idx] = [len(e) for e in enc]
            self._first_len = lens
        return self._first_len

    def _seam_ok(self, *pieces: _Piece) -> bool:
        text = "".join(p.text for p in pieces)
        want: list[int] = []
        for p in pieces:
            want.extend(p.ids.tolist() if isinstance(p.ids, np.ndarray) else p.ids)
        return self._enc(text) == want

    def _unit_piece(self, g: int) -> _Piece:
        u = g % self.tc.n_units
        return _Piece(self.tc.units[u], self.tc.unit_ids(u))

    # --- window search ------------------------------------------------------------------------------------
    def _lookup_ends(self, c: np.ndarray, kind: str) -> np.ndarray:
        """For target token offsets ``c`` (vectorized), the global unit ``g`` starting exactly there whose
        predecessor may end a haystack, or -1."""
        tc = self.tc
        p, r = np.divmod(c, tc.n_tokens)
        u = np.searchsorted(tc.off[:-1], r)
        u = np.minimum(u, tc.n_units - 1)
        hit = tc.off[u] == r
        g = p * tc.n_units + u
        prev_ok = self._end_ok[kind][(g - 1) % tc.n_units]
        return np.where(hit & prev_ok & (c >= 0), g, -1)

    def _windows(self, H: int, kind: str, rng: random.Random):
        """Yield (first_piece, a, g) candidates: haystack = first_piece + global units [a+1, g)."""
        tc = self.tc
        n = tc.n_units
        starts = np.flatnonzero(self._start_ok)
        first = self._first_lengths()
        if len(starts):
            c = H - first[starts] + tc.cum(starts + 1)
            g = self._lookup_ends(c, kind)
            ok = (g >= starts + 1) & (first[starts] <= H)
            hits = list(zip(starts[ok].tolist(), g[ok].tolist()))
            rng.shuffle(hits)
            for a, gg in hits[:MAX_WINDOW_TRIES]:
                yield _Piece(tc.units[a].lstrip(), self.tc.encode(tc.units[a].lstrip())), a, gg, False
        # Ragged start: enter the first sentence at a word boundary (fine-grained token counts).
        order = list(range(n))
        rng.shuffle(order)
        tried = 0
        for a in order[:4000]:
            text = tc.units[a]
            cuts = [i for i in range(1, len(text)) if text[i - 1].isspace() and not text[i].isspace()]
            if not cuts:
                continue
            rs = [len(self.tc.encode(text[i:])) for i in cuts]
            c = np.array([H - r for r in rs], dtype=np.int64) + tc.cum(a + 1)
            g = self._lookup_ends(c, kind)
            for i, gg, r in zip(cuts, g.tolist(), rs):
                if gg >= a + 1 and r <= H:
                    tried += 1
                    yield _Piece(text[i:], self.tc.encode(text[i:])), a, gg, True
                    if tried > MAX_WINDOW_TRIES:
                        return

    # --- build -------------------------------------------------------------------------------------------
    def build(self, length: int, depth: float, seed: int) -> Prompt:
        """The prompt for one cell. Deterministic in (length, depth, seed) for a given builder."""
        length, depth = int(length), float(depth)
        if not 0.0 <= depth <= 100.0:
            raise YocoEvalError(f"depth {depth:g} is outside 0–100: give depths in percent, e.g. 0:100:11")
        rng = random.Random(seed)
        sample = sample_needles(self.variant, rng, depth)
        prefix = _Piece(self._prefix_text(sample), self._enc(self._prefix_text(sample)))
        suffixes = [(k, _Piece(t, self._enc(t))) for k, t in self._suffixes(sample)]
        renders = [{"line": self._piece(nd.text + "\n"), "inline": self._piece(" " + nd.text)} for nd in sample.needles]
        fixed = self.prefix_tokens + len(prefix.ids)
        frame = self.frame_tokens(sample)
        if length < frame + 1:
            raise YocoEvalError(
                f"length {length} is below the prompt template's own size ({frame} tokens for instruction, "
                f"question and needles under {getattr(self.tok, 'name', 'this tokenizer')}): use lengths ≥ {frame + 1}"
            )
        last_error = "no window of the haystack fits"
        for kind, suffix in suffixes:
            est = sum(len(r["line"].ids) for r in renders)
            seen: set[int] = set()
            for _ in range(6):
                H = length - fixed - len(suffix.ids) - est
                if H < 1 or H in seen:
                    break
                seen.add(H)
                result = None
                for first, a, g, ragged in self._windows(H, kind, rng):
                    last = first if g == a + 1 else self._unit_piece(g - 1)
                    if g > a + 1 and not self._seam_ok(first, self._unit_piece(a + 1)):
                        continue
                    if not self._seam_ok(last, suffix):
                        continue
                    placed = self._place(sample, renders, first, a, g, H, prefix, suffix)
                    if placed is None:
                        continue
                    actual = sum(len(p.ids) for grp in placed[0] for _, p in grp[1])
                    if actual != est:
                        result = ("retarget", actual)
                        break
                    prompt = self._assemble(length, sample, prefix, suffix, first, a, g, H, placed, ragged)
                    if prompt is None:
                        last_error = "re-encoding the assembled text changed its tokens"
                        continue
                    return prompt
                if result is None:
                    break
                est = result[1]
        raise YocoEvalError(
            f"could not build an exact {length}-token prompt from haystack {self.tc.corpus.name} ({last_error}): "
            "try another --haystack or length"
        )

    def _place(self, sample, renders, first, a, g, H, prefix, suffix):
        """Assign needles to boundaries. Returns ([(k, [(needle_idx, piece)...]), ...], positions) or None."""
        tc = self.tc
        m = g - a  # pieces: 0 = first, k = unit a+k for 1 <= k < m
        f = len(first.ids)
        ks = np.arange(m + 1, dtype=np.int64)
        pos = np.zeros(m + 1, dtype=np.int64)
        if m >= 1:
            pos[1:] = f + tc.cum(a + ks[1:]) - tc.cum(a + 1)
        elig = np.zeros(m + 1, dtype=bool)
        elig[0] = elig[m] = True
        if m >= 2:
            elig[1:m] = tc.sentence_end[(a + ks[1:m] - 1) % tc.n_units]
        if pos[m] != H:
            return None
        banned: set[int] = set()
        order = sorted(range(len(sample.needles)), key=lambda i: (sample.needles[i].depth, i))
        for _ in range(64):
            groups: dict[int, list[int]] = {}
            cand = np.flatnonzero(elig)
            if len(cand) == 0:
                return None
            for i in order:
                t = sample.needles[i].depth / 100.0 * H
                j = int(np.searchsorted(pos[cand], t))
                lo, hi = max(j - 1, 0), min(j, len(cand) - 1)
                k = int(cand[lo] if abs(pos[cand[lo]] - t) <= abs(pos[cand[hi]] - t) else cand[hi])
                groups.setdefault(k, []).append(i)
            out = []
            bad = None
            for k in sorted(groups):
                left = prefix if k == 0 else (first if k == 1 else self._unit_piece(a + k - 1))
                right = suffix if k == m else (first if k == 0 else self._unit_piece(a + k))
                styles = ("line", "inline") if (k == 0 or left.text.endswith("\n")) else ("inline", "line")
                chosen = None
                for style in styles:
                    group = [renders[i][style] for i in groups[k]]
                    if self._seam_ok(left, *group, right):
                        chosen = [(i, renders[i][style]) for i in groups[k]]
                        break
                if chosen is None:
                    bad = k
                    break
                out.append((k, chosen))
            if bad is None:
                return out, pos
            elig[bad] = False
            banned.add(bad)
        return None

    def _assemble(self, length, sample, prefix, suffix, first, a, g, H, placed, ragged) -> Prompt | None:
        tc = self.tc
        groups, pos = placed
        hay_ids = np.concatenate([np.asarray(first.ids, dtype=np.int64), tc.tokens(int(tc.cum(a + 1)), int(tc.cum(g)))])
        hay_text = first.text + tc.text_units(a + 1, g)
        n = tc.n_units

        def cpos(k: int) -> int:
            if k == 0:
                return 0
            ga = a + 1
            gk = a + k
            c0 = (ga // n) * tc.n_chars + tc.coff[ga % n]
            ck = (gk // n) * tc.n_chars + tc.coff[gk % n]
            return len(first.text) + int(ck - c0)

        ids_parts = [np.asarray(prefix.ids, dtype=np.int64)]
        text_parts = [prefix.text]
        tok_at = self.prefix_tokens + len(prefix.ids)
        char_at = len(prefix.text)
        prev_t, prev_c = 0, 0
        needles: list[PlacedNeedle | None] = [None] * len(sample.needles)
        for k, chosen in groups:
            t, c = int(pos[k]), cpos(k)
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
                    depth_actual=100.0 * t / H,
                    char_position=char_at + lead,
                    rendered=piece.text,
                )
                ids_parts.append(np.asarray(piece.ids, dtype=np.int64))
                text_parts.append(piece.text)
                tok_at += len(piece.ids)
                char_at += len(piece.text)
        ids_parts.append(hay_ids[prev_t:])
        text_parts.append(hay_text[prev_c:])
        ids_parts.append(np.asarray(suffix.ids, dtype=np.int64))
        text_parts.append(suffix.text)
        ids = np.concatenate(ids_parts)
        text = "".join(text_parts)
        if self.prefix_tokens + len(ids) != length:
            return None
        verified = False
        if self.verify:
            re_ids = encode(self.tok, text)
            if len(re_ids) != len(ids) or not np.array_equal(np.asarray(re_ids, dtype=np.int64), ids):
                return None
            verified = True
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
            haystack_tokens=H,
            corpus_tokens=tc.n_tokens,
            window={"start_unit": a, "end_unit": g, "ragged_start": ragged, "corpus_units": n},
            verified=verified,
        )
