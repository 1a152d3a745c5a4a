"""Two tuning knobs A/B in ONE process on one card, runs alternating so drift falls on every variant alike:
``inference.FFN_ROWS`` 8,192 / 32,768 / 65,536 (bf16 prefill; YOCO-3B at 512K in 64K chunks), then the fp8 decode's
split-count default, the old rule (about 4 programs a multiprocessor) against the new one (one wave over 256-key
tiles, ``triton_kernels._default_splits``). Each variant runs twice at the timed length first (cold, warm), then
the median of ``REPS`` (5) runs; each fp8 variant has its own Engine, so its decode graph captures its own splits.
Run on the device machine from the repo root:

    OUT=DIR python -m yoco_eval.bench.knob_ab     # writes DIR/ab.json

Recorded: reports/gpu/knob_ab_h100.log (this code, run from an ignored script before it was moved here).
"""

import json
import os
import statistics

import torch

from yoco_eval.generate import Engine
from yoco_eval.model import inference
from yoco_eval.ops import triton_kernels as tk
from yoco_eval.profile import build_random, preset_tokenizer

NEW_SPLITS = tk._default_splits


def OLD_SPLITS(rows, keys, bn, quant):
    return tk._n_splits(rows, keys, bn, 8 if quant and rows >= 32 else 4)


T, GEN, CHUNK, REPS = 524288, 32, 65536, int(os.environ.get("REPS", 5))


def main():
    res = {"device": torch.cuda.get_device_name(), "T": T, "gen": GEN, "chunk": CHUNK}
    with torch.inference_mode():
        model = build_random("yoco-3b")
        tok = preset_tokenizer("yoco-3b")
        V = model.config.vocab_size
        prompt = torch.randint(4, V, (T,), generator=torch.Generator().manual_seed(0)).tolist()

        def run(engine):
            o = engine.generate([prompt], max_new_tokens=GEN, ignore_eos=True)[0]
            torch.cuda.synchronize()
            return o.prefill_s, 1000 * o.decode_s / (GEN - 1)

        def ab(name, variants, engines, field):
            t = {k: [] for k in variants}
            for k, setv in variants.items():  # warm-up: each variant twice at the timed length
                setv()
                c = run(engines[k])
                print(f"{name} {k} cold: prefill {c[0]:.3f} s decode {c[1]:.3f} ms", flush=True)
                setv()
                c = run(engines[k])
                print(f"{name} {k} warm: prefill {c[0]:.3f} s decode {c[1]:.3f} ms", flush=True)
            for r in range(REPS):
                order = list(variants) if r % 2 == 0 else list(variants)[::-1]
                for k in order:
                    variants[k]()
                    p, d = run(engines[k])
                    t[k].append((p, d))
                    print(f"{name} rep {r} {k}: prefill {p:.3f} s decode {d:.3f} ms", flush=True)
            out = {}
            for k, v in t.items():
                xs = [x[field] for x in v]
                out[k] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}
                print(f"{name} {k}: median {out[k]['median']:.4f} (min {min(xs):.4f}, max {max(xs):.4f}) over "
                      f"{len(xs)}", flush=True)  # fmt: skip
            res[name] = out

        eng = Engine(model, tok, chunk_size=CHUNK, max_length=T + GEN + 1)

        def ffn(n):
            def s():
                inference.FFN_ROWS = n

            return s

        ab("prefill_bf16_ffn_rows", {"8192": ffn(8192), "32768": ffn(32768), "65536": ffn(65536)},
           {"8192": eng, "32768": eng, "65536": eng}, 0)  # fmt: skip
        inference.FFN_ROWS = 32768
        del eng
        torch.cuda.empty_cache()
        model.set_kv_dtype("fp8")

        def sp(f):
            def s():
                tk._default_splits = f

            return s

        engines = {"old_4_per_sm": Engine(model, tok, chunk_size=CHUNK, max_length=T + GEN + 1),
                   "new_one_wave": Engine(model, tok, chunk_size=CHUNK, max_length=T + GEN + 1)}  # fmt: skip
        ab("decode_fp8_splits", {"old_4_per_sm": sp(OLD_SPLITS), "new_one_wave": sp(NEW_SPLITS)}, engines, 1)
    json.dump(res, open(os.environ.get("OUT", "/tmp") + "/ab.json", "w"), indent=1)


if __name__ == "__main__":
    main()
