"""yoco-eval reproduces the logits that the OFFICIAL YOCO code computed on two tiny official-format checkpoints.

Fixtures (tests/fixtures/official, see its README): made by running microsoft/unilm YOCO on CPU in fp32.
Tolerance: the official code agrees with itself (full vs incremental) to at most 4.1e-5 max abs on logits of
std ~2 (agreement.json); we allow 1e-4 — 2.5x the official self-disagreement. One wrong detail moves logits by
whole units.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from yoco_eval.config import load_config
from yoco_eval.generate import Engine
from yoco_eval.model.checkpoint import load_state_strict
from yoco_eval.model.yoco import YOCO
from yoco_eval.tokenizer import ByteTokenizer

OFFICIAL = Path(__file__).parents[1] / "fixtures" / "official"
TOL = 1e-4
CASES = [pytest.param(n, b, id=f"{n}-{b}") for n in ("gret-d96", "swa24-d96") for b in ("torch", "sdpa")]


def _load(name: str, backend: str) -> YOCO:
    d = OFFICIAL / name
    model = YOCO(load_config(d), attn_backend=backend, retention_backend="torch")
    load_state_strict(model, torch.load(d / "checkpoint.pth", weights_only=True, map_location="cpu"), str(d))
    return model.eval()


def _t(name: str, file: str) -> torch.Tensor:
    return torch.load(OFFICIAL / name / file, weights_only=True, map_location="cpu")


def _max_abs(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("name,backend", CASES)
@torch.inference_mode()
def test_full_forward_matches_official(name, backend):
    model = _load(name, backend)
    assert _max_abs(model(_t(name, "inputs.pt")), _t(name, "full_logits.pt")) < TOL
    assert _max_abs(model(_t(name, "long_inputs.pt")), _t(name, "long_full_logits.pt")) < TOL


@pytest.mark.parametrize("name,backend", CASES)
@torch.inference_mode()
def test_chunked_prefill_then_decode_matches_official(name, backend):
    """Official protocol: prefill 0..63 in chunks of 32 with the cross-decoder skipped, then feed 64..99."""
    model = _load(name, backend)
    ids = _t(name, "inputs.pt")
    cache = model.setup_cache(2, 1024)
    for s in range(0, 64, 32):
        assert model(ids[:, s : s + 32], cache=cache, start_pos=s, logits_from=0) is None
    got = torch.cat([model(ids[:, t : t + 1], cache=cache, start_pos=t) for t in range(64, 100)], 1)
    assert _max_abs(got, _t(name, "incremental_logits.pt")) < TOL


@pytest.mark.parametrize("name,backend", CASES)
@torch.inference_mode()
def test_600_token_run_matches_official(name, backend):
    """Crosses the 256-token retention chunk: prefill 0..519 in chunks of 260, then decode 520..599."""
    model = _load(name, backend)
    ids = _t(name, "long_inputs.pt")
    cache = model.setup_cache(2, 1024)
    for s in range(0, 520, 260):
        model(ids[:, s : s + 260], cache=cache, start_pos=s, logits_from=0)
    pos = torch.full((2,), 520)
    got = []
    for t in range(520, 600):
        got.append(model(ids[:, t : t + 1], cache=cache, start_pos=pos))
        pos = pos + 1
    assert _max_abs(torch.cat(got, 1), _t(name, "long_incremental_logits.pt")) < TOL


@pytest.mark.parametrize("name", ["gret-d96", "swa24-d96"])
def test_greedy_generation_matches_official(name):
    """20 greedy tokens after the 64-token prompt, BOS/PAD banned as in the official loop: identical tokens."""
    ref = json.loads((OFFICIAL / name / "greedy_tokens.json").read_text())
    engine = Engine(_load(name, "sdpa"), ByteTokenizer(), chunk_size=32, max_length=1024)
    out = engine.generate(ref["prompt"], max_new_tokens=20)
    assert [g.tokens for g in out] == ref["generated"]


@torch.inference_mode()
def test_layer_activations_match_official():
    """Per-layer outputs of the full forward (pinpoints the first diverging layer if this ever fails)."""
    name = "gret-d96"
    model = _load(name, "torch")
    acts = _t(name, "full_activations.pt")
    seen = {}
    # clone: at inference each layer's output GEMMs accumulate into the residual stream in place, so the tensor a
    # layer returns is overwritten by the next layer
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, o.clone())) for n, m in
             model.named_modules() if n in acts]  # fmt: skip
    model(_t(name, "inputs.pt"))
    for h in hooks:
        h.remove()
    for n in acts:
        if n in seen:  # hidden states grow to std ~20: same 1e-4 bound, relative to each tensor's std
            assert _max_abs(seen[n], acts[n]) < TOL * max(1.0, acts[n].std().item()), n
    assert _max_abs(model.embed_tokens(_t(name, "inputs.pt")), acts["embed_tokens_unscaled"]) == 0
    assert len(seen) == len(acts) - 1
