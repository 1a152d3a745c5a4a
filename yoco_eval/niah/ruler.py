"""RULER's needle tasks (NVIDIA RULER, ``scripts/data/synthetic/niah.py`` and ``synthetic.yaml``), rebuilt on our
exact-length builder. Side by side with RULER's definitions in ``tasks/niah/README.md``.

===========================  ==================  ========  ==========  ======  =======  ==========================
variant                      haystack            key       value       keys    values   asked
===========================  ==================  ========  ==========  ======  =======  ==========================
``ruler_niah_single_1``      ``ruler-noise``     word      7 digits    1       1        the key
``ruler_niah_single_2``      ``ruler-essays``    word      7 digits    1       1        the key
``ruler_niah_single_3``      ``ruler-essays``    word      uuid        1       1        the key
``ruler_niah_multikey_1``    ``ruler-essays``    word      7 digits    4       1 each   one key (3 distractors)
``ruler_niah_multikey_2``    ``ruler-needles``   word      7 digits    1       1        the key (every line a needle)
``ruler_niah_multikey_3``    ``ruler-needles-uuids``  uuid  uuid       1       1        the key (every line a needle)
``ruler_niah_multivalue``    ``ruler-essays``    word      7 digits    1       4        all 4 values
``ruler_niah_multiquery``    ``ruler-essays``    word      7 digits    4       1 each   all 4 keys
===========================  ==================  ========  ==========  ======  =======  ==========================

Positions as RULER draws them, not our depth grid: on the noise and needle haystacks each needle goes before a
line drawn uniformly at random (``placement="uniform"``, ``sites="lines"``); in essays at the sentence index
``int(n_sentences × depth/100)`` for depths sampled without replacement from ``round(linspace(0, 100, 40))``
(``placement="ruler_depths"``). The cell's depth is therefore ignored; each needle's drawn and realized position
is recorded (``depth_requested``, ``depth_actual``, ``token_position``). Scoring is RULER's ``string_match_all``.

The needle-filled haystacks are one seeded pass of needle lines ("One of the special magic numbers for
{word} is: {number}."); the keys asked about are drawn from nouns the haystack never uses, so the asked key is
never also a haystack line.
"""

from __future__ import annotations

import random
import uuid

from yoco_eval.niah.words import ADJECTIVES, HAYSTACK_NOUNS

RULER_NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
RULER_NEEDLE = "One of the special magic {types} for {key} is: {value}."
NEEDLE_HAYSTACK_LINES = {"ruler-needles": 10_000, "ruler-needles-uuids": 4_000}
NOISE_LINES = 200


def _instruction(plural: bool, t: str) -> str:
    if plural:
        return f"Some special magic {t}s are hidden within the following text. Make sure to memorize it. " + (
            f"I will quiz you about the {t}s afterwards."
        )
    return f"A special magic {t} is hidden within the following text. Make sure to memorize it. " + (
        f"I will quiz you about the {t} afterwards."
    )


def _ruler(name: str, haystack: str, key: str, value: str, *, keys: int = 1, values: int = 1, asked: int = 1
           ) -> tuple[str, dict]:  # fmt: skip
    t = "uuid" if value == "uuid" else "number"
    plural = asked * values > 1  # RULER turns its template singular when one value is asked for
    ask = "{keys}" if asked > 1 else "{key}"
    verb = "are all the special magic" if plural else "is the special magic"
    tt = f"{t}s" if plural else t
    mode = "multivalue" if values > 1 else ("multiquery" if asked > 1 else ("distractors" if keys > 1 else "single"))
    lines = haystack != "ruler-essays"
    return name, dict(
        needle=RULER_NEEDLE.format(types=f"{t}s", key="{key}", value="{value}"),
        question=f"What {verb} {tt} for {ask} mentioned in the provided text?",
        answer_prefix=f"The special magic {tt} for {ask} mentioned in the provided text {'are' if plural else 'is'}",
        instruction=_instruction(plural, t),
        num_needles=max(keys, values),
        mode=mode,
        placement="uniform" if lines else "ruler_depths",
        key_type=key,
        value_type=value,
        metric="string_match_all",
        haystack=haystack,
        sites="lines" if lines else "sentences",
    )


# name -> the fields of its :class:`~yoco_eval.niah.variants.Variant` (built and registered by variants.py)
RULER_TASKS: dict[str, dict] = {
    name: fields
    for name, fields in (
        _ruler("ruler_niah_single_1", "ruler-noise", "word", "number"),
        _ruler("ruler_niah_single_2", "ruler-essays", "word", "number"),
        _ruler("ruler_niah_single_3", "ruler-essays", "word", "uuid"),
        _ruler("ruler_niah_multikey_1", "ruler-essays", "word", "number", keys=4),
        _ruler("ruler_niah_multikey_2", "ruler-needles", "word", "number"),
        _ruler("ruler_niah_multikey_3", "ruler-needles-uuids", "uuid", "uuid"),
        _ruler("ruler_niah_multivalue", "ruler-essays", "word", "number", values=4),
        _ruler("ruler_niah_multiquery", "ruler-essays", "word", "number", keys=4, asked=4),
    )
}


def noise_text() -> str:
    """RULER's noise haystack: its filler line, repeated (one a line)."""
    return "\n".join([RULER_NOISE] * NOISE_LINES)


def needle_haystack_text(name: str) -> str:
    """A needle-filled haystack: one seeded pass of needle lines with random keys and values (RULER draws fresh
    ones per sample; here each cell reads its own window of a long pass). Word keys use nouns that asked keys
    never use."""
    rng = random.Random(f"yoco-eval:{name}")
    out = []
    for _ in range(NEEDLE_HAYSTACK_LINES[name]):
        if name == "ruler-needles":
            key = f"{rng.choice(ADJECTIVES)}-{rng.choice(HAYSTACK_NOUNS)}"
            out.append(RULER_NEEDLE.format(types="numbers", key=key, value=rng.randrange(10**6, 10**7)))
        else:
            key, value = (str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2))
            out.append(RULER_NEEDLE.format(types="uuids", key=key, value=value))
    return "\n".join(out)
