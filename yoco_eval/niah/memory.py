"""What a needle cell costs in memory: the CUDA and resident-set peaks of one call, and the K/V cache bytes per
token of context of a model (yoco_eval's own models by their cache, HF models by their config).

Telemetry only: every function returns None (or False) where it cannot measure, and never raises.
"""

from __future__ import annotations


def _cuda_peak_reset() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    except Exception:  # noqa: BLE001 - telemetry only
        pass


def _cuda_peak() -> int | None:
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
    except Exception:  # noqa: BLE001
        pass
    return None


def rss_peak_reset() -> bool:
    """Reset this process's resident-set high-water mark (Linux ``VmHWM``, via ``/proc/self/clear_refs``).
    Returns False where that is not possible (not Linux, no permission): then :func:`rss_peak` is not per call."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak() -> int | None:
    """This process's resident-set high-water mark in bytes since the last :func:`rss_peak_reset` (Linux
    ``VmHWM``); None where ``/proc`` is not available. It counts everything resident: weights, haystack, Python."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cache_bytes_per_token(model) -> int | None:
    """K/V cache bytes one more token of context costs a yoco_eval model (YOCO: its one shared K/V cache;
    Transformer: every layer's; Phi-4-flash: its attention layers'), from ``model.setup_cache`` on the meta device
    (nothing is allocated). Constant-size state (retention, sliding windows, Mamba) does not grow with the length
    and is not counted. None when the model has no such cache."""
    try:
        import torch

        dtype = next(model.parameters()).dtype
        a, b = 1 << 16, 1 << 17  # both past any sliding window, so only per-token storage differs
        na = model.setup_cache(1, a, device="meta", dtype=dtype).nbytes()
        nb = model.setup_cache(1, b, device="meta", dtype=dtype).nbytes()
        per = (nb - na) // (b - a)
        return int(per) if per > 0 and isinstance(dtype, torch.dtype) else None
    except Exception:  # noqa: BLE001 - telemetry only
        return None


def hf_kv_bytes_per_token(config, dtype=None) -> int | None:
    """K/V bytes per token of a HF decoder from its config: layers × 2 (K and V) × KV heads × head dim × element
    size (of ``dtype``, default the config's ``torch_dtype``, else 4). None when the config lacks a field, or for
    models whose cache is not one K/V per layer (sliding-window or hybrid layers)."""
    try:
        import torch

        layers, heads, hidden = config.num_hidden_layers, config.num_attention_heads, config.hidden_size
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
            return None
        if len(set(getattr(config, "layer_types", None) or ["full_attention"])) > 1:
            return None
        dt = dtype or getattr(config, "torch_dtype", None)
        if isinstance(dt, str):
            dt = getattr(torch, dt, None)
        size = torch.empty(0, dtype=dt).element_size() if isinstance(dt, torch.dtype) else 4
        return int(layers) * 2 * int(kv_heads) * int(head_dim) * size
    except Exception:  # noqa: BLE001 - an unknown config shape: not known
        return None
