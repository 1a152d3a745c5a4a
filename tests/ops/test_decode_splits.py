"""How many key-range splits a decode launch makes (triton_kernels._default_splits), on a stand-in H100 (132
multiprocessors): fp8 rows over 256-key tiles (one program per multiprocessor) fill exactly one wave; everything
else keeps about 4 programs per multiprocessor (8 for an fp8 batch); no split gets fewer than 4 tiles."""

from __future__ import annotations

import pytest

from yoco_eval.ops import triton_kernels as tk

SMS = 132


@pytest.fixture(autouse=True)
def h100(monkeypatch):
    monkeypatch.setattr(tk, "_sm_count", lambda: SMS)


@pytest.mark.parametrize("rows", [1, 2, 8, 16, 24, 31])
def test_fp8_256_key_tiles_make_one_wave(rows):
    S = tk._default_splits(rows, 524288, 256, quant=True)
    assert S * rows <= SMS < (S + 1) * rows  # one wave, as full as whole rows make it


def test_default_split_counts_on_an_h100():
    assert tk._default_splits(8, 524288, 256, quant=True) == 16  # the fp8 cache, one row: one wave
    assert tk._default_splits(8, 524288, 32, quant=False) == 66  # bf16, one row of 8 key/value heads
    assert tk._default_splits(8, 524288, 128, quant=True) == 66  # fp8 over token-major values (128-key tiles)
    assert tk._default_splits(64, 524288, 256, quant=True) == 17  # an fp8 batch: about 8 a multiprocessor
    assert tk._default_splits(64, 524288, 128, quant=False) == 9


@pytest.mark.parametrize("quant,block_n", [(True, 256), (False, 32)])
def test_short_contexts_keep_four_tiles_a_split(quant, block_n):
    for keys in (1, 300, 4 * block_n, 4 * block_n + 1, 20_000):
        S = tk._default_splits(8, keys, block_n, quant)
        assert 1 <= S <= max(1, -(-keys // (4 * block_n)))
