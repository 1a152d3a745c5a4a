"""GPU kernels against the plain-PyTorch reference, in bf16, with derived tolerances (run on the device machine).

Rule (flash-attention's): a fast kernel's error against the fp64 reference must be at most 2x the error of the
plain-PyTorch path fed the same bf16 inputs (its output rounded to bf16), plus a small floor for exact zeros.
Each test prints its numbers; `pytest -s` output is recorded under reports/gpu/.
"""

from __future__ import annotations

import pytest
import torch

from yoco_eval import settings
from yoco_eval.ops import retention, triton_kernels
from yoco_eval.ops.attention import attention, decode_attention
from yoco_eval.ops.naive import naive_attention, naive_parallel_retention
from yoco_eval.ops.retention import fla_available, fla_chunk_retention, torch_chunk_retention

pytestmark = pytest.mark.gpu
DEV = "cuda"


def err(a, ref):
    return (a.double() - ref).abs().max().item()


def check(name, fast, base, ref, floor=1e-3):
    e_fast, e_base = err(fast, ref), err(base, ref)
    print(f"{name}: fast err {e_fast:.3g}, reference-in-bf16 err {e_base:.3g}, ratio {e_fast / max(e_base, 1e-12):.2f}")
    assert e_fast <= 2 * e_base + floor


@pytest.mark.skipif(not fla_available(), reason="fla-core not installed: pip install 'yoco-eval[gpu]'")
@pytest.mark.parametrize("T,H,D", [(1024, 4, 128), (3000, 24, 128), (64, 2, 64)], ids=["T1024-H4", "T3000-H24", "T64"])
def test_fla_retention_matches_reference(T, H, D):
    pinned = retention.prepare_fla()  # what the Engine does on CUDA
    g = torch.Generator(device=DEV).manual_seed(T)
    q, k, v = (torch.randn(1, T, H, D, device=DEV, generator=g) for _ in range(3))
    k = k * D**-0.5
    log_g = torch.nn.functional.logsigmoid(torch.randn(1, T, H, device=DEV, generator=g) * 2) / 16
    s0 = torch.randn(1, H, D, D, device=DEV, generator=g) * 0.1
    ref_o, ref_s = naive_parallel_retention(q.double(), k.double(), v.double(), log_g.double(), s0.double())
    qb, kb, vb = (x.bfloat16() for x in (q, k, v))
    base_o, base_s = torch_chunk_retention(qb, kb, vb, log_g, s0, chunk_size=64)
    fast_o, fast_s = fla_chunk_retention(qb, kb, vb, log_g, s0)
    check(f"retention T={T} H={H} out", fast_o, base_o, ref_o)
    check(f"retention T={T} H={H} state", fast_s, base_s, ref_s)
    if torch.cuda.get_device_capability()[0] == 9 and not settings.get().fla_full_autotune:
        assert pinned, "fla-core's kernels were not pinned to their Hopper configs"
        from fla.ops.common.chunk_h import chunk_fwd_kernel_h  # the state kernel ran its pinned config

        best = chunk_fwd_kernel_h.fn.best_config
        print(f"fla state kernel config: {best}")
        assert (best.kwargs, best.num_warps, best.num_stages) == retention.HOPPER_PINS["chunk_fwd_kernel_h"]


@pytest.mark.parametrize("kind", ["lower_right", "general", "square"])
def test_sdpa_attention_matches_reference(kind):
    B, H, Hk, D = 2, 24, 8, 128
    Tq, Tk = (4096, 4096) if kind == "square" else (512, 6000)
    g = torch.Generator(device=DEV).manual_seed(1)
    q = torch.randn(B, Tq, H, D, device=DEV, generator=g)
    k, v = (torch.randn(B, Tk, Hk, D, device=DEV, generator=g) for _ in range(2))
    q_pos = torch.arange(Tk - Tq, Tk, device=DEV).expand(B, Tq)
    k_pos = torch.arange(Tk, device=DEV).expand(B, Tk)
    k_valid = None if kind != "general" else (torch.rand(B, Tk, device=DEV, generator=g) > 0.1)
    window = 1024 if kind == "general" else None
    ref = naive_attention(q.double(), k.double(), v.double(), q_pos, k_pos, k_valid, window)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    base = naive_attention(qb, kb, vb, q_pos, k_pos, k_valid, window).bfloat16()
    mode = "lower_right" if kind == "square" else kind
    fast = attention(qb, kb, vb, q_pos, k_pos, k_valid, window=window, kind=mode, backend="sdpa")
    check(f"sdpa {kind}", fast, base, ref)


