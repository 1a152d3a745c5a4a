"""Needle variants: wording, keys and values, how many needles, where they go, which one is asked for.

Presets (``VARIANTS``):

* ``single``: the YOCO paper's single needle (Gemini 1.5 / LWM style): "The special magic {city} number is
  {value}." and the question "What is the special magic {city} number?", answer prefix "The special magic {city}
  number is". Values are 5-digit numbers (the official code draws 1..50000; a fixed width avoids a short number
  such as "7" matching by accident).
* ``gkamradt``: Greg Kamradt's San Francisco needle with his system sentence and question; scored by substring
  of "eat a sandwich and sit in Dolores Park".
* ``multi``: the YOCO paper's Table 4 protocol: N needles with different cities ("... number is: {value}."), the
  target at the requested depth, a random 0..N-2 distractors before it and the rest after it, at random places;
  only the target is asked for (find one among N-1 distractors).
* ``multikey`` / ``multivalue`` / ``multiquery``: RULER's niah_multikey (one target among N-1 distractor keys),
  niah_multivalue (N values of one key, all asked for) and niah_multiquery (N keys, all asked for).
* ``ruler-single``: RULER's niah_single wording (word key, number value).
* ``ruler_niah_single_1/2/3``, ``ruler_niah_multikey_1/2/3``, ``ruler_niah_multivalue``, ``ruler_niah_multiquery``:
  RULER's own tasks (``yoco_eval.niah.ruler``): RULER's haystack (``haystack``, enforced), key and value kinds,
  needle positions drawn as RULER draws them (``placement`` ``uniform`` over lines or ``ruler_depths``; the cell's
  depth is ignored) and RULER's ``string_match_all``. The presets above are RULER-*style* depth-grid variants.

Every field can be overridden (user templates): ``needle``, ``question``, ``answer_prefix``, ``instruction``
may use ``{key}``, ``{value}``, ``{type}`` ("number"), ``{types}`` ("numbers"), ``{keys}`` (all asked keys) and
``{n}``. Value types: ``number`` (7 digits), ``number:D``, ``word``, ``uuid``; key types: ``city``, ``word``,
``number``, ``uuid``.
"""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import asdict, dataclass, field, replace

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.ruler import RULER_TASKS
from yoco_eval.niah.words import ADJECTIVES, CITIES, HAYSTACK_NOUNS, NOUNS, RESERVED_NOUNS  # noqa: F401 - re-exported

KEY_TYPES = ("city", "word", "number", "uuid", "fixed")
MODES = ("single", "distractors", "multivalue", "multiquery")
PLACEMENTS = ("depth", "yoco", "random", "spread", "uniform", "ruler_depths")
SITES = ("sentences", "lines")
METRICS = ("substring", "exact", "all_values", "string_match_all", "string_match_part")
# RULER's essay depths: np.round(np.linspace(0, 100, 40)), sampled without replacement per sample
RULER_DEPTHS = tuple(round(100 * i / 39) for i in range(40))
TYPE_WORDS = {
    "number": ("number", "numbers"),
    "word": ("word", "words"),
    "uuid": ("UUID", "UUIDs"),
    "fixed": ("answer", "answers"),
}
PLACEHOLDERS = ("key", "value", "type", "types", "keys", "n")


@dataclass(frozen=True)
class Variant:
    """A needle task. Serializable (``asdict``) into run.json, so a run can be rebuilt exactly."""

    name: str
    needle: str
    question: str
    answer_prefix: str
    instruction: str
    num_needles: int = 1
    mode: str = "single"  # single | distractors | multivalue | multiquery
    placement: str = "depth"  # depth | yoco (Table 4) | random (target at depth, others anywhere) | spread
    key_type: str = "city"
    value_type: str = "number:5"
    metric: str = "substring"
    answer_sep: str = " "  # between the question and the answer prefix (without a chat template)
    fixed_key: str = ""
    fixed_value: str = ""
    stop: tuple[str, ...] = ("\n\n",)
    haystack: str = ""  # the haystack this task is defined on ("" = any)
    sites: str = "sentences"  # where needles may go: after any sentence, or only after a line (RULER's noise)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Variant:
        d = dict(d)
        d["stop"] = tuple(d.get("stop", ("\n\n",)))
        known = set(cls.__dataclass_fields__)
        return validate_variant(cls(**{k: v for k, v in d.items() if k in known}))


_YOCO_INSTR = (
    "There is a special magic {type} inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the magic {type} there."
)
_RULER_INSTR = (
    "Some special magic {types} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {types} afterwards."
)

