"""Peers re-measured in the same run as our own code: FLA's YOCO (flash-linear-attention) and HF Llama.

Both at the YOCO-3B shape, bf16, batch 1, random weights; as in the project's peer measurements: prefill the
prompt in ONE forward (FLA: ``skip_cross_decoder=True, logits_to_keep=1``), then greedy decode steps over the
cache. Timed under the same protocol as our rows (:mod:`yoco_eval.bench.protocol`: first call at each length
recorded apart as ``cold``, warm-up there, median of >= 3 runs), with the same fla-core autotuning (``profile``
gives both sides the full search when FLA is a peer). Optional: each peer needs its package
(``flash-linear-attention``, ``transformers``).
"""

from __future__ import annotations

import gc
import time

import torch

from yoco_eval.bench.protocol import Protocol, autotune_policy, measure_steady, wallclock


def build_fla_yoco():
    from fla.models.yoco import YOCOConfig, YOCOForCausalLM

    cfg = YOCOConfig(
        hidden_size=3072, num_hidden_layers=26, num_self_decoder_layers=13, intermediate_size=8192,
        vocab_size=100288, max_position_embeddings=1 << 21, norm_eps=1e-5,
        self_decoder_attn={"type": "gated_retention", "num_heads": 24, "head_dim": 128, "use_short_conv": False,
                           "expand_v": 1.0, "use_gate": True, "rope_inv_freq": "yoco"},
        cross_decoder_attn={"num_heads": 24, "num_kv_heads": 8, "rope_inv_freq": "yoco"},
    )  # fmt: skip
    return YOCOForCausalLM(cfg).to("cuda", torch.bfloat16).eval()


def build_hf_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=3072, num_hidden_layers=26, intermediate_size=8192, num_attention_heads=24,
                      num_key_value_heads=8, vocab_size=100288, max_position_embeddings=1 << 21)  # fmt: skip
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()


@torch.inference_mode()
def measure(kind: str, lengths: list[int], decode_steps: int = 16, warm: int = 32768, log=print,
            protocol: Protocol | None = None) -> list[dict]:  # fmt: skip
    """Rows of peer ``kind`` (``fla`` or ``hf``) at each length, timed under ``protocol`` (default
    :class:`Protocol`); a first call at ``warm`` tokens absorbs the autotuning of every kernel before that."""
    protocol = protocol or Protocol()
    model = build_fla_yoco() if kind == "fla" else build_hf_llama()
    name = {"fla": "peer:fla-yoco", "hf": "peer:hf-llama"}[kind]
    extra = {"skip_cross_decoder": True} if kind == "fla" else {}

    def run(T):
        ids = torch.randint(4, 100_000, (1, T), device="cuda")
        out, t_pre = wallclock(lambda: model(ids, use_cache=True, logits_to_keep=1, **extra))
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)

        def dec():
            nonlocal past, nxt
            for _ in range(decode_steps):
                o = model(nxt, past_key_values=past, use_cache=True)
                past, nxt = o.past_key_values, o.logits[:, -1].argmax(-1, keepdim=True)

        _, t_dec = wallclock(dec)
        return t_pre, 1000 * t_dec / decode_steps

    def timed(T, peaks):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        pre, dec = run(T)
        peaks.append(torch.cuda.max_memory_allocated())
        return {"prefill_s": pre, "decode_ms_per_token": dec}

    t0 = time.perf_counter()
    run(warm)  # Triton autotuning / compilation happens here
    log(f"{name}: warm-up at {warm} tokens took {time.perf_counter() - t0:.1f} s")
    rows = []
    for T in lengths:
        row = {"model": name, "context_length": T, "batch": 1, "status": "ok", "error": None,
               "autotune": autotune_policy()}  # fmt: skip
        peaks: list[int] = []
        try:
            timing = measure_steady(lambda T=T, peaks=peaks: timed(T, peaks), protocol, log=log)
            pre, dec = timing.median["prefill_s"], timing.median["decode_ms_per_token"]
            row.update(prefill_s=pre, decode_ms_per_token=dec, peak_mem_bytes=max(peaks[len(timing.warmup) :]),
                       throughput_tok_s=None, **timing.fields())  # fmt: skip
            log(f"{name:>16} {T:>8} prefill {pre:7.3f} s  decode {dec:7.2f} ms/tok  "
                f"peak {row['peak_mem_bytes'] / 2**30:6.2f} GiB")  # fmt: skip
        except torch.OutOfMemoryError as e:
            row.update(status="oom", error=str(e).splitlines()[0][:200], prefill_s=None, decode_ms_per_token=None,
                       peak_mem_bytes=None, throughput_tok_s=None)  # fmt: skip
            log(f"{name:>16} {T:>8} oom")
        except Exception as e:  # a peer failing must not stop our own measurements
            row.update(status="error", error=f"{type(e).__name__}: {e}"[:300], prefill_s=None,
                       decode_ms_per_token=None, peak_mem_bytes=None, throughput_tok_s=None)  # fmt: skip
            log(f"{name:>16} {T:>8} error {row['error']}")
        rows.append(row)
        if row["status"] != "ok":
            break
    model = None  # noqa: F841  (free it before the next peer)
    gc.collect()
    torch.cuda.empty_cache()
    return rows
