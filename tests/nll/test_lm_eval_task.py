"""tasks/yoco_nll: lm-eval's per-bucket bits per byte through `--model yoco` equal the streaming NLL's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_buckets_cover_the_document_on_character_boundaries():
    import sys

    sys.path.insert(0, str(ROOT / "tasks" / "yoco_nll"))
    try:
        import utils
    finally:
        sys.path.pop(0)
    text = "aé" * 300  # 900 bytes, a 2-byte character every other one
    docs = utils.bucket_docs(text, [0, 128, 256, 512, 1024])
    assert "".join(d["target"] for d in docs) == text
    assert all(d["context"] == text[: len(text) - len("".join(x["target"] for x in docs[i:]))]
               for i, d in enumerate(docs))  # fmt: skip
    assert [d["bucket"] for d in docs] == ["bpb_00000_00128", "bpb_00128_00256", "bpb_00256_00512", "bpb_00512_01024"]
    assert [len(d["target"].encode()) for d in docs][:2] == [129, 127]  # edges move to the next character boundary
    spaced = utils.bucket_docs("word " * 100, [0, 130, 260, 500])
    assert [len(d["context"]) for d in spaced] == [0, 131, 261]  # never cut right after whitespace
    assert not any(d["context"][-1:].isspace() for d in spaced)


@pytest.mark.parametrize("corpus", ["book", "code"])
def test_task_matches_streaming_nll(corpus):
    """yoco-debug (byte tokenizer, BOS): a bucket of bytes [lo, hi) is token positions [lo, hi) of the stream when
    the text is ASCII, so lm-eval's bucket bits per byte must equal the stream's mean over them / ln 2."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import yoco_eval.lm_eval_adapter  # noqa: F401  (registers "yoco")
    from yoco_eval.model.checkpoint import load_model
    from yoco_eval.nll.stream import buckets, stream_nll

    tm = TaskManager(include_path=str(ROOT / "tasks" / "yoco_nll"), include_defaults=False)
    task = f"yoco_nll_{corpus}"
    res = simple_evaluate(model="yoco", model_args="pretrained=yoco-debug,max_length=16400", tasks=[task],
                          task_manager=tm, device="cpu")  # fmt: skip
    got = res["results"][task]

    import sys

    sys.path.insert(0, str(ROOT / "tasks" / "yoco_nll"))
    try:
        import utils
    finally:
        sys.path.pop(0)
    text = utils.document_text(corpus)
    assert text.isascii() and len(text) == utils.DOC_BYTES
    loaded = load_model("yoco-debug")
    nll = stream_nll(loaded.model, loaded.tokenizer.encode(text), chunk=4096, bos_id=0).nll
    docs = utils.bucket_docs(text)
    edges = [len(d["context"]) for d in docs] + [len(text)]
    assert len(docs) == len(utils.EDGES) - 1 and edges[-2] < utils.EDGES[-2] + 8
    for d, b in zip(docs, buckets(nll, edges)):
        want = b["nll"] / math.log(2)
        assert got[f"{d['bucket']},none"] == pytest.approx(want, rel=1e-5)
    assert got["bits_per_byte,none"] == pytest.approx(float(nll.double().mean()) / math.log(2), rel=1e-4)
