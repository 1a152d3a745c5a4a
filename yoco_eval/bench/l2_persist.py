"""Would keeping part of the shared fp8 K/V cache in L2 shorten a decode step? An access-policy window with
persisting hits, over 13 cross-decoder layers at 512K keys, each the split-key decode kernel plus a 189 MB weight
GEMV (YOCO-3B's cross-decoder projections; it streams the 50 MB L2 out between two attention reads), timed as
CUDA-graph replays, with the window set on the capture stream or on each kernel node, over the cache's scales
(one 32 MiB buffer that every split reads), the first bytes of the keys, or the keys' first 128 MiB at a lower hit
ratio. Needs NVIDIA's ``cuda-bindings``. Run on the device machine from the repo root:

    python -m yoco_eval.bench.l2_persist

The answer on an H100 (reports/gpu/README.md): no. Every window made the 13 layers slower, and reserving the
set-aside alone slowed the graph without a window (5.55 ms; 6.25-6.40 ms with a window; 6.40 ms with the
set-aside reserved and no window). The product does not use it. Recorded: reports/gpu/l2_persist_h100.log.
"""

from __future__ import annotations

import statistics

import torch

from yoco_eval.ops import fp8
from yoco_eval.ops import triton_kernels as tk

Tk, H, Hk, D, LAYERS = 524288, 24, 8, 128, 13


def _ok(rt, result):
    err = result[0] if isinstance(result, tuple) else result
    assert err == rt.cudaError_t.cudaSuccess, result
    return result[1] if isinstance(result, tuple) and len(result) > 1 else None


def _window(rt, kind: str, base: int, nbytes: int, hit: float):
    """An access-policy window as the attribute value a stream (``kind`` "Stream") or a graph's kernel node
    ("KernelNode") takes: the bindings check the value's class, and older ones had only the launch attribute's."""
    value = getattr(rt, f"cuda{kind}AttrValue", rt.cudaLaunchAttributeValue)()
    w = value.accessPolicyWindow
    w.base_ptr, w.num_bytes, w.hitRatio = base, nbytes, hit
    w.hitProp = rt.cudaAccessProperty.cudaAccessPropertyPersisting
    w.missProp = rt.cudaAccessProperty.cudaAccessPropertyStreaming
    value.accessPolicyWindow = w
    return value


def _time(fn, n: int = 30) -> tuple[float, float]:
    """(median ms, spread) of ``n`` calls after 5 warm-up calls, CUDA events on the current stream."""
    for _ in range(5):
        fn()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    med = statistics.median(ts)
    return med, (max(ts) - min(ts)) / med


def main() -> None:
    from cuda.bindings import runtime as rt

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(1, 1, H, D, device=dev, generator=g, dtype=torch.bfloat16)
    kq, ks = fp8.quantize(torch.randn(Tk, Hk, D, device=dev, generator=g, dtype=torch.bfloat16))
    vq, vs = fp8.quantize(torch.randn(Tk, Hk, D, device=dev, generator=g, dtype=torch.bfloat16))
    kq, vq = kq[None], fp8.token_contiguous(vq[None])
    scales = torch.stack([ks.T, vs.T])[:, None].contiguous()  # [2, B, Hk, Tk]: both scales in one buffer
    ks, vs = scales[0].transpose(1, 2), scales[1].transpose(1, 2)
    L = torch.full((1,), Tk, device=dev, dtype=torch.int32)
    W = torch.randn(30720, 3072, device=dev, dtype=torch.bfloat16)  # 189 MB: one cross-decoder layer's weights
    x = torch.randn(3072, device=dev, dtype=torch.bfloat16)

    def layers():
        for _ in range(LAYERS):
            o = tk.decode_attention_splitk(q, kq, vq, L, k_scale=ks, v_scale=vs)
            torch.mv(W, x)
        return o

    def attention_only():
        for _ in range(LAYERS):
            tk.decode_attention_splitk(q, kq, vq, L, k_scale=ks, v_scale=vs)

    stream = torch.cuda.Stream()
    handle = rt.cudaStream_t(init_value=stream.cuda_stream)
    window_id = rt.cudaLaunchAttributeID.cudaLaunchAttributeAccessPolicyWindow

    def capture(keep=None):
        with torch.cuda.stream(stream):
            layers()
            layers()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph(keep_graph=keep is not None)
        with torch.cuda.graph(graph, stream=stream):
            layers()
        if keep is not None:  # the window on every kernel node of the captured graph
            raw = rt.cudaGraph_t(init_value=graph.raw_cuda_graph())
            count = _ok(rt, rt.cudaGraphGetNodes(raw, 0)[::2])
            for node in _ok(rt, rt.cudaGraphGetNodes(raw, count)[:2]):
                if _ok(rt, rt.cudaGraphNodeGetType(node)) == rt.cudaGraphNodeType.cudaGraphNodeTypeKernel:
                    _ok(rt, rt.cudaGraphKernelNodeSetAttribute(node, window_id, _window(rt, "KernelNode", *keep)))
            graph.instantiate()
        return graph

    dev_attr = rt.cudaDeviceAttr
    set_aside = _ok(rt, rt.cudaDeviceGetAttribute(dev_attr.cudaDevAttrMaxPersistingL2CacheSize, 0))
    max_window = _ok(rt, rt.cudaDeviceGetAttribute(dev_attr.cudaDevAttrMaxAccessPolicyWindowSize, 0))
    print(f"{torch.cuda.get_device_name()}: largest set-aside {set_aside / 2**20:.1f} MiB, largest window "
          f"{max_window / 2**20:.1f} MiB")  # fmt: skip
    res = {}
    base_graph = capture()
    with torch.cuda.stream(stream):
        res["no window: attention only"] = _time(attention_only)
        res["no window: graph"] = _time(base_graph.replay)
        ref = layers().clone()
    _ok(rt, rt.cudaDeviceSetLimit(rt.cudaLimit.cudaLimitPersistingL2CacheSize, set_aside))
    span = min(max_window, kq.numel())
    regions = {"scales": (scales.data_ptr(), scales.numel() * 4, min(1.0, set_aside / (scales.numel() * 4))),
               "first keys": (kq.data_ptr(), set_aside, 1.0),
               "keys, 128 MiB": (kq.data_ptr(), span, set_aside / span)}  # fmt: skip
    for name, keep in regions.items():
        with torch.cuda.stream(stream):  # the window on the stream, captured with the graph's kernels
            _ok(rt, rt.cudaStreamSetAttribute(handle, window_id, _window(rt, "Stream", *keep)))
            res[f"{name}, stream window: attention only"] = _time(attention_only)
            graph = capture()
            res[f"{name}, stream window: graph"] = _time(graph.replay)
            assert torch.equal(layers(), ref)  # where bytes come from never changes the result
            _ok(rt, rt.cudaStreamSetAttribute(handle, window_id, _window(rt, "Stream", 0, 0, 0.0)))
            _ok(rt, rt.cudaCtxResetPersistingL2Cache())
            res["set-aside reserved, no window: graph"] = _time(base_graph.replay)
        graph = capture(keep)
        with torch.cuda.stream(stream):
            res[f"{name}, node windows: graph"] = _time(graph.replay)
        del graph
    print(f"{'':46s} {'median':>9s}  spread  a layer")
    for name, (ms, spread) in res.items():
        print(f"{name:46s} {ms:7.3f} ms  {100 * spread:4.1f}%  {1000 * ms / LAYERS:6.1f} us")


if __name__ == "__main__":
    main()
