"""The Phi-4-mini-flash GPU benchmark's code paths, run on the CPU with the tiny preset (timings meaningless)."""

from __future__ import annotations

from yoco_eval.bench import phi4flash


def test_rows_and_speedup_on_the_tiny_preset():
    res = phi4flash.run([96], [96], chunk=40, gen=3, runs=3, log=lambda _: None, model_name="phi4flash-tiny",
                        device="cpu")  # fmt: skip
    modes = {(r["mode"], r["context_length"]): r for r in res["rows"]}
    assert set(modes) == {("early_exit", 96), ("full_forward", 96)}
    for r in modes.values():
        assert r["status"] == "ok" and r["protocol"] == "steady/1" and r["runs"] == 3 and r["prefill_s"] > 0
    assert modes[("early_exit", 96)]["decode_ms_per_token"] > 0
    assert res["early_exit_speedup"]["96"] > 0
    assert res["kv_reads_per_decode_step"] == 2  # phi4flash-tiny: the full-attention layer 5 and cross layer 7


def test_full_forward_runs_every_layer_at_every_position(monkeypatch):
    """The full-forward row must push every position through the layers after the shared K/V (what the HF code
    does), and the early-exit row must not."""
    import torch

    from yoco_eval.profile import build_random

    model = build_random("phi4flash-tiny", device="cpu")
    seen = []
    last = model.model.layers[-1]
    h = last.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    tokens = torch.randint(4, 500, (1, 50))
    phi4flash.full_forward_once(model, tokens, chunk=20)
    h.remove()
    assert seen == [20, 20, 10]