VARIANTS: dict[str, Variant] = {
    "single": Variant(
        name="single",
        needle="The special magic {key} {type} is {value}.",
        question="What is the special magic {key} {type}?",
        answer_prefix="The special magic {key} {type} is",
        instruction=_YOCO_INSTR,
    ),
    "gkamradt": Variant(
        name="gkamradt",
        needle="The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
        question="What is the best thing to do in San Francisco? "
        "Don't give information outside the document or repeat your findings.",
        answer_prefix="Here is the most relevant sentence in the context:",
        instruction="You are a helpful AI bot that answers questions for a user. Keep your response short and direct.",
        key_type="fixed",
        value_type="fixed",
        fixed_key="San Francisco",
        fixed_value="eat a sandwich and sit in Dolores Park",
        answer_sep="\n",
    ),
    "multi": Variant(
        name="multi",
        needle="The special magic {key} {type} is: {value}.",
        question="What is the special magic {key} {type}?",
        answer_prefix="The special magic {key} {type} is",
        instruction=_YOCO_INSTR,
        num_needles=4,
        mode="distractors",
        placement="yoco",
    ),
    "ruler-single": Variant(
        name="ruler-single",
        needle="One of the special magic {types} for {key} is: {value}.",
        question="What is the special magic {type} for {key} mentioned in the provided text?",
        answer_prefix="The special magic {type} for {key} mentioned in the provided text is",
        instruction=_RULER_INSTR,
        key_type="word",
        value_type="number",
    ),
    "multikey": Variant(
        name="multikey",
        needle="One of the special magic {types} for {key} is: {value}.",
        question="What is the special magic {type} for {key} mentioned in the provided text?",
        answer_prefix="The special magic {type} for {key} mentioned in the provided text is",
        instruction=_RULER_INSTR,
        num_needles=4,
        mode="distractors",
        placement="random",
        key_type="word",
        value_type="number",
    ),
    "multivalue": Variant(
        name="multivalue",
        needle="One of the special magic {types} for {key} is: {value}.",
        question="What are all the special magic {types} for {key} mentioned in the provided text?",
        answer_prefix="The special magic {types} for {key} mentioned in the provided text are",
        instruction=_RULER_INSTR,
        num_needles=4,
        mode="multivalue",
        placement="spread",
        key_type="word",
        value_type="number",
        metric="all_values",
    ),
    "multiquery": Variant(
        name="multiquery",
        needle="One of the special magic {types} for {key} is: {value}.",
        question="What are all the special magic {types} for {keys} mentioned in the provided text?",
        answer_prefix="The special magic {types} for {keys} mentioned in the provided text are",
        instruction=_RULER_INSTR,
        num_needles=4,
        mode="multiquery",
        placement="spread",
        key_type="word",
        value_type="number",
        metric="all_values",
    ),
}


def _value_kind(value_type: str) -> tuple[str, int]:
    kind, _, arg = value_type.partition(":")
    if kind == "number":
        try:
            digits = int(arg) if arg else 7
        except ValueError:
            digits = 0
        if not 1 <= digits <= 30:
            raise YocoEvalError(f"bad value type {value_type!r}: use number, number:D (1 ≤ D ≤ 30), word or uuid")
        return kind, digits
    if kind in ("word", "uuid", "fixed") and not arg:
        return kind, 0
    raise YocoEvalError(f"unknown value type {value_type!r}: use number, number:D, word or uuid")


def _check_template(field_name: str, template: str) -> None:
    try:
        template.format_map(_Probe())
    except (KeyError, ValueError, IndexError) as e:
        raise YocoEvalError(
            f"{field_name} template {template!r} is malformed ({e}): use only the placeholders "
            + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        ) from e


class _Probe(dict):
    def __missing__(self, key):
        if key in PLACEHOLDERS:
            return "x"
        raise KeyError(key)


