"""Our Triton kernels' arithmetic on the CPU, under Triton's interpreter (``TRITON_INTERPRET=1``), in fp32.

Run by ``tests/ops/test_triton_interpreter.py`` in a subprocess: Triton picks the interpreter when a kernel is
defined, so the variable must be set before ``yoco_eval.ops.triton_kernels`` is imported. The GPU tests
(``tests/gpu``) check the same kernels in bf16 at real sizes; these catch index, mask, stride and loop mistakes in
CI, where there is no GPU. Rule (as on the GPU): a kernel's error against the fp64 reference is at most twice the
plain-PyTorch twin's, plus a floor of a few fp32 ulps of the values (``FLOOR``) for errors that happen to be 0.
fp8 is left to the GPU tests: the interpreter computes with numpy, which has no fp8.
"""

from __future__ import annotations

import pytest
import torch

from yoco_eval import settings

if not settings.get().triton_interpret:
    raise RuntimeError("run these with TRITON_INTERPRET=1 (tests/ops/test_triton_interpreter.py does)")

from yoco_eval.ops import fused, triton_kernels  # noqa: E402
from yoco_eval.ops.naive import naive_attention  # noqa: E402

FLOOR = 1e-5


@pytest.fixture(autouse=True)
def _settings_follow_the_restored_environment():
    yield
    settings.reload()  # autouse, so torn down after monkeypatch has put back what a test set


def err(a, ref):
    return (a.double() - ref).abs().max().item()


def check(fast, base, ref, floor=FLOOR):
    e_fast, e_base = err(fast, ref), err(base, ref)
    assert e_fast <= 2 * e_base + floor, f"kernel error {e_fast:.3g} against the twin's {e_base:.3g}"


@pytest.mark.parametrize("affine", [True, False])
def test_rms_norm(affine):
    g = torch.Generator().manual_seed(0)
    D = 48  # not a power of two: the last block is masked
    buf = torch.randn(3, 7, 2 * D + 5, generator=g) * 3
    x = buf[:, :, 5 : 5 + D]  # a strided view with a storage offset
    w = torch.rand(D, generator=g) + 0.5 if affine else None
    xd = x.double()
    ref = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5)
    ref = ref * w.double() if affine else ref
    fast = triton_kernels.rms_norm(x, w, 1e-5)
    assert fast is not None and fast.shape == x.shape and fast.is_contiguous()
    check(fast, fused._rms_norm(x, w, 1e-5), ref)


def test_gate_log():
    g = torch.Generator().manual_seed(1)
    buf = torch.randn(2, 9, 4 * 8 + 5, generator=g) * 30
    x = buf[..., -5:]
    ref = torch.nn.functional.logsigmoid(x.double()) / 16.0
    fast = triton_kernels.gate_log(x, 16.0)
    assert fast is not None and fast.dtype == torch.float32
    check(fast, fused._gate_log(x, 16.0), ref, floor=1e-6)


def test_silu_mul_on_the_halves_of_a_projection():
    g = torch.Generator().manual_seed(2)
    buf = torch.randn(6, 2 * 1100, generator=g) * 3  # N > one 1024-wide block
    a, b = buf[:, :1100], buf[:, 1100:]
    ref = torch.nn.functional.silu(a.double()) * b.double()
    fast = triton_kernels.silu_mul(a, b)
    assert fast is not None
    check(fast, fused._silu_mul(a, b), ref)


def test_silu_gate_head_norm():
    g = torch.Generator().manual_seed(3)
    B, T, H, D = 2, 5, 3, 16
    gbuf = torch.randn(B, T, 2 * H * D, generator=g) * 3
    gate = gbuf[..., H * D :]
    o = torch.randn(B, T, H, D, generator=g) * 0.1
    od = o.double()
    normed = od * torch.rsqrt(od.pow(2).mean(-1, keepdim=True) + 1e-5)
    ref = torch.nn.functional.silu(gate.double()) * normed.flatten(-2)
    fast = triton_kernels.silu_gate_head_norm(gate, o, 1e-5)
    assert fast is not None
    check(fast, fused._silu_gate_head_norm(gate, o, 1e-5), ref)