@pytest.mark.parametrize("Tk", [8192, 100_000])
def test_split_decode_attention_matches_reference(Tk):
    B, H, Hk, D = 2, 24, 8, 128
    g = torch.Generator(device=DEV).manual_seed(2)
    q = torch.randn(B, 1, H, D, device=DEV, generator=g)
    k, v = (torch.randn(B, Tk, Hk, D, device=DEV, generator=g) for _ in range(2))
    lengths = torch.tensor([Tk, Tk // 3], device=DEV)
    valid = torch.arange(Tk, device=DEV)[None] < lengths[:, None]
    ref = naive_attention(
        q.double(), k.double(), v.double(), lengths[:, None] - 1, torch.arange(Tk, device=DEV).expand(B, Tk), valid
    )
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    base = naive_attention(
        qb, kb, vb, lengths[:, None] - 1, torch.arange(Tk, device=DEV).expand(B, Tk), valid
    ).bfloat16()
    fast = decode_attention(qb, kb, vb, valid, backend="sdpa")
    check(f"split decode Tk={Tk}", fast, base, ref)


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("Tk", [8192, 100_000, 524_288])
def test_triton_decode_kernel_matches_reference(Tk):
    """Flash-decoding over a 3x-GQA cache; rows stop at different key counts (read from the device). The 512K case
    keeps 2 key/value heads so that its fp64 reference (with GQA repeated) fits next to the bf16 cache."""
    B, H, D = 2, 24, 128
    Hk = 8 if Tk < 200_000 else 2
    H = 3 * Hk
    g = torch.Generator(device=DEV).manual_seed(Tk)
    q = torch.randn(B, 1, H, D, device=DEV, generator=g)
    k, v = (torch.randn(B, Tk + 100, Hk, D, device=DEV, generator=g) for _ in range(2))  # spare slots never read
    lengths = torch.tensor([Tk, Tk // 3 + 7], device=DEV)
    kr, vr = k[:, :Tk], v[:, :Tk]
    valid = torch.arange(Tk, device=DEV)[None] < lengths[:, None]
    kpos = torch.arange(Tk, device=DEV).expand(B, Tk)
    ref = naive_attention(q.double(), kr.double(), vr.double(), lengths[:, None] - 1, kpos, valid)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    base = naive_attention(qb, kb[:, :Tk], vb[:, :Tk], lengths[:, None] - 1, kpos, valid).bfloat16()
    kb[:, Tk:] = float("nan")  # poison: a read past a row's length would show
    fast = triton_kernels.decode_attention_splitk(qb, kb, vb, lengths)
    assert torch.isfinite(fast).all()
    check(f"triton decode Tk={Tk}", fast, base, ref)
    via_api = decode_attention(qb, kb, vb, None, backend="triton", kv_len=lengths)
    assert torch.equal(via_api, fast)


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("B", [1, 2], ids=["one-row", "B2-unequal"])
def test_triton_diff_decode_kernel_matches_reference(B):
    """Phi-4-mini-flash's differential decode at the real shape (40 query heads, 20 key heads of 64, values paired
    to 128) over a 64K cache in one fused launch, both halves against fp64 attention of each half; the plain path is
    the model's own (``diff_attend``, backend torch, fp32 math on the bf16 inputs, rounded to bf16). With two rows,
    the second stops at about a third of the keys (read from the device)."""
    from yoco_eval.model.phi4flash import diff_attend, split_decode_attend, to_pair_layout

    H, KV, D, Tk = 40, 20, 64, 65536
    g = torch.Generator(device=DEV).manual_seed(B)
    q = torch.randn(B, 1, H, D, device=DEV, generator=g)
    k, v = to_pair_layout(*(torch.randn(B, Tk + 100, KV, D, device=DEV, generator=g) for _ in range(2)))
    lengths = torch.tensor([Tk, Tk // 3 + 7][:B], device=DEV)
    valid = torch.arange(Tk, device=DEV)[None] < lengths[:, None]
    kpos = torch.arange(Tk, device=DEV).expand(B, Tk)
    kd, vd = k[:, :Tk].double(), v[:, :Tk].double()
    ref = [naive_attention(q[:, :, a::2].double(), kd[:, :, a * KV // 2 : (a + 1) * KV // 2], vd,
                           lengths[:, None] - 1, kpos, valid) for a in (0, 1)]  # fmt: skip
    del kd, vd
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    base = diff_attend(qb, kb[:, :Tk], vb[:, :Tk], lengths[:, None] - 1, kpos, valid, None, "general", "torch")
    kb[:, Tk:] = float("nan")  # poison: a read past a row's length would show
    vb[:, Tk:] = float("nan")
    fast = triton_kernels.diff_decode_attention_splitk(qb, kb, vb, lengths)
    for a in (0, 1):
        assert fast[a].shape == (B, 1, H // 2, 2 * D) and torch.isfinite(fast[a]).all()
        check(f"triton diff decode B={B} half {a + 1}", fast[a], base[a], ref[a])
    # the model's route: a decode step over the cache (kv_len = position + 1) takes the same kernel
    step = type("Step", (), {"decode_backend": "triton", "uniform": False, "cache": object(), "valid": None})()
    routed = split_decode_attend(qb, kb, vb, lengths[:, None] - 1, True, step)
    assert routed is not None and all(torch.equal(x, y) for x, y in zip(routed, fast, strict=True))


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("f16", [False, True], ids=["bf16-products", "fp16-products"])
@pytest.mark.parametrize("Tk,head_major", [(8192, False), (100_000, True)], ids=["8192", "100000-cache-layout"])
def test_triton_fp8_decode_kernel_matches_reference(Tk, head_major, f16):
    """Flash-decoding over an fp8 cache (e4m3 + per-(token, head) scales). The reference is exact attention over
    the DEQUANTIZED cache in fp64 (the fp8 rounding is the model's, not the kernel's error); the plain path is
    attention over the cache dequantized to bf16, as every non-decode read does. Both operand types of the kernel's
    products (bf16, or fp16 with the query rows and ``p * v_scale`` scaled into [-1, 1]); with fp16 products, also
    queries 2**17 times larger, past fp16's range (65504), so a query that overflowed fp16 would show."""
    from yoco_eval.ops import fp8

    B, Hk, D = 2, 8, 128
    H = 3 * Hk
    g = torch.Generator(device=DEV).manual_seed(Tk + 1)
    q = torch.randn(B, 1, H, D, device=DEV, generator=g).bfloat16()
    k, v = (torch.randn(B, Tk + 64, Hk, D, device=DEV, generator=g) * 3 for _ in range(2))
    (kq, ks), (vq, vs) = fp8.quantize(k), fp8.quantize(v)
    if head_major:  # the cache's scale layout: [B, T, Hk] views of [B, Hk, T]
        ks, vs = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (ks, vs))
    lengths = torch.tensor([Tk, Tk // 3 + 5], device=DEV)
    valid = torch.arange(Tk, device=DEV)[None] < lengths[:, None]
    kpos = torch.arange(Tk, device=DEV).expand(B, Tk)
    kd, vd = fp8.dequantize(kq, ks, torch.float64)[:, :Tk], fp8.dequantize(vq, vs, torch.float64)[:, :Tk]
    ref = naive_attention(q.double(), kd, vd, lengths[:, None] - 1, kpos, valid)
    kb, vb = fp8.dequantize(kq, ks, torch.bfloat16)[:, :Tk], fp8.dequantize(vq, vs, torch.bfloat16)[:, :Tk]
    base = naive_attention(q, kb, vb, lengths[:, None] - 1, kpos, valid).bfloat16()
    ks[:, Tk:] = float("nan")  # poison: a read past a row's length would show
    fast = triton_kernels.decode_attention_splitk(q, kq, vq, lengths, k_scale=ks, v_scale=vs, fp16_operands=f16)
    assert torch.isfinite(fast).all()
    check(f"triton fp8 decode Tk={Tk} {'fp16' if f16 else 'bf16'} products", fast, base, ref)
    if head_major:  # the cache's value layout too (token-contiguous): under one config, the same sums and bits
        vq = fp8.token_contiguous(vq)
        assert triton_kernels.values_token_contiguous(vq)
        bn, ns = triton_kernels._decode_config(B * Hk, Tk, quant=True)  # the token-major default that gave `fast`
        same = triton_kernels.decode_attention_splitk(q, kq, vq, lengths, k_scale=ks, v_scale=vs, fp16_operands=f16,
                                                      block_n=bn, num_stages=ns)  # fmt: skip
        assert torch.equal(same, fast)
        # its own default config (other blocks: other sums), against the reference on its own
        fast = triton_kernels.decode_attention_splitk(q, kq, vq, lengths, k_scale=ks, v_scale=vs, fp16_operands=f16)
        assert torch.isfinite(fast).all()
        check(f"triton fp8 decode Tk={Tk} {'fp16' if f16 else 'bf16'} products, token-contiguous values", fast, base,
              ref)  # fmt: skip
    if f16 == triton_kernels.FP8_FP16_OPERANDS:  # the model's route takes the default
        via_api = decode_attention(q, fp8.QuantKV(kq, ks), fp8.QuantKV(vq, vs), None, backend="triton",
                                   kv_len=lengths)  # fmt: skip
        assert torch.equal(via_api, fast)
    if f16:
        big = q * 2.0**17
        ref = naive_attention(big.double(), kd, vd, lengths[:, None] - 1, kpos, valid)
        base = naive_attention(big, kb, vb, lengths[:, None] - 1, kpos, valid).bfloat16()
        fast = triton_kernels.decode_attention_splitk(big, kq, vq, lengths, k_scale=ks, v_scale=vs, fp16_operands=True)
        assert torch.isfinite(fast).all()
        check(f"triton fp8 decode Tk={Tk} fp16 products, queries x 2**17", fast, base, ref)


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("interleaved", [True, False], ids=["yoco", "llama"])
def test_triton_rope_matches_compiled_twin(interleaved):
    """In-place RoPE on the q/k heads of a fused projection output equals the PyTorch twin.

    Tolerance, from rounding: each output is ``(x1 c - x2 s) * scale``, three fp32 roundings per path, so two fp32
    paths differ by at most about ``6 eps32 (|x1| + |x2|) scale``; bf16 outputs may further land on neighbouring
    bf16 values (one bf16 ulp, ``2**-8`` of the value rounded up to ``2**-7``)."""
    from yoco_eval.ops.fused import _rope
    from yoco_eval.ops.rope import apply_rope_qk, inv_freq, rope_tables

    B, T, H, D = 2, 3000, 24, 128
    eps32 = torch.finfo(torch.float32).eps
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator(device=DEV).manual_seed(3)
        buf = torch.randn(B, T, 4 * H * D + H, device=DEV, generator=g).to(dtype) * 4
        pos = torch.arange(500_000, 500_000 + T, device=DEV).expand(B, T)
        tables = rope_tables(pos, inv_freq(D, 10000.0, "yoco" if interleaved else "llama", DEV), dtype)
        q, k = buf[..., : H * D].view(B, T, H, D), buf[..., H * D : 2 * H * D].view(B, T, H, D)
        ins = {"q": (q.float().clone(), 1.0), "k": (k.float().clone(), D**-0.5)}
        ref_q, ref_k = _rope(q.clone(), *tables, interleaved, 1.0), _rope(k.clone(), *tables, interleaved, D**-0.5)
        rest = buf[..., 2 * H * D :].clone()
        out_q, out_k = apply_rope_qk(q, k, tables, interleaved, D**-0.5)
        assert out_q.data_ptr() == q.data_ptr() and out_k.data_ptr() == k.data_ptr()  # in place, one launch
        assert torch.equal(buf[..., 2 * H * D :], rest)  # v, g, gate logits untouched
        for name, a, b in (("q", out_q, ref_q), ("k", out_k, ref_k)):
            x, scale = ins[name]
            pair = x.abs().amax(-1, keepdim=True) * 2  # |x1| + |x2| bounded by twice the head's largest entry
            tol = 6 * eps32 * pair * scale + (2**-7 * b.float().abs() if dtype == torch.bfloat16 else 0)
            diff = (a.float() - b.float()).abs()
            worst = (diff / tol).max().item()
            print(f"triton rope {dtype} {name}: max diff {diff.max().item():.3g}, worst diff/tolerance {worst:.3g}")
            assert worst <= 1


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("rows", [8192, 3001, 1], ids=["ffn-block", "ragged", "decode"])
def test_triton_swiglu_matches_reference(rows):
    """SwiGLU on the two halves of a fused up-projection output (row stride 2N), the FFN's real layout."""
    from yoco_eval.ops.fused import _silu_mul, silu_mul

    N = 8192
    g = torch.Generator(device=DEV).manual_seed(rows)
    buf = (torch.randn(rows, 2 * N, device=DEV, generator=g) * 3).bfloat16()
    a, b = buf[:, :N], buf[:, N:]
    ref = torch.nn.functional.silu(a.double()) * b.double()
    fast = triton_kernels.silu_mul(a, b)
    assert fast is not None and fast.is_contiguous()
    assert torch.equal(silu_mul(a, b), fast)  # the dispatcher takes the Triton kernel for this layout
    check(f"triton swiglu rows={rows}", fast, _silu_mul(a, b), ref)


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("rows,offset", [(32768, 0), (1, 0), (3, 3072)], ids=["prefill", "decode", "strided"])
def test_triton_rms_norm_matches_reference(rows, offset):
    """RMSNorm at a prefill chunk, one token, and a strided view with a storage offset (a last-token slice): one
    kernel for all three, where Inductor recompiled per row count, offset and stride."""
    from yoco_eval.ops.fused import _rms_norm, rms_norm

    D, eps = 3072, 1e-5
    g = torch.Generator(device=DEV).manual_seed(rows)
    buf = (torch.randn(rows, 2 * D + offset, device=DEV, generator=g) * 2).bfloat16()
    x = buf[:, offset : offset + D]
    w = (torch.rand(D, device=DEV, generator=g) + 0.5).bfloat16()
    xd = x.double()
    normed = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps)
    for weight, ref in ((w, normed * w.double()), (None, normed)):
        fast = triton_kernels.rms_norm(x, weight, eps)
        assert fast is not None and fast.is_contiguous()
        assert torch.equal(rms_norm(x, weight, eps), fast)  # the dispatcher takes the Triton kernel
        check(f"triton rms_norm rows={rows} affine={weight is not None}", fast, _rms_norm(x, weight, eps), ref)


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
def test_triton_gate_log_matches_reference():
    """Retention's log-decay from the gate logits, a strided slice of the fused projection (values to +-60)."""
    from yoco_eval.ops.fused import _gate_log, gate_log

    B, T, H, normalizer = 2, 4096, 24, 16.0
    g = torch.Generator(device=DEV).manual_seed(0)
    buf = (torch.randn(B, T, 4 * 3072 + H, device=DEV, generator=g) * 20).bfloat16()
    gt = buf[..., -H:]
    ref = torch.nn.functional.logsigmoid(gt.double()) / normalizer
    fast = triton_kernels.gate_log(gt, normalizer)
    assert fast is not None and fast.dtype == torch.float32 and fast.is_contiguous()
    assert torch.equal(gate_log(gt, normalizer), fast)
    rel = ((fast.double() - ref).abs() / ref.abs().clamp_min(1e-30)).max().item()
    print(f"triton gate_log: max rel err {rel:.3g} (fp32 rounding: 6e-8 per operation)")
    assert rel < 1e-5
    check("triton gate_log", fast, _gate_log(gt, normalizer), ref, floor=1e-6)


@pytest.mark.skipif(triton_kernels.TensorDescriptor is None or not torch.cuda.is_available()
                    or torch.cuda.get_device_capability()[0] != 9,
                    reason="the fused up-projection needs triton's TMA descriptors on a Hopper GPU")
@pytest.mark.parametrize("rows", [8192, 3001])
def test_triton_swiglu_up_matches_reference(rows):
    """The up-projection GEMM with SwiGLU in its epilogue, at the FFN's row slice and a ragged tail."""
    from yoco_eval.ops.fused import _swiglu_up, swiglu_up

    K, N = 3072, 8192
    g = torch.Generator(device=DEV).manual_seed(rows)
    x = torch.randn(rows, K, device=DEV, generator=g).bfloat16()
    w = (torch.randn(2 * N, K, device=DEV, generator=g) * K**-0.5).bfloat16()
    ab = x.double() @ w.double().T
    ref = torch.nn.functional.silu(ab[:, :N]) * ab[:, N:]
    fast = triton_kernels.swiglu_up(x, w)
    assert fast is not None and fast.shape == (rows, N)
    assert torch.equal(swiglu_up(x, w), fast)  # the dispatcher takes the fused kernel at these row counts
    check(f"triton swiglu_up rows={rows}", fast, _swiglu_up(x, w), ref)
    short = x[: triton_kernels.SWIGLU_UP_MIN_ROWS - 1]
    assert triton_kernels.swiglu_up(short, w) is None  # decode and short chunks keep cuBLAS + the SwiGLU pass


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("T", [4096, 1], ids=["prefill", "decode"])
def test_triton_retention_gate_matches_reference(T):
    """``silu(g) * rms_norm_per_head(o)``: g a strided slice of a projection output, o as fla-core returns it."""
    from yoco_eval.ops.fused import _silu_gate_head_norm, silu_gate_head_norm

    B, H, D, eps = 2, 24, 128, 1e-5
    g = torch.Generator(device=DEV).manual_seed(T)
    gbuf = (torch.randn(B, T, 2 * H * D, device=DEV, generator=g) * 3).bfloat16()
    gate = gbuf[..., H * D :]
    o = (torch.randn(B, T, H, D, device=DEV, generator=g) * 0.05).bfloat16()
    od = o.double()
    normed = od * torch.rsqrt(od.pow(2).mean(-1, keepdim=True) + eps)
    ref = torch.nn.functional.silu(gate.double()) * normed.flatten(-2)
    fast = triton_kernels.silu_gate_head_norm(gate, o, eps)
    assert fast is not None and fast.is_contiguous()
    assert torch.equal(silu_gate_head_norm(gate, o, eps), fast)
    check(f"triton retention gate T={T}", fast, _silu_gate_head_norm(gate, o, eps), ref)


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("B", [1, 8])
def test_triton_retention_decode_step_matches_reference(B):
    """The fused decode step (YOCO-3B: 24 heads of 128) on bf16 views of one fused projection row and a live fp32
    state, against the separate steps in bf16 and fp64; the state it updates in place too."""
    from yoco_eval.ops.fused import _gate_log, _silu_gate_head_norm
    from yoco_eval.ops.retention import recurrent_retention_step

    H, D, eps = 24, 128, 1e-5
    g = torch.Generator(device=DEV).manual_seed(B)
    buf = torch.randn(B, 1, 4 * H * D + H, device=DEV, generator=g).bfloat16()
    q, k, v = (buf[..., i * H * D : (i + 1) * H * D].view(B, 1, H, D) for i in range(3))
    k = (k.float() * D**-0.5).bfloat16()
    gate, gt = buf[..., 3 * H * D : 4 * H * D] * 3, buf[..., 4 * H * D :] * 8
    state = torch.randn(B, H, D, D, device=DEV, generator=g) * 0.5
    qd, kd, vd, gd, sd = (t.double() for t in (q, k, v, gate, state))
    log_g = torch.nn.functional.logsigmoid(gt.double()) / 16.0
    s_ref = log_g[:, 0, :, None, None].exp() * sd + kd[:, 0, :, :, None] * vd[:, 0, :, None, :]
    o_ref = torch.einsum("bhd,bhde->bhe", qd[:, 0], s_ref)[:, None]
    ref = torch.nn.functional.silu(gd) * (o_ref * torch.rsqrt(o_ref.pow(2).mean(-1, keepdim=True) + eps)).flatten(-2)
    o_base, s_base = recurrent_retention_step(q, k, v, _gate_log(gt, 16.0), state)
    base = _silu_gate_head_norm(gate, o_base, eps)
    live = state.clone()
    fast = triton_kernels.retention_step(q, k, v, gt, gate, live, 16.0, eps)
    assert fast is not None and fast.shape == (B, 1, H * D) and fast.dtype == torch.bfloat16
    check(f"triton retention decode step B={B}", fast, base, ref)
    check(f"triton retention decode step state B={B}", live, s_base, s_ref, floor=1e-5)


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("Bn,T,Di,with_state", [(1, 8192, 5120, False), (1, 65536, 512, True), (2, 3001, 1000, True)],
                         ids=["phi-T8192", "T65536-state", "B2-ragged"])  # fmt: skip
def test_triton_selective_scan_matches_reference(Bn, T, Di, with_state):
    """Mamba-1's scan (Phi-4-mini-flash: Di = 5120, N = 16) on bf16 inputs laid out as the model passes them: x a
    slice of the fused [x, z] in-projection, B and C slices of x_proj's output; dt = softplus around Mamba's init
    range (1e-3 .. 0.1), A = -exp(A_log) with A_log = log(1..N) (Mamba's init), row 1 (if any) right-padded with
    dt = 0. Reference: the sequential scan in fp64 on the same (bf16-valued) inputs; the twin: the sequential
    scan on the bf16 inputs (fp32 inside, y rounded to bf16).

    Floors. y is bf16 in both: each rounding is at most half a bf16 ulp, 2**-8 of |y| (8 significant bits), so a
    kernel whose fp32 y differs from the twin's by a few fp32 ulps can still round one element the other way:
    floor ``2**-8 * max|y_ref|``. The final state is fp32 in both, summed in another order (chunk states carried
    by exp(A sum dt) instead of token by token): floor ``2**-17 * max|s_ref|``, a hundred-odd fp32 ulps."""
    from yoco_eval.ops.selective_scan import naive_selective_scan, selective_scan
    from yoco_eval.ops.triton_scan import selective_scan_fwd

    N, R = 16, 160  # state size, dt rank (Phi-4-mini-flash)
    g = torch.Generator(device=DEV).manual_seed(T + Di)
    xz = torch.randn(Bn, T, 2 * Di, device=DEV, generator=g).bfloat16()
    x = xz[..., :Di]
    proj = torch.randn(Bn, T, R + 2 * N, device=DEV, generator=g).bfloat16()
    Bm, C = proj[..., R : R + N], proj[..., R + N :]
    dt = torch.nn.functional.softplus(torch.randn(Bn, T, Di, device=DEV, generator=g) - 4).bfloat16()
    if Bn > 1:
        dt[1, T - T // 3 :] = 0.0
    A = -torch.exp(torch.log(torch.arange(1, N + 1, device=DEV, dtype=torch.float32)).expand(Di, N).contiguous())
    D = torch.ones(Di, device=DEV) + 0.1 * torch.randn(Di, device=DEV, generator=g)
    s0 = torch.randn(Bn, Di, N, device=DEV, generator=g) if with_state else None
    ref_y, ref_s = naive_selective_scan(*(t.double() for t in (x, dt, A, Bm, C, D)),
                                        s0.double() if with_state else None)  # fmt: skip
    base_y, base_s = naive_selective_scan(x, dt, A, Bm, C, D, s0)
    fast_y, fast_s = selective_scan_fwd(x, dt, A, Bm, C, D, s0)
    assert fast_y.dtype == torch.bfloat16 and fast_s.dtype == torch.float32
    assert torch.isfinite(fast_y).all() and torch.isfinite(fast_s).all()
    check(f"triton selective scan B={Bn} T={T} Di={Di} y", fast_y, base_y, ref_y,
          floor=2**-8 * ref_y.abs().max().item())  # fmt: skip
    check(f"triton selective scan B={Bn} T={T} Di={Di} state", fast_s, base_s, ref_s,
          floor=2**-17 * ref_s.abs().max().item())  # fmt: skip
    via_api = selective_scan(x, dt, A, Bm, C, D, s0)  # "auto" on CUDA takes the kernel
    assert torch.equal(via_api[0], fast_y) and torch.equal(via_api[1], fast_s)


@pytest.mark.skipif(triton_kernels.triton is None, reason="triton not installed")
@pytest.mark.parametrize("epi", ["plain", "residual", "swiglu"])
@pytest.mark.parametrize("N,K", [(3072, 3072), (3072, 8192), (12312, 3072)], ids=["3072x3072", "3072x8192", "12312"])
def test_triton_gemv_matches_reference(N, K, epi):
    """The one-row GEMV (decode at batch 1) with each epilogue against fp64, with the cuBLAS path it replaces
    (GEMM, then the residual add inside cuBLAS's addmm or the separate SwiGLU pass) as the twin; odd N is masked."""
    from yoco_eval.ops.fused import _silu_mul

    g = torch.Generator(device=DEV).manual_seed(N + K)
    rows = 2 * N if epi == "swiglu" else N
    x = torch.randn(1, 1, K, device=DEV, generator=g).bfloat16()
    w = (torch.randn(rows, K, device=DEV, generator=g) * K**-0.5).bfloat16()
    r = torch.randn(1, 1, N, device=DEV, generator=g).bfloat16()
    ref = x.double() @ w.double().t()
    if epi == "swiglu":
        a, b = ref.chunk(2, dim=-1)
        ref = torch.nn.functional.silu(a) * b
        base = _silu_mul(*torch.nn.functional.linear(x, w).chunk(2, dim=-1))
        fast = triton_kernels.gemv(x, w, swiglu=True)
    elif epi == "residual":
        ref = ref + r.double()
        base = r.clone().view(1, -1).addmm_(x.view(1, -1), w.t()).view(r.shape)
        fast = triton_kernels.gemv(x, w, residual=r.clone())
        inplace = r.clone()
        assert triton_kernels.gemv(x, w, residual=inplace, out=inplace) is inplace and torch.equal(inplace, fast)
    else:
        base = torch.nn.functional.linear(x, w)
        fast = triton_kernels.gemv(x, w)
    assert fast.shape == base.shape and fast.dtype == torch.bfloat16
    check(f"triton gemv {N}x{K} {epi}", fast, base, ref)
    assert triton_kernels.gemv(torch.cat([x, x], 1), w) is None, "two rows: cuBLAS's job"