def validate_variant(v: Variant) -> Variant:
    if v.mode not in MODES:
        raise YocoEvalError(f"unknown needle mode {v.mode!r}: use one of {', '.join(MODES)}")
    if v.placement not in PLACEMENTS:
        raise YocoEvalError(f"unknown placement {v.placement!r}: use one of {', '.join(PLACEMENTS)}")
    if v.sites not in SITES:
        raise YocoEvalError(f"unknown needle sites {v.sites!r}: use one of {', '.join(SITES)}")
    if v.placement == "ruler_depths" and v.num_needles > len(RULER_DEPTHS):
        raise YocoEvalError("ruler_depths placement draws distinct depths from 40: use at most 40 needles")
    if v.metric not in METRICS:
        raise YocoEvalError(f"unknown metric {v.metric!r}: use one of {', '.join(METRICS)}")
    if v.key_type not in KEY_TYPES:
        raise YocoEvalError(f"unknown key type {v.key_type!r}: use one of {', '.join(KEY_TYPES[:-1])}")
    _value_kind(v.value_type)
    if not 1 <= v.num_needles <= 1000:
        raise YocoEvalError(f"--num-needles {v.num_needles} is out of range: use 1 to 1000")
    if v.mode == "single" and v.num_needles != 1:
        raise YocoEvalError(
            f"variant {v.name} places one needle (got {v.num_needles}): use multi, multikey, "
            "multivalue or multiquery for several"
        )
    if v.key_type == "fixed" and v.num_needles != 1:
        raise YocoEvalError("a fixed needle (gkamradt) cannot be repeated: use --num-needles 1")
    if v.metric == "exact" and v.mode in ("multivalue", "multiquery"):
        raise YocoEvalError(f"metric exact needs one expected value but {v.mode} asks for several: use all_values")
    if v.key_type == "fixed" and not v.fixed_value:
        raise YocoEvalError("a fixed needle needs its expected answer: set fixed_value")
    for name in ("needle", "question", "answer_prefix", "instruction"):
        _check_template(name, getattr(v, name))
    if v.key_type != "fixed" and "{value}" not in v.needle:
        raise YocoEvalError(f"needle template {v.needle!r} has no {{value}}: the model would have nothing to find")
    if not v.needle.strip() or "\n" in v.needle.strip():
        raise YocoEvalError("the needle template must be one non-empty line of text")
    if not v.question.strip():
        raise YocoEvalError("the question template is empty: give a question")
    return v


