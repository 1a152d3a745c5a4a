"""The fp8 cache format's layout helpers (yoco_eval.ops.fp8)."""

import torch

from yoco_eval.ops import fp8


def _random_e4m3(shape) -> torch.Tensor:
    return torch.randint(0, 120, shape, dtype=torch.uint8).view(fp8.FP8)


def test_value_rows_gathers_into_the_cache_layout_from_either_layout():
    """Rows of token-contiguous values (a cache's, 130 tokens padded to 256) and of token-major values come back
    with the same bytes, in fp8.value_zeros's layout (what the decode kernel reads)."""
    B, T, H, D = 3, 130, 2, 8
    token_major = _random_e4m3((B, T, H, D))
    cache = fp8.token_contiguous(token_major)
    assert cache.stride(3) == 256  # each (row, head, dim) run padded to 128-token lines
    rows = torch.tensor([2, 0, 2])
    want = token_major.view(torch.uint8)[rows]
    layout = fp8.value_zeros(len(rows), T, H, D, "cpu").stride()
    for src in (cache, token_major):
        got = fp8.value_rows(src, rows)
        assert got.shape == (3, T, H, D) and got.stride() == layout
        assert torch.equal(got.view(torch.uint8), want)
