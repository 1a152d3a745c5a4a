"""Tuning knobs A/B in ONE process on one card (YOCO-3B, 512K prompt, 64K chunks, 32 generated tokens), runs
alternating so drift falls on every variant alike. Each variant runs twice at the timed length first (cold, warm),
then the median of ``REPS`` (5) runs. Experiments (positional arguments; default ``ffn_rows fp8_splits``):

- ``ffn_rows``: ``inference.FFN_ROWS`` 8,192 / 32,768 / 65,536, bf16 prefill.
- ``fp8_splits``: the fp8 decode's split-count default, the old rule (about 4 programs a multiprocessor) against
  the shipped one (one wave over 256-key tiles, ``triton_kernels._default_splits``); each variant has its own
  Engine, so its decode graph captures its own splits.
- ``swiglu_paired``: bf16 prefill with the FFN's up-projection through the shipped fused kernel against the
  paired-weight experiment (``triton_kernels.swiglu_up_paired``, its weights paired once up front, outside the
  timing; ``SWIGLU_PAIRED_CONFIG`` picks its tile).

Run on the device machine from the repo root:

    OUT=DIR python -m yoco_eval.bench.knob_ab [EXPERIMENT ...]     # writes DIR/ab.json

Recorded: reports/gpu/knob_ab_h100.log (``ffn_rows`` and ``fp8_splits``, by this module's first version, b5bbdab).
"""

import json
import os
import statistics
import sys

import torch

from yoco_eval.generate import Engine
from yoco_eval.model import inference
from yoco_eval.ops import triton_kernels as tk
from yoco_eval.profile import _generate_once, build_random, preset_tokenizer

T, GEN, CHUNK, REPS = 524288, 32, 65536, int(os.environ.get("REPS", 5))
SHIPPED_SPLITS, SHIPPED_SWIGLU_UP, SHIPPED_FFN_ROWS = tk._default_splits, tk.swiglu_up, inference.FFN_ROWS
SWIGLU_PAIRED_CONFIG = tuple(int(v) for v in os.environ.get("SWIGLU_PAIRED_CONFIG", "128,128,64,3,8").split(","))


def old_splits(rows, keys, bn, quant):
    """The split rule before 7e48e4f: about 4 programs a multiprocessor (8 for an fp8 batch)."""
    return tk._n_splits(rows, keys, bn, 8 if quant and rows >= 32 else 4)


def run(engine, prompt) -> tuple[float, float]:
    """(prefill s, decode ms a token) of one generate call (the profile's own timed call)."""
    r = _generate_once(engine, [prompt], GEN, [])
    return r["prefill_s"], r["decode_ms_per_token"]


def ab(name: str, variants: dict, engines: dict, field: int, prompt) -> dict:
    """``variants``: name -> a function that switches the knob to it; ``field`` 0 times prefill, 1 decode."""
    t = {k: [] for k in variants}
    for k, setv in variants.items():  # warm-up: each variant twice at the timed length
        for label in ("cold", "warm"):
            setv()
            c = run(engines[k], prompt)
            print(f"{name} {k} {label}: prefill {c[0]:.3f} s decode {c[1]:.3f} ms", flush=True)
    for r in range(REPS):
        for k in list(variants) if r % 2 == 0 else list(variants)[::-1]:
            variants[k]()
            p, d = run(engines[k], prompt)
            t[k].append((p, d))
            print(f"{name} rep {r} {k}: prefill {p:.3f} s decode {d:.3f} ms", flush=True)
    out = {}
    for k, v in t.items():
        xs = [x[field] for x in v]
        out[k] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}
        print(f"{name} {k}: median {out[k]['median']:.4f} (min {min(xs):.4f}, max {max(xs):.4f}) over {len(xs)}",
              flush=True)  # fmt: skip
    return out


def _setter(obj, attr, value):
    def s():
        setattr(obj, attr, value)

    return s


def _paired_swiglu_up(model):
    """A stand-in for ``triton_kernels.swiglu_up`` that runs the paired-weight kernel, each FFN weight paired once."""
    paired = {}
    for m in model.modules():
        w = inference._fused_weight(m) if isinstance(m, inference.InferenceFeedForward) else None
        if w is not None:
            paired[w.data_ptr()] = tk.pair_swiglu_weight(w)

    def swiglu_up(x, w, *args, **kwargs):  # on a Hopper GPU (the shipped kernel's other conditions hold there)
        wp = paired.get(w.data_ptr())
        if wp is None or x.shape[0] < tk.SWIGLU_UP_MIN_ROWS:
            return SHIPPED_SWIGLU_UP(x, w, *args, **kwargs)
        return tk.swiglu_up_paired(x, wp, SWIGLU_PAIRED_CONFIG)

    return swiglu_up


def main(experiments: list[str]) -> None:
    res = {"device": torch.cuda.get_device_name(), "T": T, "gen": GEN, "chunk": CHUNK}
    with torch.inference_mode():
        model = build_random("yoco-3b")
        tok = preset_tokenizer("yoco-3b")
        V = model.config.vocab_size
        prompt = torch.randint(4, V, (T,), generator=torch.Generator().manual_seed(0)).tolist()
        eng = Engine(model, tok, chunk_size=CHUNK, max_length=T + GEN + 1)
        if "ffn_rows" in experiments:
            rows = {str(n): _setter(inference, "FFN_ROWS", n) for n in (8192, 32768, 65536)}
            res["prefill_bf16_ffn_rows"] = ab("prefill_bf16_ffn_rows", rows, dict.fromkeys(rows, eng), 0, prompt)
            inference.FFN_ROWS = SHIPPED_FFN_ROWS
        if "swiglu_paired" in experiments:
            variants = {"shipped": _setter(tk, "swiglu_up", SHIPPED_SWIGLU_UP),
                        "paired": _setter(tk, "swiglu_up", _paired_swiglu_up(model))}  # fmt: skip
            res["prefill_bf16_swiglu_paired"] = ab("prefill_bf16_swiglu_paired", variants,
                                                   dict.fromkeys(variants, eng), 0, prompt)  # fmt: skip
            res["swiglu_paired_config"] = SWIGLU_PAIRED_CONFIG
            tk.swiglu_up = SHIPPED_SWIGLU_UP
        del eng
        torch.cuda.empty_cache()
        if "fp8_splits" in experiments:
            model.set_kv_dtype("fp8")
            variants = {"old_4_per_sm": _setter(tk, "_default_splits", old_splits),
                        "new_one_wave": _setter(tk, "_default_splits", SHIPPED_SPLITS)}  # fmt: skip
            engines = {k: Engine(model, tok, chunk_size=CHUNK, max_length=T + GEN + 1) for k in variants}
            res["decode_fp8_splits"] = ab("decode_fp8_splits", variants, engines, 1, prompt)
            tk._default_splits = SHIPPED_SPLITS
    json.dump(res, open(os.environ.get("OUT", "/tmp") + "/ab.json", "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1:] or ["ffn_rows", "fp8_splits"])
