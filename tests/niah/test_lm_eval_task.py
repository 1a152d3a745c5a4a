"""The lm-eval task version (tasks/niah) builds exact-length docs and scores with our scorer."""

from __future__ import annotations

from pathlib import Path

import pytest

from yoco_eval.niah.models import FakeNeedleModel
from yoco_eval.tokenizer import YOCOTokenizer

ROOT = Path(__file__).resolve().parents[2]
lm_eval = pytest.importorskip("lm_eval")


def _oracle_lm(seen: list):
    from lm_eval.api.model import LM

    class OracleLM(LM):
        def __init__(self):
            super().__init__()
            self.fake = FakeNeedleModel(YOCOTokenizer())

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for r in requests:
                text, kwargs = r.args
                seen.append(text)
                out.append(self.fake.answer(text))
            return out

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    return OracleLM()


@pytest.mark.parametrize("include", ["tasks", "tasks/niah"])
def test_niah_task_runs_through_lm_eval(include):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    meta = {"tokenizer": "yoco-cl100k", "lengths": "1k,2k", "depths": "0,50,100", "haystack": "noise"}
    tm = TaskManager(include_path=str(ROOT / include), include_defaults=False, metadata=meta)
    seen: list[str] = []
    res = simple_evaluate(model=_oracle_lm(seen), tasks=["niah_single", "niah_multivalue"], task_manager=tm)
    assert res["results"]["niah_single"]["score,none"] == 1.0
    assert res["results"]["niah_multivalue"]["score,none"] == 1.0
    assert len(seen) == 2 * 2 * 3
    tok = YOCOTokenizer()
    # lm-eval hands the model exactly our prompt: its length is exact under the tokenizer
    assert sorted(len(tok.encode(t)) for t in seen) == sorted([1024] * 6 + [2048] * 6)


def test_niah_task_wrong_model_scores_zero():
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    class Wrong:
        pass

    tm = TaskManager(
        include_path=str(ROOT / "tasks/niah"),
        include_defaults=False,
        metadata={"tokenizer": "cl100k_base", "lengths": "1k", "depths": "50", "haystack": "noise"},
    )
    seen: list[str] = []
    lm = _oracle_lm(seen)
    lm.fake = FakeNeedleModel(YOCOTokenizer(), mode="wrong")
    res = simple_evaluate(model=lm, tasks=["niah_multi"], task_manager=tm)
    assert res["results"]["niah_multi"]["score,none"] == 0.0
    assert len(seen) == 1


def test_niah_task_needs_a_tokenizer():
    from yoco_eval.errors import YocoEvalError
    from yoco_eval.niah.lm_eval_task import build_docs

    with pytest.raises(YocoEvalError, match="tokenizer"):
        build_docs("single", lengths="1k")
