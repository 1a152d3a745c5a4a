"""Experiment: the FFN's up-projection GEMM with SwiGLU in its epilogue, against cuBLAS + the SwiGLU kernel.

``h = silu(x @ W1^T) * (x @ W2^T)`` with ``W = [W1; W2]`` ``[2N, K]`` (the fused fc1/gate weight): one Triton kernel
keeps both accumulators of an output tile and writes only ``h`` ``[M, N]``, so the ``[M, 2N]`` intermediate is never
written or read back. Usage: ``python reports/gpu/bench_swiglu_gemm.py OUT.json`` on the GPU; on CPU with
``TRITON_INTERPRET=1`` it only checks the kernels' arithmetic (fp32, small shapes).
"""

from __future__ import annotations

import json
import os
import sys

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _tile(pid, M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
    num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % size_m, (pid % per_group) // size_m


@triton.jit
def swiglu_gemm_ptr(x_ptr, w_ptr, o_ptr, M, N, K, sxm, swn, som,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    pid_m, pid_n = _tile(tl.program_id(0), M, N, BM, BN, GROUP_M)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    xp = x_ptr + rm[:, None].to(tl.int64) * sxm + rk[None, :]
    wap = w_ptr + rn[None, :].to(tl.int64) * swn + rk[:, None]
    wbp = wap + N.to(tl.int64) * swn
    acc_a = tl.zeros((BM, BN), dtype=tl.float32)
    acc_b = tl.zeros((BM, BN), dtype=tl.float32)
    for _ in range(0, tl.cdiv(K, BK)):  # K % BK == 0 and N % BN == 0 (checked by the caller)
        x = tl.load(xp, mask=rm[:, None] < M, other=0.0)
        acc_a = tl.dot(x, tl.load(wap), acc_a)
        acc_b = tl.dot(x, tl.load(wbp), acc_b)
        xp += BK
        wap += BK
        wbp += BK
    h = acc_a * tl.sigmoid(acc_a) * acc_b
    op = o_ptr + rm[:, None].to(tl.int64) * som + rn[None, :]
    tl.store(op, h.to(o_ptr.dtype.element_ty), mask=rm[:, None] < M)


@triton.jit
def swiglu_gemm_tma(x_desc, w_desc, o_desc, M, N, K,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    pid_m, pid_n = _tile(tl.program_id(0), M, N, BM, BN, GROUP_M)
    om, on = pid_m * BM, pid_n * BN
    acc_a = tl.zeros((BM, BN), dtype=tl.float32)
    acc_b = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        x = x_desc.load([om, k])
        acc_a = tl.dot(x, w_desc.load([on, k]).T, acc_a)
        acc_b = tl.dot(x, w_desc.load([N + on, k]).T, acc_b)
    h = acc_a * tl.sigmoid(acc_a) * acc_b
    o_desc.store([om, on], h.to(o_desc.dtype))


@triton.jit
def swiglu_gemm_tma_persistent(x_desc, w_desc, o_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr,
                               BK: tl.constexpr, GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr,
                               FLATTEN: tl.constexpr):
    # one program per SM walks the output tiles; with FLATTEN Triton pipelines across tile boundaries too
    num_tiles = tl.cdiv(M, BM) * tl.cdiv(N, BN)
    for tile in tl.range(tl.program_id(0), num_tiles, NUM_SMS, flatten=FLATTEN):
        pid_m, pid_n = _tile(tile, M, N, BM, BN, GROUP_M)
        om, on = pid_m * BM, pid_n * BN
        acc_a = tl.zeros((BM, BN), dtype=tl.float32)
        acc_b = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, K, BK):
            x = x_desc.load([om, k])
            acc_a = tl.dot(x, w_desc.load([on, k]).T, acc_a)
            acc_b = tl.dot(x, w_desc.load([N + on, k]).T, acc_b)
        h = acc_a * tl.sigmoid(acc_a) * acc_b
        o_desc.store([om, on], h.to(o_desc.dtype))


def run_ptr(x, w, cfg):
    M, K = x.shape
    N = w.shape[0] // 2
    BM, BN, BK, stages, warps = cfg
    assert K % BK == 0 and N % BN == 0
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(M, BM) * (N // BN),)
    swiglu_gemm_ptr[grid](x, w, out, M, N, K, x.stride(0), w.stride(0), out.stride(0), BM=BM, BN=BN, BK=BK,
                          GROUP_M=8, num_stages=stages, num_warps=warps)
    return out


def run_tma(x, w, cfg):
    from triton.tools.tensor_descriptor import TensorDescriptor

    M, K = x.shape
    N = w.shape[0] // 2
    BM, BN, BK, stages, warps = cfg
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    xd = TensorDescriptor.from_tensor(x, [BM, BK])
    wd = TensorDescriptor.from_tensor(w, [BN, BK])
    od = TensorDescriptor.from_tensor(out, [BM, BN])
    grid = (triton.cdiv(M, BM) * (N // BN),)
    swiglu_gemm_tma[grid](xd, wd, od, M, N, K, BM=BM, BN=BN, BK=BK, GROUP_M=8, num_stages=stages, num_warps=warps)
    return out


def run_persistent(x, w, cfg, flatten=True):
    from triton.tools.tensor_descriptor import TensorDescriptor

    M, K = x.shape
    N = w.shape[0] // 2
    BM, BN, BK, stages, warps = cfg
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    xd = TensorDescriptor.from_tensor(x, [BM, BK])
    wd = TensorDescriptor.from_tensor(w, [BN, BK])
    od = TensorDescriptor.from_tensor(out, [BM, BN])
    sms = 2 if INTERPRET else torch.cuda.get_device_properties(x.device).multi_processor_count
    tiles = triton.cdiv(M, BM) * (N // BN)
    swiglu_gemm_tma_persistent[(min(sms, tiles),)](xd, wd, od, M, N, K, BM=BM, BN=BN, BK=BK, GROUP_M=8,
                                                   NUM_SMS=min(sms, tiles), FLATTEN=flatten,
                                                   num_stages=stages, num_warps=warps)
    return out


def run_persistent_nested(x, w, cfg):
    return run_persistent(x, w, cfg, flatten=False)


def base(x, w):
    from yoco_eval.ops import fused

    a, b = torch.nn.functional.linear(x, w).chunk(2, dim=-1)
    return fused.silu_mul(a, b)


def err(a, ref):
    return ((a.double() - ref).norm() / ref.norm()).item()


def check(dev, dtype, M, N, K, runners):
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(M, K, device=dev, generator=g).to(dtype)
    w = (torch.randn(2 * N, K, device=dev, generator=g) * K**-0.5).to(dtype)
    ab = x.double() @ w.double().T
    ref = torch.nn.functional.silu(ab[:, :N]) * ab[:, N:]
    e_base = err(base(x, w), ref)
    res = {"base_err": e_base}
    for name, fn, cfg in runners:
        e = err(fn(x, w, cfg), ref)
        res[name] = e
        print(f"check {name} M={M}: rel err {e:.3g} (cuBLAS + SwiGLU {e_base:.3g})")
    return res


def bench(fn, *args) -> float:
    """Median ms of ``fn(*args)`` (CUDA events, warmed: triton.testing.do_bench)."""
    from triton.testing import do_bench

    return do_bench(lambda: fn(*args), warmup=25, rep=100, return_mode="median")


def main(out_path):
    if INTERPRET:
        cfg = (16, 16, 16, 1, 1)
        check("cpu", torch.float32, 40, 32, 48, [("ptr", run_ptr, cfg), ("tma", run_tma, cfg),
                                                  ("persistent", run_persistent_nested, cfg)])
        return
    print(torch.cuda.get_device_name(), triton.__version__)
    res = {"device": torch.cuda.get_device_name(), "rows": []}
    small = (64, 64, 64, 3, 4)
    runners = [("ptr", run_ptr, small), ("tma", run_tma, small), ("persistent", run_persistent, small),
               ("persistent_nested", run_persistent_nested, small)]
    res["check"] = check("cuda", torch.bfloat16, 1000, 1024, 3072, runners)
    K, N = 3072, 8192  # YOCO-3B: d = 3072, FFN hidden 8192
    # shared memory per stage: (BM + 2 BN) x BK x 2 bytes; H100 allows 227 KB
    configs = [(128, 64, 64, 4, 4), (128, 64, 64, 4, 8), (128, 128, 64, 3, 8), (128, 128, 64, 4, 8),
               (256, 64, 64, 3, 8), (64, 128, 64, 4, 4)]
    for M in (8192,):  # the FFN's row slice (_FFN_ROWS)
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(2 * N, K, device="cuda", dtype=torch.bfloat16) * K**-0.5
        flop = 2 * M * K * 2 * N
        t_gemm = bench(torch.nn.functional.linear, x, w)
        t_base = bench(base, x, w)
        row = {"M": M, "cublas_gemm_ms": t_gemm, "cublas_tflops": flop / t_gemm / 1e9, "base_ms": t_base,
               "swiglu_ms": t_base - t_gemm, "fused": []}
        print(f"M={M}: cuBLAS GEMM {t_gemm:.3f} ms ({flop / t_gemm / 1e9:.0f} TFLOP/s), + SwiGLU {t_base:.3f} ms")
        for kind, fn in (("ptr", run_ptr), ("tma", run_tma), ("persistent", run_persistent),
                         ("persistent_nested", run_persistent_nested)):
            for cfg in configs:
                try:
                    t = bench(fn, x, w, cfg)
                except Exception as e:  # a config that does not fit (shared memory, registers)
                    print(f"  {kind} {cfg}: failed ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
                    continue
                row["fused"].append({"kind": kind, "cfg": cfg, "ms": t, "tflops": flop / t / 1e9})
                print(f"  {kind} {cfg}: {t:.3f} ms ({flop / t / 1e9:.0f} TFLOP/s), {t / t_base:.3f}x the base")
        res["rows"].append(row)
        del x, w
    json.dump(res, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench_swiglu_gemm.json")