def get_variant(name: str, **overrides) -> Variant:
    """A preset by name, with fields overridden (``None`` values are ignored)."""
    if name not in VARIANTS:
        raise YocoEvalError(f"unknown needle variant {name!r}: use one of {', '.join(VARIANTS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(Variant.__dataclass_fields__)
    if unknown:
        raise YocoEvalError(f"unknown variant field(s) {', '.join(sorted(unknown))}: see yoco_eval.niah.Variant")
    if "stop" in overrides:
        overrides["stop"] = tuple(overrides["stop"])
    v = replace(VARIANTS[name], **overrides)
    if "num_needles" in overrides and v.mode == "single" and v.num_needles > 1:
        v = replace(v, mode="distractors", placement="random")
    return validate_variant(v)


# --- sampling -----------------------------------------------------------------------------------------------


@dataclass
class NeedleSpec:
    key: str
    value: str
    text: str  # the needle sentence, without separators
    is_target: bool
    depth: float  # requested depth, percent of the haystack
    site: float | None = None  # RULER placement: fraction of the way through the needle sites (index-wise)


@dataclass
class Sample:
    needles: list[NeedleSpec]
    question: str
    answer_prefix: str
    instruction: str
    expected: list[str]
    metric: str
    asked_keys: list[str] = field(default_factory=list)


def _make_key(rng: random.Random, kind: str, used: set[str], nouns: tuple[str, ...] | list[str] = NOUNS) -> str:
    for _ in range(1000):
        if kind == "city":
            k = rng.choice(CITIES)
        elif kind == "word":
            k = f"{rng.choice(ADJECTIVES)}-{rng.choice(nouns)}"
        elif kind == "number":
            k = str(rng.randrange(10**6, 10**7))
        else:
            k = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        # keys must not contain one another ("York" / "New York") so a question names exactly one needle
        if k not in used and not any(k in u or u in k for u in used):
            used.add(k)
            return k
    raise YocoEvalError(f"cannot draw that many distinct {kind} keys: lower --num-needles or use --key-type uuid")


def _make_value(rng: random.Random, value_type: str, used: set[str]) -> str:
    kind, digits = _value_kind(value_type)
    for _ in range(1000):
        if kind == "number":
            v = str(rng.randrange(10 ** (digits - 1), 10**digits)) if digits > 1 else str(rng.randrange(10))
        elif kind == "word":
            v = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
        else:
            v = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if v not in used and not any(v in u or u in v for u in used):
            used.add(v)
            return v
    raise YocoEvalError(f"cannot draw that many distinct {value_type} values: lower --num-needles or use uuid")


def _join_keys(keys: list[str]) -> str:
    if len(keys) <= 1:
        return "".join(keys)
    if len(keys) == 2:
        return f"{keys[0]} and {keys[1]}"
    return ", ".join(keys[:-1]) + f", and {keys[-1]}"


def _depths(v: Variant, rng: random.Random, depth: float) -> tuple[list[float], int]:
    """Requested depths of the needles, and the index of the target (for distractor modes)."""
    n = v.num_needles
    if n == 1 or v.placement in ("uniform", "ruler_depths") and v.mode != "distractors":
        return [depth] * n, 0
    if v.placement == "spread":
        return [depth + i * (100.0 - depth) / n for i in range(n)], 0
    if v.placement == "yoco":
        # YOCO Table 4 (official multi_needle criterion): the prefix before the depth point holds a random 1..N-1
        # needles, the last of which is the target sitting at the depth point; the rest go after it.
        n_before = rng.randint(0, n - 2) if depth > 0 else 0
        before = sorted(rng.uniform(0.0, depth) for _ in range(n_before))
        after = sorted(rng.uniform(depth, 100.0) for _ in range(n - 1 - n_before))
        return [*before, depth, *after], n_before
    if v.placement == "random":
        others = [rng.uniform(0.0, 100.0) for _ in range(n - 1)]
        return [depth, *others], 0
    if v.placement in ("uniform", "ruler_depths"):  # RULER: positions drawn per sample, the target at random
        return [depth] * n, rng.randrange(n)
    return [depth] * n, 0  # "depth": all at the same point


def _fmt(template: str, **values) -> str:
    return template.format_map(values)


def sample_needles(v: Variant, rng: random.Random, depth: float) -> Sample:
    """Draw keys, values and depths for one cell (deterministic given the rng state)."""
    type1, types = TYPE_WORDS.get(_value_kind(v.value_type)[0], ("value", "values"))
    depths, target = _depths(v, rng, depth)
    n = v.num_needles
    used_k: set[str] = set()
    used_v: set[str] = set()
    nouns = RESERVED_NOUNS if v.haystack.startswith("ruler-needles") else NOUNS
    if v.key_type == "fixed":
        keys, values = [v.fixed_key], [v.fixed_value]
    elif v.mode == "multivalue":
        k = _make_key(rng, v.key_type, used_k, nouns)
        keys, values = [k] * n, [_make_value(rng, v.value_type, used_v) for _ in range(n)]
    else:
        keys = [_make_key(rng, v.key_type, used_k, nouns) for _ in range(n)]
        values = [_make_value(rng, v.value_type, used_v) for _ in range(n)]
    sites: list[float | None] = [None] * n
    if v.placement == "uniform":  # RULER's noise/needle haystacks: a line drawn uniformly per needle
        sites = [rng.random() for _ in range(n)]
    elif v.placement == "ruler_depths":  # RULER's essays: distinct depths from its 40-point grid
        sites = [d / 100.0 for d in rng.sample(RULER_DEPTHS, n)]
    if sites[0] is not None:
        depths = [100.0 * x for x in sites]
    if v.mode in ("multivalue", "multiquery"):
        is_target = [True] * n
    else:
        is_target = [i == target for i in range(n)]
    asked = list(dict.fromkeys(k for k, t in zip(keys, is_target) if t))
    ctx = {"type": type1, "types": types, "n": n, "keys": _join_keys(asked), "key": asked[0] if asked else ""}
    needles = [
        NeedleSpec(
            key=k,
            value=val,
            text=_fmt(v.needle, **{**ctx, "key": k, "value": val}).strip(),
            is_target=t,
            depth=d,
            site=st,
        )
        for k, val, t, d, st in zip(keys, values, is_target, depths, sites)
    ]
    expected = [nd.value for nd in needles if nd.is_target]
    return Sample(
        needles=needles,
        question=_fmt(v.question, value="", **ctx).strip(),
        answer_prefix=_fmt(v.answer_prefix, value="", **ctx).strip(),
        instruction=_fmt(v.instruction, value="", **ctx).strip(),
        expected=expected,
        metric=v.metric,
        asked_keys=asked,
    )


def random_letters(rng: random.Random, k: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(k))


# --- needle templates seen in this process (the fake model's oracle reads them) ---------------------------------
_SEEN_TEMPLATES: dict[str, None] = {}


def register_needle_template(template: str) -> None:
    """Remember a needle template a PromptBuilder uses, so that ``FakeNeedleModel``'s oracle can find needles of
    custom templates too (it measures the builder, not its own template list)."""
    _SEEN_TEMPLATES.setdefault(template, None)


def seen_needle_templates() -> list[str]:
    return list(_SEEN_TEMPLATES)


def check_haystack(v: Variant, corpus_name: str) -> None:
    """A variant defined on one haystack (RULER's) refuses another, so results labelled RULER mean RULER's task."""
    if v.haystack and corpus_name != v.haystack:
        raise YocoEvalError(
            f"variant {v.name} is defined on the {v.haystack} haystack but got {corpus_name}: "
            f"pass --haystack {v.haystack}"
        )


RULER_VARIANTS: dict[str, Variant] = {name: Variant(name=name, **fields) for name, fields in RULER_TASKS.items()}
VARIANTS.update(RULER_VARIANTS)
