"""Where a needle prompt's haystack can come from: every window of the repeated corpus with an exact token count.

``WindowFinder`` holds the per-corpus tables the search needs (each unit's length when a haystack starts at it, the
length change when the line break before the question is encoded with a haystack's last sentence, the token counts
of every word or character entry point), computed once per tokenized corpus and shared by every builder of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from yoco_eval.niah.tokens import TokenizedCorpus
from yoco_eval.tokenizer import encode, encode_many

RAGGED_BATCH = 64  # units whose word-start entry points are encoded in one batch
RAGGED = object()  # marker a window search yields when it moves on to finer starts
_COUNT_PROBE = "Needle probe: The quick brown fox, 12345 UUIDs and \u00e9t\u00e9.\n\nNext line."
_TABLES: dict[tuple, dict] = {}


@dataclass
class Piece:
    text: str
    ids: list[int] | np.ndarray


@dataclass
class Window:
    """A haystack candidate: ``first`` (unit ``a`` entered at a sentence or word start), then global units
    ``a+1 .. g-1``; with ``last`` set (end kind ``sep``) unit ``g-1`` is replaced by its text plus the line break
    that precedes the question, encoded as one piece (cl100k/o200k merge ``".\\n"`` into one token)."""

    first: Piece
    a: int
    g: int
    ragged: bool
    kind: str  # "nl": ends at a line end | "sep": ends mid-paragraph, "\n" joined to the last sentence
    last: Piece | None = None

    @property
    def m(self) -> int:
        return self.g - self.a  # number of haystack pieces; needle boundaries are 0..m


def piece_ids(p: Piece) -> list[int]:
    return p.ids.tolist() if isinstance(p.ids, np.ndarray) else list(p.ids)


class WindowFinder:
    """Windows of one tokenized corpus (repeated without end), for one tokenizer."""

    def __init__(self, tok, tc: TokenizedCorpus):
        self.tok, self.tc = tok, tc
        self._nl_end = tc.sentence_end & tc.ends_newline
        self._sep_end = tc.sentence_end & ~tc.ends_newline
        self._fast_counts = None
        # per-corpus tables (first-sentence lengths, end re-encodings, word-start cuts), shared by every builder
        # of the same tokenized corpus: computed once, on first use
        key = (tc.corpus.sha256, tc.tokenizer_fingerprint, tc.n_units)
        if key not in _TABLES:
            if len(_TABLES) >= 4:
                _TABLES.pop(next(iter(_TABLES)))
            _TABLES[key] = {"first": None, "sep": None, "ragged": {}}
        self._tables = _TABLES[key]
        self._ragged: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = self._tables["ragged"]
        if "start_ok" not in self._tables:  # a haystack may start at a sentence start that holds text
            self._tables["start_ok"] = np.roll(tc.sentence_end, 1) & np.array([bool(u.strip()) for u in tc.units])
        self._start_ok = self._tables["start_ok"]

    def _first_lengths(self) -> np.ndarray:
        """Token count of every unit entered at its sentence start (leading whitespace dropped)."""
        if self._tables["first"] is None:
            tc = self.tc
            lens = np.diff(tc.off).copy()
            idx = [u for u in range(tc.n_units) if tc.starts_space[u] and self._start_ok[u]]
            if idx:
                lens[idx] = self._token_counts([tc.units[u].lstrip() for u in idx])
            self._tables["first"] = lens
        return self._tables["first"]

    def _token_counts(self, texts: list[str]) -> list[int]:
        """Token counts of many texts. A Hugging Face fast tokenizer is asked through its backend's
        ``encode_batch_fast`` (several times faster than the transformers call), once checked to agree."""
        if self._fast_counts is None:
            backend = getattr(getattr(self.tok, "hf_tokenizer", None), "backend_tokenizer", None)
            fast = getattr(backend, "encode_batch_fast", None)
            probe = [_COUNT_PROBE, " " + _COUNT_PROBE, _COUNT_PROBE + "\n"]
            ok = callable(fast) and [len(e.ids) for e in fast(probe, add_special_tokens=False)] == [
                len(encode(self.tok, t)) for t in probe
            ]
            self._fast_counts = (lambda xs: [len(e.ids) for e in fast(xs, add_special_tokens=False)]) if ok else False
        if self._fast_counts:
            return self._fast_counts(texts)
        return [len(e) for e in encode_many(self.tok, texts)]

    def _sep_deltas(self) -> np.ndarray:
        """Per unit ending a sentence mid-paragraph: tokens of ``unit + "\\n"`` minus the unit's own tokens."""
        if self._tables["sep"] is None:
            tc = self.tc
            delta = np.zeros(tc.n_units, dtype=np.int64)
            idx = np.flatnonzero(self._sep_end)
            if len(idx):
                counts = self._token_counts([tc.units[u] + "\n" for u in idx])
                delta[idx] = np.array(counts, dtype=np.int64) - (tc.off[idx + 1] - tc.off[idx])
            self._tables["sep"] = delta
        return self._tables["sep"]

    def _ragged_cuts(self, units: list[int], fine: bool) -> None:
        """Entry points of units (offsets, token counts of the rest), cached: word starts, or with ``fine`` every
        other character, spaces included (the last resort: a haystack of equal lines under a byte tokenizer
        reaches some sizes only so). One batched encode per call (an HF tokenizer encodes a batch far faster
        than one text at a time)."""
        todo = [u for u in units if (u, fine) not in self._ragged]
        texts, owners = [], []
        for u in todo:
            text = self.tc.units[u]
            word = [text[i - 1].isspace() and not text[i].isspace() for i in range(1, len(text))]
            cuts = [i for i in range(1, len(text)) if word[i - 1] != fine]
            self._ragged[u, fine] = (np.array(cuts, dtype=np.int64), np.zeros(len(cuts), dtype=np.int64))
            texts.extend(text[i:] for i in cuts)
            owners.extend((u, j) for j in range(len(cuts)))
        for (u, j), count in zip(owners, self._token_counts(texts) if texts else []):
            self._ragged[u, fine][1][j] = count

    def unit_piece(self, g: int) -> Piece:
        u = g % self.tc.n_units
        return Piece(self.tc.units[u], self.tc.unit_ids(u))

    def piece_at(self, w: Window, k: int) -> Piece:
        """Haystack piece ``k`` (0 <= k < m) of a window."""
        if k == 0:
            return w.first
        if k == w.m - 1 and w.last is not None:
            return w.last
        return self.unit_piece(w.a + k)

    # --- window search ------------------------------------------------------------------------------------
    def _match(self, c: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """For token offsets ``c`` of the repeated corpus, the global unit ``g`` starting exactly there whose
        predecessor satisfies ``mask``, else -1 (vectorized)."""
        tc = self.tc
        p, r = np.divmod(c, tc.n_tokens)
        u = np.minimum(np.searchsorted(tc.off[:-1], r), tc.n_units - 1)
        g = p * tc.n_units + u
        return np.where((tc.off[u] == r) & mask[(g - 1) % tc.n_units] & (c >= 0), g, -1)

    def _ends(self, c: np.ndarray, kind: str) -> list[np.ndarray]:
        """End units ``g`` for haystacks whose body must end at offset ``c`` (before any end re-encoding)."""
        if kind == "nl":
            return [self._match(c, self._nl_end)]
        delta = self._sep_deltas()
        return [self._match(c - d, self._sep_end & (delta == d)) for d in np.unique(delta[self._sep_end])]

    def _window(self, first: Piece, a: int, g: int, ragged: bool, kind: str) -> Window:
        last = None
        if kind == "sep":
            text = self.tc.units[(g - 1) % self.tc.n_units] + "\n"
            last = Piece(text, self.tc.encode(text))
        return Window(first, a, g, ragged, kind, last)

    def windows(self, H: int, kind: str, rng: random.Random):
        """Every window of exactly ``H`` haystack tokens ending as ``kind`` says, in a seeded random order:
        sentence-aligned starts first, then starts at word boundaries. Yields a ``Window``, or None after each
        unit scanned without a hit (so a caller can share its effort between several searches). Finite."""
        tc = self.tc
        min_m = 2 if kind == "sep" else 1
        starts = np.flatnonzero(self._start_ok)
        first = self._first_lengths()
        if len(starts):
            c = H - first[starts] + tc.cum(starts + 1)
            hits = []
            for g in self._ends(c, kind):
                ok = (g >= starts + min_m) & (first[starts] <= H)
                hits.extend(zip(starts[ok].tolist(), g[ok].tolist()))
            rng.shuffle(hits)
            for a, g in hits:
                text = tc.units[a].lstrip()
                yield self._window(Piece(text, tc.encode(text)), a, g, False, kind)
        order = list(range(tc.n_units))
        rng.shuffle(order)
        for fine in (False, True):
            yield RAGGED  # the coarser windows are used up; the caller may defer the finer search
            for b in range(0, len(order), RAGGED_BATCH):
                batch = order[b : b + RAGGED_BATCH]
                self._ragged_cuts(batch, fine)
                for a in batch:
                    cuts, lens = self._ragged[a, fine]
                    found = False
                    if len(cuts):
                        c = H - lens + tc.cum(a + 1)
                        for g in self._ends(c, kind):
                            for i in np.flatnonzero((g >= a + min_m) & (lens <= H)).tolist():
                                text = tc.units[a][int(cuts[i]) :]
                                found = True
                                yield self._window(Piece(text, tc.encode(text)), a, int(g[i]), True, kind)
                    if not found:
                        yield None

    def positions(self, w: Window) -> np.ndarray:
        """Token offset (within the haystack) of every needle boundary 0..m."""
        tc, m = self.tc, w.m
        pos = np.zeros(m + 1, dtype=np.int64)
        f = len(w.first.ids)
        if m >= 2:
            pos[1:m] = f + tc.cum(w.a + np.arange(1, m, dtype=np.int64)) - tc.cum(w.a + 1)
        pos[m] = pos[m - 1] + len(self.piece_at(w, m - 1).ids) if m >= 2 else f
        return pos

    def char_positions(self, w: Window, ks: np.ndarray) -> np.ndarray:
        """Character offset (within the haystack text) of boundaries ``ks`` (vectorized, 0 <= k <= m)."""
        tc, n = self.tc, self.tc.n_units
        ks = np.asarray(ks, dtype=np.int64)
        g = w.a + np.maximum(ks, 1)
        chars = (g // n) * tc.n_chars + tc.coff[g % n]
        ga = w.a + 1
        out = len(w.first.text) + chars - ((ga // n) * tc.n_chars + tc.coff[ga % n])
        out = np.where(ks == 0, 0, out)
        if w.last is not None:  # the last piece carries one extra "\n"
            out = np.where(ks == w.m, out + 1, out)
        return out

    def verify_local(self, w: Window, pos, placed, prefix: Piece, text: str, ids: np.ndarray) -> bool:
        """Re-encode the text around every splice point (two haystack pieces either side, the prefix, needles and
        the question included) and compare with the spliced ids. Between splice points the prompt is corpus
        text whose every unit seam was checked when the corpus was tokenized."""
        m = w.m
        extra_t = {k: sum(len(p.ids) for _, p in grp) for k, grp in placed}
        extra_c = {k: sum(len(p.text) for _, p in grp) for k, grp in placed}
        needle_ks = sorted(extra_t)

        def offsets(k: int) -> tuple[int, int]:  # (token, char) of haystack boundary k, before its needles
            before = [j for j in needle_ks if j < k]
            t = len(prefix.ids) + int(pos[k]) + sum(extra_t[j] for j in before)
            c = len(prefix.text) + int(self.char_positions(w, np.array([k]))[0]) + sum(extra_c[j] for j in before)
            return t, c

        spots = sorted({0, 1, m - 1, m, *needle_ks})
        intervals: list[list[int]] = []
        for k in spots:
            lo, hi = max(0, k - 2), min(m, k + 2)
            if intervals and lo <= intervals[-1][1]:
                intervals[-1][1] = max(intervals[-1][1], hi)
            else:
                intervals.append([lo, hi])
        for lo, hi in intervals:
            t0, c0 = (0, 0) if lo == 0 else offsets(lo)
            t1, c1 = (len(ids), len(text)) if hi == m else offsets(hi)
            if encode(self.tok, text[c0:c1]) != ids[t0:t1].tolist():
                return False
        return True
