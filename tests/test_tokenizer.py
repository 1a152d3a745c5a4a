from __future__ import annotations

import pytest

from yoco_eval.errors import YocoEvalError
from yoco_eval.tokenizer import ByteTokenizer, YOCOTokenizer, cl100k_encoding, load_tokenizer

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
