"""GPU benchmarks and the timing protocol every comparison follows.

- :mod:`yoco_eval.bench.protocol`: the steady-state timing protocol (cold call apart, warm-up at the timed length,
  median of at least 3 runs with their spread) used by ``yoco-eval profile`` for our rows and the peers'.
- ``python -m yoco_eval.bench.decode``: the Triton flash-decoding kernel against SDPA and the copy bandwidth.
- ``python -m yoco_eval.bench.projections``: the self-decoder's q/k/v/g projections, separate vs batched vs fused.
- ``python -m yoco_eval.bench.swiglu_gemm``: the up-projection GEMM with SwiGLU in its epilogue against cuBLAS.
- ``python -m yoco_eval.bench.gemv``: decode's one-row projections, the Triton GEMV against cuBLAS in CUDA graphs.
- ``python -m yoco_eval.bench.decode_loop``: a decode step as ``Engine.generate`` drives it, against the plain
  synchronous loop and bare graph replays, at long context.
- ``python -m yoco_eval.bench.selective_scan``: Mamba-1's selective scan in Triton against the chunked PyTorch scan.
- ``python -m yoco_eval.bench.phi4flash``: Phi-4-mini-flash early-exit prefill against the full forward, memory
  against weights + K/V + 2 GB, decode against the bandwidth floor.
- ``python -m yoco_eval.bench.lm_eval_throughput``: lm-eval requests/s, ``--model yoco`` against ``--model hf`` on the
  same checkpoint, with how far their answers are apart.
- ``python -m yoco_eval.bench.cold_start``: the first needle cell on empty kernel caches, then on warm ones, with
  every Triton compilation.
- ``python -m yoco_eval.bench.knob_ab``: two tuning knobs (the FFN's row slice, the fp8 decode's split count) A/B in
  one process, runs alternating.
- ``python -m yoco_eval.bench.table --out DIR``: issue 20's results table in one command, its rows run at the same
  time on the visible GPUs (one lane each), assembled into ``DIR/table.json`` and ``DIR/table.md``.
- ``bash yoco_eval/bench/suite.sh STEP ...``: the GPU suite run on the device machine (results: reports/gpu/).
"""
