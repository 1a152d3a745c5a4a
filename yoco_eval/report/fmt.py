"""Number formatting shared by every page (also registered as jinja filters). ``None`` always renders as "—"."""

from __future__ import annotations

import math

DASH = "—"


def length(n: int | None) -> str:
    """Context length: exact binary multiples as 4K / 1M, anything else with thousands separators."""
    if n is None:
        return DASH
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10}K"
    return f"{n:,}"


def length_labels(values: list[int] | tuple[int, ...]) -> list[str]:
    """Labels for one axis of context lengths, all in one style.

    Compact (``512``, ``4K``, ``1M``) when every value is an exact binary multiple (or below 1024), else every
    value with thousands separators (``1,024``, ``1,536``): never "1K" next to "1,536".
    """
    compact = all(n < 1024 or n % 1024 == 0 for n in values)
    return [length(n) if compact else f"{n:,}" for n in values]


def depth(d: float | None) -> str:
    """Depth percent without trailing zeros: 0, 12.5, 33.33."""
    if d is None:
        return DASH
    return f"{d:.2f}".rstrip("0").rstrip(".")


def pct(score: float | None, digits: int = 0) -> str:
    """A 0..1 score as a percentage number without the sign (the page says the unit)."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return DASH
    return f"{score * 100:.{digits}f}"


def signed_pct(delta: float | None) -> str:
    if delta is None:
        return DASH
    v = round(delta * 100)
    return "±0" if v == 0 else f"{v:+d}".replace("-", "−")


def num(x: float | int | None, digits: int = 3) -> str:
    if x is None:
        return DASH
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}"


def seconds(s: float | None) -> str:
    if s is None:
        return DASH
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.2f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def bytes_(b: int | float | None) -> str:
    if b is None:
        return DASH
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= size:
            return f"{b / size:.2f} {unit}"
    return f"{int(b)} B"


def text(v: object) -> str:
    """Any metadata value as text: None → "—", bools as yes/no, lists comma-joined."""
    if v is None or v == "":
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(text(x) for x in v) if v else DASH
    if isinstance(v, dict):
        return ", ".join(f"{k}={text(x)}" for k, x in v.items()) if v else DASH
    return str(v)


FILTERS = {
    "tokens": length,
    "depth": depth,
    "pct": pct,
    "signed_pct": signed_pct,
    "num": num,
    "seconds": seconds,
    "bytes": bytes_,
    "text": text,
}
