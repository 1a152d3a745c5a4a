"""The length and depth syntax, in ONE place (``yoco-eval needle``, ``profile``, the lm-eval needle tasks, YAML).

Lengths are token counts: ``4096``, ``4k`` (= 4,096), ``1.5k`` (= 1,536), ``1M`` or ``1m`` (= 1,048,576), ranges
``start:stop:step`` (``128k:1M:128k``, stop included) and ``max`` (the model's context, given by the caller).
Depths are percents of the haystack: a list (``0,50,100``) or ``start:stop:count`` (``0:100:11`` = 11 evenly
spaced depths). Lists may also be YAML/Python lists (``[1024, "4k"]``). Every mistake is one
:class:`~yoco_eval.errors.YocoEvalError` line that shows the accepted forms.
"""

from __future__ import annotations

import re

from yoco_eval.errors import YocoEvalError

_UNITS = {"": 1, "k": 1024, "m": 1024**2}
_LENGTH = re.compile(r"(\d+(?:\.\d+)?)([kKmM]?)")


def parse_length(token) -> int | str:
    """One length: ``"4k"`` -> 4096, ``"max"`` -> ``"max"`` (resolved by :func:`parse_lengths`)."""
    tok = str(token).strip()
    if tok == "max":
        return "max"
    m = _LENGTH.fullmatch(tok)
    if not m:
        raise YocoEvalError(f"bad length {tok!r}: use integers or k/M suffixes, e.g. 1k,4k,128k,1M")
    v = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if v != int(v) or v < 1:
        raise YocoEvalError(f"length {tok!r} is not a whole positive number of tokens: use e.g. 1536 or 1.5k")
    return int(v)


def _resolve_max(v, max_length: int | None) -> int:
    if v != "max":
        return v
    if not max_length:
        raise YocoEvalError("length 'max' needs a model with a known context size: give numbers instead")
    return int(max_length)


def parse_lengths(spec, max_length: int | None = None, *, sort: bool = True) -> list[int]:
    """``"1k,4k,1M"`` / ``"128k:1M:128k"`` / ``[1024, "4k"]`` -> token counts (k = 1024, M = 1024²).

    Args:
        spec: a comma-separated string, a list, or a single int.
        max_length: what ``max`` stands for (None: ``max`` is an error).
        sort: sorted and de-duplicated (sweeps); False keeps the given order (profile's measurement order).
    """
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    out: list[int] = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        if item.count(":") == 2:
            a, b, step = (parse_length(x) for x in item.split(":"))
            if not isinstance(a, int) or not isinstance(step, int):
                raise YocoEvalError(f"bad length range {item!r}: use start:stop:step, e.g. 128k:1M:128k")
            out.extend(range(a, _resolve_max(b, max_length) + 1, step))
        else:
            out.append(_resolve_max(parse_length(item), max_length))
    if not out:
        raise YocoEvalError("no context lengths given: pass --lengths, e.g. 1k,4k,16k")
    return sorted(dict.fromkeys(out)) if sort else out


def parse_depths(spec) -> list[float]:
    """``"0:100:11"`` (11 evenly spaced) or ``"0,25,50"`` or ``[0, 50]`` -> percents in [0, 100], in order."""
    try:
        if isinstance(spec, (list, tuple)):
            vals = [float(x) for x in spec]
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            vals = [float(spec)]
        elif str(spec).strip().count(":") == 2:
            a, b, n = str(spec).strip().split(":")
            a, b, k = float(a), float(b), int(n)
            if k < 1:
                raise ValueError
            vals = [a] if k == 1 else [round(a + (b - a) * i / (k - 1), 6) for i in range(k)]
        else:
            vals = [float(x) for x in str(spec).split(",") if x.strip()]
    except (TypeError, ValueError) as e:
        raise YocoEvalError(f"bad depths {spec!r}: use start:stop:count (0:100:11) or a list (0,50,100)") from e
    for d in vals:
        if not 0.0 <= d <= 100.0:
            raise YocoEvalError(f"depth {d:g} is outside 0–100: give depths in percent, e.g. 0:100:11")
    if not vals:
        raise YocoEvalError("no depths given: pass --depths, e.g. 0:100:11 or 0,50,100")
    return list(dict.fromkeys(vals))


def format_lengths(lengths) -> str:
    """``[1024, 1536, 4096]`` -> ``"1k, 1536, 4k"``: the way a user would type them back."""
    out = []
    for L in lengths:
        L = int(L)
        if L % 1024**2 == 0:
            out.append(f"{L // 1024**2}M")
        elif L % 1024 == 0:
            out.append(f"{L // 1024}k")
        else:
            out.append(str(L))
    return ",".join(out)


def format_depths(depths) -> str:
    return ",".join(f"{float(d):g}" for d in depths)