def _retention_step_inputs(B, H, D, DV, seed):
    """A decode step's inputs laid out as the model passes them: q, k, v, the gate logits and the output gate all
    views into one fused projection row (strided), and a live fp32 state."""
    g = torch.Generator().manual_seed(seed)
    width = 2 * H * D + H * DV + H * DV + H + 3  # q | k | v | g | gt | spare
    buf = torch.randn(B, 1, width, generator=g)
    q = buf[..., : H * D].view(B, 1, H, D)
    k = buf[..., H * D : 2 * H * D].view(B, 1, H, D) * D**-0.5
    v = buf[..., 2 * H * D : 2 * H * D + H * DV].view(B, 1, H, DV)
    gate = buf[..., 2 * H * D + H * DV : 2 * H * D + 2 * H * DV] * 3
    gt = buf[..., 2 * H * D + 2 * H * DV : 2 * H * D + 2 * H * DV + H] * 8
    state = torch.randn(B, H, D, DV, generator=g)
    return q, k.contiguous(), v, gt, gate, state


@pytest.mark.parametrize("B,H,D,DV", [(2, 3, 16, 16), (1, 2, 32, 16)], ids=["square", "wide-key"])
def test_retention_decode_step(B, H, D, DV):
    """The fused step (log-decay, state update in place, q S, per-head norm, SiLU gate) against the twin (the
    separate steps the model runs elsewhere) and an fp64 reference; the state must come out equal too."""
    from yoco_eval.ops.retention import recurrent_retention_step

    q, k, v, gt, gate, state = _retention_step_inputs(B, H, D, DV, seed=11)
    qd, kd, vd, gd, sd = (t.double() for t in (q, k, v, gate, state))
    log_g = torch.nn.functional.logsigmoid(gt.double()) / 16.0
    s_ref = log_g[:, 0, :, None, None].exp() * sd + kd[:, 0, :, :, None] * vd[:, 0, :, None, :]
    o_ref = torch.einsum("bhd,bhde->bhe", qd[:, 0], s_ref)[:, None]
    normed = o_ref * torch.rsqrt(o_ref.pow(2).mean(-1, keepdim=True) + 1e-5)
    ref = torch.nn.functional.silu(gd) * normed.flatten(-2)
    o_base, s_base = recurrent_retention_step(q, k, v, fused._gate_log(gt, 16.0), state)
    base = fused._silu_gate_head_norm(gate, o_base, 1e-5)
    live = state.clone()
    fast = triton_kernels.retention_step(q, k, v, gt, gate, live, 16.0, 1e-5)
    assert fast is not None and fast.shape == (B, 1, H * DV)
    check(fast, base, ref)
    check(live, s_base, s_ref)  # updated in place


def test_retention_decode_step_declines_what_it_cannot_take():
    q, k, v, gt, gate, state = _retention_step_inputs(1, 2, 16, 16, seed=12)
    assert triton_kernels.retention_step(q, k, v, gt, gate, state.transpose(-1, -2), 16.0, 1e-5) is None
    assert triton_kernels.retention_step(q, k, v, gt, gate, state.double(), 16.0, 1e-5) is None
    two = torch.cat([q, q], 1)  # two tokens: not a decode step
    assert triton_kernels.retention_step(two, two, torch.cat([v, v], 1), gt, gate, state, 16.0, 1e-5) is None


