"""The lm-eval needle tasks size prompts with the tokenizer of ``pretrained=``, also for a shipped model's name."""

from __future__ import annotations

import pytest

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.lm_eval_task import _tokenizer


@pytest.mark.parametrize("name", ["yoco-needle-7m", "models/yoco-needle-7m"])
def test_shipped_model_name_gives_its_tokenizer_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tok = _tokenizer({"pretrained": name})
    assert tok.encode("ab", bos=False) == [101, 102]  # the embedded model's byte tokenizer (bytes + 4)


def test_unknown_name_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(YocoEvalError, match="unknown tokenizer"):
        _tokenizer({"pretrained": "no-such-model"})