@pytest.mark.parametrize("interleaved", [True, False], ids=["yoco", "llama"])
@pytest.mark.parametrize("adjacent", [True, False, "neighbours"], ids=["fused-qk", "separate", "neighbours"])
@pytest.mark.parametrize("min_programs", [256, 1], ids=["heads-split", "heads-together"])
def test_rope_in_place(interleaved, adjacent, min_programs, monkeypatch):
    """``neighbours``: q and k are two tensors of their own that merely sit back to back in memory (the caching
    allocator does this to small tensors, e.g. a 1-token step's separate q/k projections): they must be rotated
    one by one, never through one view that runs past q's storage. ``min_programs``: a few tokens spread their
    heads over programs (decode), many keep them in one program (prefill)."""
    from yoco_eval.ops.rope import apply_rope_qk, inv_freq, rope_tables

    monkeypatch.setattr(triton_kernels, "ROPE_MIN_PROGRAMS", min_programs)

    B, T, H, Hk, D = 2, 19, 3, 2, 16  # T not a multiple of the 16-token block
    g = torch.Generator().manual_seed(4)
    buf = torch.randn(B, T, (H + 2 * Hk) * D, generator=g) * 4
    pos = torch.arange(1000, 1000 + T).expand(B, T)
    tables = rope_tables(pos, inv_freq(D, 10000.0, "yoco" if interleaved else "llama", "cpu"), torch.float32)
    q = buf[..., : H * D].view(B, T, H, D)
    k = buf[..., H * D : (H + Hk) * D].view(B, T, Hk, D) if adjacent is True else buf[..., -Hk * D :].view(B, T, Hk, D)
    if adjacent == "neighbours":  # B = T = 1, as many key heads as query heads (gated retention): q's bytes, then
        B, T, Hk = 1, 1, H  # k's, as two storages over one memory block (equal strides: they look fused)
        tables = tuple(t[:1, :1] for t in tables)
        mem = bytearray(2 * H * D * 4)
        q = torch.frombuffer(mem, dtype=torch.float32, count=H * D).view(1, 1, H, D)
        k = torch.frombuffer(mem, dtype=torch.float32, count=H * D, offset=H * D * 4).view(1, 1, H, D)
        q.copy_(buf[:1, :1, : H * D].view(1, 1, H, D))
        k.copy_(buf[:1, :1, -H * D :].view(1, 1, H, D))
        assert k.data_ptr() == q.data_ptr() + H * D * 4 and k.stride() == q.stride()
        assert k.untyped_storage().data_ptr() != q.untyped_storage().data_ptr()
    kd_, qd_ = k.double(), q.double()
    cos, sin = (t.double() for t in tables)
    ref_q = fused._rope(qd_, cos, sin, interleaved, 1.0)
    ref_k = fused._rope(kd_, cos, sin, interleaved, D**-0.5)
    base_q = fused._rope(q.clone(), *tables, interleaved, 1.0)
    base_k = fused._rope(k.clone(), *tables, interleaved, D**-0.5)
    out_q, out_k = apply_rope_qk(q, k, tables, interleaved, D**-0.5)
    assert out_q.data_ptr() == q.data_ptr() and out_k.data_ptr() == k.data_ptr()  # rotated in place
    check(out_q, base_q, ref_q)
    check(out_k, base_k, ref_k)


def _decode_case(G: int, D: int, DV: int, seed: int, splits, Tk: int = 300, peak: int | None = None,
                 token_contiguous: bool = False):  # fmt: skip
    """The split-key kernel on 2 rows of unequal lengths over poisoned spare slots: (kernel, twin, fp64 reference).
    ``peak``: row 0's keys there (16 of them) lean towards their group's queries, so the splits holding them carry
    the largest log-sum-exp. ``token_contiguous``: values stored ``[B, Hk, DV, T']`` (the fp8 cache's layout) with
    ``T'`` the keys rounded up to 16: the kernel reads each row's values to the next multiple of 16, so the slots
    there past a row's length hold huge finite values (zero weight must cancel them), the rest NaN."""
    B, Hk = 2, 2
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, 1, Hk * G, D, generator=g)
    k = torch.randn(B, Tk + 40, Hk, D, generator=g)
    if peak is not None:
        k[0, peak : peak + 16] += 0.5 * q[0, 0].view(Hk, G, D).mean(1)
    v = torch.randn(B, Tk + 40, Hk, DV, generator=g)
    lengths = torch.tensor([Tk, 107])
    valid = torch.arange(Tk)[None] < lengths[:, None]
    kpos = torch.arange(Tk).expand(B, Tk)
    ref = naive_attention(q.double(), k[:, :Tk].double(), v[:, :Tk].double(), lengths[:, None] - 1, kpos, valid)
    base = naive_attention(q, k[:, :Tk], v[:, :Tk], lengths[:, None] - 1, kpos, valid)
    k[:, Tk:] = float("nan")  # poison: a read past a row's length would show
    v[:, Tk:] = float("nan")
    if token_contiguous:
        padded = -(-Tk // 16) * 16
        vt = torch.full((B, Hk, DV, padded), float("nan"))
        vt[..., :Tk] = v[:, :Tk].permute(0, 2, 3, 1)
        for b, n in enumerate(lengths.tolist()):
            vt[b, :, :, n : -(-n // 16) * 16] = 1e30
            vt[b, :, :, -(-n // 16) * 16 :] = float("nan")
        v = vt[..., :Tk].permute(0, 3, 1, 2)  # storage reaches exactly the last multiple of 16
        assert triton_kernels.values_token_contiguous(v)
        short = v.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # storage ends at Tk
        with pytest.raises(ValueError, match="multiple of 16 tokens"):
            triton_kernels.values_token_contiguous(short)
    fast = triton_kernels.decode_attention_splitk(q, k, v, lengths, splits=splits, block_n=32)
    assert fast.shape == (B, 1, Hk * G, DV) and torch.isfinite(fast).all()
    return fast, base, ref


@pytest.mark.parametrize("splits,Tk,peak", [(None, 300, None), (3, 300, None), (140, 4400, 4300)])
def test_decode_attention_splitk(splits, Tk, peak):
    # 140 splits of 4,400 keys (32 each): row 0's splits 0-137 hold keys, row 1's 0-3; row 0's largest log-sum-exp
    # is in split 134, so the merge's running maximum moves in its second block of 128 splits, which is partly masked
    check(*_decode_case(G=3, D=64, DV=64, seed=5, splits=splits, Tk=Tk, peak=peak))


@pytest.mark.parametrize("splits,Tk", [(None, 300), (3, 300), (7, 301)])
def test_decode_attention_splitk_token_contiguous_values(splits, Tk):
    """Values token-contiguous (the fp8 cache's layout), read 16 tokens at a time: each row's last vector crosses its
    length (row 1 has 107 keys; 301 keys in 7 splits end mid-vector)."""
    check(*_decode_case(G=3, D=64, DV=64, seed=5, splits=splits, Tk=Tk, token_contiguous=True))


@pytest.mark.parametrize("paired", [False, True], ids=["shipped", "paired-weight"])
@pytest.mark.parametrize("rows,programs", [(40, 3), (128, 64)], ids=["persistent-loop", "one-tile-each"])
def test_swiglu_up_gemm(rows, programs, paired):
    """The fused up-projection's tile walk, edges (TMA zero fill past the last row) and epilogue, at a small tile;
    and the benchmark's paired-weight variant (one wide product a tile, the pairs split apart in the epilogue)."""
    g = torch.Generator().manual_seed(6)
    K, N = 48, 32
    x = torch.randn(rows, K, generator=g)
    w = torch.randn(2 * N, K, generator=g) * K**-0.5
    ab = x.double() @ w.double().T
    ref = torch.nn.functional.silu(ab[:, :N]) * ab[:, N:]
    if paired:
        wp = triton_kernels.pair_swiglu_weight(w)
        assert torch.equal(wp[0::2], w[:N]) and torch.equal(wp[1::2], w[N:])
        fast = triton_kernels.swiglu_up_paired(x, wp, (16, 16, 16, 1, 1), programs)
    else:
        fast = triton_kernels._swiglu_up_launch(x, w, (16, 16, 16, 1, 1), programs)
    check(fast, fused._swiglu_up(x, w), ref)


@pytest.mark.parametrize("epi", ["plain", "residual", "swiglu"])
@pytest.mark.parametrize("config", [(4, 32, 4), (8, 64, 2)])
def test_gemv(epi, config):
    """The one-row GEMV with each epilogue; N and K not multiples of the blocks (masked rows and columns); the
    residual written in place."""
    g = torch.Generator().manual_seed(3)
    N, K = 37, 150
    x = torch.randn(1, 1, K, generator=g)
    w = torch.randn(2 * N if epi == "swiglu" else N, K, generator=g) * K**-0.5
    r = torch.randn(1, 1, N, generator=g)
    ref = x.double() @ w.double().t()
    if epi == "swiglu":
        a, b = ref.chunk(2, dim=-1)
        ref, base = torch.nn.functional.silu(a) * b, fused._swiglu_up(x.view(1, K), w).view(1, 1, N)
        fast = triton_kernels.gemv(x, w, swiglu=True, config=config)
    elif epi == "residual":
        ref, base = ref + r.double(), r + torch.nn.functional.linear(x, w)
        fast = r.clone()
        assert triton_kernels.gemv(x, w, residual=fast, out=fast, config=config) is fast
    else:
        base, fast = torch.nn.functional.linear(x, w), triton_kernels.gemv(x, w, config=config)
    assert fast.shape == (1, 1, N)
    check(fast, base, ref)
    assert triton_kernels.gemv(x.expand(1, 2, K), w) is None  # two rows: cuBLAS's job


@pytest.mark.parametrize("B", [2, 1])
@torch.inference_mode()
def test_yoco_model_through_the_kernels(monkeypatch, B):
    """A tiny YOCO's chunked prefill + decode (rewritten for inference, as the Engine runs it) with the kernels in
    place of their twins, against fp64, under
    tests/model/test_cache.py's rule and helpers. Counts the kernel calls, so a silent fallback to the twins fails.
    At batch 1, decode's projections go through the one-row GEMV."""
    from tests.model.test_cache import assert_close_to_ref, make, ref64
    from yoco_eval.model.inference import prepare_for_inference

    calls: dict[str, int] = {}
    for name in ("rms_norm", "gate_log", "silu_mul", "silu_gate_head_norm", "rope_", "retention_step", "gemv"):
        fn = getattr(triton_kernels, name)

        def counted(*a, _fn=fn, _name=name, **kw):
            out = _fn(*a, **kw)
            calls[_name] = calls.get(_name, 0) + (out is not None)
            return out

        monkeypatch.setattr(triton_kernels, name, counted)
    model = make("yoco-debug")
    ids = torch.randint(4, 260, (B, 40), generator=torch.Generator().manual_seed(7))
    monkeypatch.setenv("YOCO_EVAL_TRITON", "0")  # the twins: the fp32 full forward and the fp64 reference
    settings.reload()
    full, ref = model(ids), ref64(model, ids)
    assert not calls
    monkeypatch.setenv("YOCO_EVAL_TRITON", "1")
    monkeypatch.setenv("YOCO_EVAL_GEMV", "1")  # the default, spelled out: the one-row GEMV at batch 1
    settings.reload()
    prepare_for_inference(model)  # as the Engine runs it: fused projections, residual-in-place GEMMs
    cache = model.setup_cache(B, 48)
    got = [model(ids[:, s : s + 12], cache=cache, start_pos=s) for s in range(0, 36, 12)]
    pos = torch.full((B,), 36)
    for t in range(36, 40):
        got.append(model(ids[:, t : t + 1], cache=cache, start_pos=pos))
        pos = pos + 1
    got = torch.cat(got, 1)
    ran = {k for k, n in calls.items() if n}  # calls that did not decline
    # the gate kernel declines the torch retention's head-major output at batch > 1 (its rows do not collapse into
    # one stride; fla-core's output on the GPU does) and the twin runs; the GEMV takes one-row projections only
    want = {"rms_norm", "gate_log", "silu_mul", "rope_", "retention_step"}
    assert ran == (want | {"silu_gate_head_norm", "gemv"} if B == 1 else want), calls
    assert_close_to_ref(got, full, ref)
    assert torch.equal(got.argmax(-1), full.argmax(-1))


# --- Mamba-1 selective scan (yoco_eval.ops.triton_scan) ------------------------------------------------------------


def _scan_inputs(Bn, T, Di, N, seed, strided=False, pad=0, state=True):
    """Inputs like a Mamba layer's: dt through softplus, A = -exp(A_log) with Mamba's ``log(1..N)`` init (times a
    per-channel jitter). ``strided``: x a slice of a fused [x, z] projection, B and C slices of one [dt, B, C]
    projection (non-contiguous views, as the model passes them), dt with a non-unit channel stride. ``pad``: the
    last ``pad`` tokens of row 1 are padding (dt = 0, garbage x, B, C)."""
    g = torch.Generator().manual_seed(seed)
    if strided:
        xz = torch.randn(Bn, T, 2 * Di, generator=g)
        x = xz[..., :Di]
        proj = torch.randn(Bn, T, 3 + 2 * N, generator=g)
        Bm, C = proj[..., 3 : 3 + N], proj[..., 3 + N :]
        dt_buf = torch.randn(Bn, Di, T, generator=g)  # dt token-major in memory: a non-unit channel stride
        assert not (x.is_contiguous() or Bm.is_contiguous() or C.is_contiguous())
    else:
        x, Bm, C = (torch.randn(Bn, T, n, generator=g) for n in (Di, N, N))
    dt_buf = dt_buf.transpose(1, 2) if strided else torch.randn(Bn, T, Di, generator=g)
    dt = torch.nn.functional.softplus(dt_buf - 1)
    if pad:
        dt[1, T - pad :] = 0.0
        x[1, T - pad :] = 1e3
    A = -torch.exp(torch.log(torch.arange(1, N + 1, dtype=torch.float32)) + 0.3 * torch.randn(Di, N, generator=g))
    D = torch.randn(Di, generator=g)
    s0 = torch.randn(Bn, Di, N, generator=g) if state else None
    return x, dt, A, Bm, C, D, s0


def _check_scan(args, s0, **kw):
    from yoco_eval.ops.selective_scan import naive_selective_scan
    from yoco_eval.ops.triton_scan import selective_scan_fwd

    ref_y, ref_s = naive_selective_scan(*(a.double() if a is not None else None for a in args),
                                        s0.double() if s0 is not None else None)  # fmt: skip
    base_y, base_s = naive_selective_scan(*args, s0)
    y, s = selective_scan_fwd(*args, s0, **kw)
    assert y.shape == ref_y.shape and y.dtype == args[0].dtype and s.shape == ref_s.shape and s.dtype == torch.float32
    assert torch.isfinite(y).all() and torch.isfinite(s).all()
    check(y, base_y, ref_y)
    check(s, base_s, ref_s)
    return y, s


@pytest.mark.parametrize(
    "Bn,T,Di,N,chunk,warps,strided,state",
    [(2, 37, 40, 16, 16, 1, False, True),  # T not a multiple of the chunk; Di = 40: a full and a masked 32-block
     (1, 80, 40, 4, 32, 2, True, False),  # strided views, no state, one masked 64-channel block
     (2, 1, 24, 8, 16, 1, True, True),  # one token
     (1, 21, 24, 5, 8, 1, False, True),  # N not a power of two (masked to 8)
     (2, 19, 17, 1, 64, 1, False, False)],  # N = 1, one chunk longer than T
    ids=["T37-chunk16", "strided-no-state", "T1", "N5", "N1"],
)  # fmt: skip
def test_selective_scan(Bn, T, Di, N, chunk, warps, strided, state):
    x, dt, A, Bm, C, D, s0 = _scan_inputs(Bn, T, Di, N, seed=T + Di + N, strided=strided, state=state)
    _check_scan((x, dt, A, Bm, C, D), s0, chunk=chunk, num_warps=warps, carry_warps=1)


def test_selective_scan_padding_and_no_D():
    """Right padding (dt = 0) neither decays nor feeds the state: row 1's final state equals its state after the
    real tokens, and its real outputs equal a scan of the real tokens alone."""
    from yoco_eval.ops.triton_scan import selective_scan_fwd

    Bn, T, Di, N, pad = 2, 45, 40, 16, 13
    x, dt, A, Bm, C, D, s0 = _scan_inputs(Bn, T, Di, N, seed=11, strided=True, pad=pad)
    y, s = _check_scan((x, dt, A, Bm, C, None), s0, chunk=16, num_warps=1)
    real = [a[1:, : T - pad] for a in (x, dt)] + [A, Bm[1:, : T - pad], C[1:, : T - pad], None]
    y1, s1 = selective_scan_fwd(*real, s0[1:], chunk=16, num_warps=1)
    assert (s[1:] - s1).abs().max() < 1e-5 and (y[1:, : T - pad] - y1).abs().max() < 1e-5


def test_selective_scan_dispatch_under_the_interpreter():
    """'auto' picks the kernel when Triton can run (here: the interpreter) for more than one token; fp64 stays on
    the PyTorch path; 'triton' runs the kernel even for one token."""
    from yoco_eval.ops import triton_scan
    from yoco_eval.ops.selective_scan import naive_selective_scan, selective_scan

    x, dt, A, Bm, C, D, s0 = _scan_inputs(1, 20, 24, 4, seed=3)
    args = (x, dt, A, Bm, C, D, s0)
    assert torch.equal(selective_scan(*args)[0], triton_scan.selective_scan_fwd(*args)[0])
    one = [a[:, :1] if a is not None and a.dim() == 3 and a is not s0 else a for a in args]
    assert torch.equal(selective_scan(*one)[0], naive_selective_scan(*one)[0])
    assert torch.equal(selective_scan(*one, impl="triton")[0], triton_scan.selective_scan_fwd(*one)[0])
    a64 = [a.double() for a in args]
    assert torch.equal(selective_scan(*a64)[0], naive_selective_scan(*a64)[0])


def test_decode_attention_splitk_wide_values():
    """Value width DV = 2D (the differential layout's paired values) through the plain split-key kernel."""
    check(*_decode_case(G=2, D=16, DV=32, seed=8, splits=3))


def _diff_cache(g, B, T, KV, D, spare):
    """Keys/values of a differential layer's cache: strided views into ``[B, T + spare, ...]`` buffers, the
    spare slots poisoned."""
    from yoco_eval.model.phi4flash import to_pair_layout

    k, v = to_pair_layout(*(torch.randn(B, T + spare, KV, D, generator=g) for _ in range(2)))
    kbuf = torch.full((B, T + spare + 8, KV, D), float("nan"))
    vbuf = torch.full((B, T + spare + 8, KV // 2, 2 * D), float("nan"))
    kbuf[:, :T], vbuf[:, :T] = k[:, :T], v[:, :T]
    return kbuf[:, : T + spare], vbuf[:, : T + spare]


@pytest.mark.parametrize("splits", [None, 3])
def test_diff_decode_attention_splitk(splits):
    """Both differential halves in one launch against the model's own path (``diff_attend``, backend torch: the
    fp32 twin) and fp64 attention of each half; rows of unequal length, groups of 2 query heads per key head."""
    from yoco_eval.model.phi4flash import diff_attend

    B, H, KV, D, Tk = 2, 8, 4, 16, 300
    g = torch.Generator().manual_seed(9)
    q = torch.randn(B, 1, H, D, generator=g)
    k, v = _diff_cache(g, B, Tk, KV, D, spare=40)
    lengths = torch.tensor([Tk, 107])
    valid = torch.arange(Tk)[None] < lengths[:, None]
    kpos = torch.arange(Tk).expand(B, Tk)
    kd, vd = k[:, :Tk].double(), v[:, :Tk].double()
    ref = [naive_attention(q[:, :, a::2].double(), kd[:, :, a * KV // 2 : (a + 1) * KV // 2], vd,
                           lengths[:, None] - 1, kpos, valid) for a in (0, 1)]  # fmt: skip
    base = diff_attend(q, k[:, :Tk], v[:, :Tk], lengths[:, None] - 1, kpos, valid, None, "general", "torch")
    fast = triton_kernels.diff_decode_attention_splitk(q, k, v, lengths, splits=splits, block_n=32)
    for a_fast, a_base, a_ref in zip(fast, base, ref, strict=True):
        assert a_fast.shape == (B, 1, H // 2, 2 * D) and torch.isfinite(a_fast).all()
        check(a_fast, a_base, a_ref)


@torch.inference_mode()
def test_phi4flash_decode_through_the_fused_kernel(monkeypatch):
    """A tiny Phi4Flash (G = 2) with the split-key threshold lowered: the last prompt token of a uniform prefill and
    decode steps over rows of unequal length take the fused kernel (counted), and the logits stay within the rule
    of the same model with torch attention and decode (fp32 twin) against its fp64 copy (SDPA: fp64 math; the torch
    backend computes attention in fp32 whatever the dtype)."""
    import copy

    import yoco_eval.ops.attention as attention_ops
    from yoco_eval.model.phi4flash_load import build_phi4flash_preset

    monkeypatch.setattr(attention_ops, "SPLIT_DECODE_MIN", 64)
    calls = []
    fn = triton_kernels.diff_decode_attention_splitk
    monkeypatch.setattr(triton_kernels, "diff_decode_attention_splitk",
                        lambda *a, **kw: calls.append(a[3].tolist()) or fn(*a, **kw))  # fmt: skip
    model = build_phi4flash_preset("phi4flash-tiny", seed=1, attn_backend="torch").eval()
    ref_model = copy.deepcopy(model).double()
    ref_model.attn_backend = "sdpa"
    ids = torch.randint(4, 260, (2, 100), generator=torch.Generator().manual_seed(10))
    lens = torch.tensor([80, 71])
    valid = torch.arange(80)[None] < lens[:, None]

    def run(m, decode_backend):
        m.decode_backend = decode_backend
        cache = m.setup_cache(2, 100)
        outs = [m(ids[:, :72], cache=m.setup_cache(2, 100), start_pos=0, logits_from=1)]  # uniform: last token
        m(torch.where(valid, ids[:, :80], 0), cache=cache, start_pos=0, valid=valid, logits_from=0)
        p = lens.clone()
        for _ in range(3):  # per-row positions: rows hold 80 and 71 keys
            outs.append(m(ids.gather(1, p[:, None]), cache=cache, start_pos=p.clone()))
            p += 1
        return torch.cat(outs, 1)

    ref = run(ref_model, "torch")
    base = run(model, "torch")
    assert not calls
    fast = run(model, "triton")
    n_attn = sum(layer.kind in ("full", "cross") for layer in model.model.layers)
    assert calls == [[72, 72]] * n_attn + [[81, 72]] * n_attn + [[82, 73]] * n_attn + [[83, 74]] * n_attn
    check(fast, base, ref)
    assert torch.equal(fast.argmax(-1), base.argmax(-1))
