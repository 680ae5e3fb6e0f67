"""Per-config tile features (tpuperf.data.tile_features): hand-computed values and the real files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tpuperf.collection import get_collection
from tpuperf.data.npz import load_graph
from tpuperf.data.opcodes import Opcode
from tpuperf.data.tile_features import TILE_FEATURE_NAMES, tile_features, tiled_tensors, with_tile_features

TILE = get_collection("tile:xla")


def node(dims: list[int], layout: list[int], root: bool = False) -> np.ndarray:
    row = np.zeros(140, np.float32)
    row[0] = root
    row[21 : 21 + len(dims)] = dims
    row[27], row[28] = sum(dims), math.prod(dims)
    row[134 : 134 + len(layout)] = layout
    return row


def kernel() -> tuple[np.ndarray, np.ndarray]:
    """A parameter [300, 64] (dim 0 minor), a smaller parameter [16], and a root [4, 1000]
    (dim 1 minor) followed by a rank-0 root (a tuple), which the output must skip."""
    feat = np.stack(
        [node([300, 64], [0, 1]), node([16], [0]), node([4, 1000], [1, 0], root=True), node([], [], root=True)]
    )
    opcode = np.array([Opcode.PARAMETER, Opcode.PARAMETER, Opcode.ADD, Opcode.TUPLE], np.uint8)
    return feat, opcode


def config(kernel_bounds: list[int], output_bounds: list[int]) -> np.ndarray:
    row = np.zeros(24, np.float32)
    row[: len(kernel_bounds)] = kernel_bounds
    row[8 : 8 + len(output_bounds)] = output_bounds
    return row


def test_the_tiled_tensors_are_the_last_array_root_and_the_largest_parameter() -> None:
    feat, opcode = kernel()
    assert tiled_tensors(feat, opcode) == (2, 0)
    assert tiled_tensors(feat[3:], opcode[3:]) == (None, None)  # a lone tuple: nothing to tile


def test_hand_computed_tile_count_waste_and_lane_padding() -> None:
    feat, opcode = kernel()
    configs = np.stack(
        [
            config([128, 8], [4, 128]),  # root: 8 tiles, 1024 / 1000 waste; kernel: 3 x 8 tiles, 384 / 300
            config([100, 3], [3, 1000]),  # root dim 0 of 4 in tiles of 3: 2 tiles, 6 / 4 waste
            config([0, 0], [8, 2000]),  # 0 = untiled; bounds above the dim are clipped to it
        ]
    )
    got = tile_features(feat, opcode, configs).astype(np.float64)
    assert got.shape == (3, len(TILE_FEATURE_NAMES)) and got.dtype == np.float64
    log = math.log
    want = [
        # output [4, 1000], minor dim 1 then dim 0:  kernel [300, 64], minor dim 0 then dim 1
        [log(1 * 8), log(1024 / 1000), log(8 / 4), log(3 * 8), log(384 / 300), 0.0],
        [log(2 * 1), log(6 / 4), log(1024 / 1000) + log(8 / 3), log(3 * 22), log(66 / 64), log(128 / 100) + log(8 / 3)],
        [0.0, 0.0, log(1024 / 1000) + log(8 / 4), 0.0, 0.0, log(384 / 300)],
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    both = with_tile_features(feat, opcode, configs)
    assert both.shape == (3, 30) and both.dtype == np.float32
    np.testing.assert_array_equal(both[:, :24], configs)
    np.testing.assert_array_equal(both[:, 24:], tile_features(feat, opcode, configs))


def test_an_invalid_layout_falls_back_to_row_major_and_bad_configs_are_refused() -> None:
    feat, opcode = kernel()
    feat[2, 134:136] = [0, 0]  # not a permutation: row-major (last dim minor), as the root's [1, 0]
    np.testing.assert_allclose(
        tile_features(feat, opcode, config([], [3, 100])[None])[0, 2], math.log(128 / 100 * 8 / 3)
    )
    # garbage: a 0 inside the dims ends the rank, fractional bounds are clipped to >= 1: finite, >= 0
    feat[2, 21:25] = [4, 0.5, 0, 7]
    got = tile_features(feat, opcode, np.stack([config([0.2, 7], [0.3, 1]), config([-3, 1e9], [5, 0])]))
    assert np.isfinite(got).all() and (got >= 0).all()
    np.testing.assert_allclose(got[:, :2], [[math.log(4), 0.0], [0.0, 0.0]], atol=1e-7)
    with pytest.raises(ValueError, match=r"config_feat must be \(configs, 24\), got \(2, 18\)"):
        tile_features(feat, opcode, np.zeros((2, 18)))


def test_real_tile_files_give_finite_plausible_features(shared_data: Path) -> None:
    files = sorted(TILE.split_dir(shared_data, "train").glob("*.npz")) + sorted(
        TILE.split_dir(shared_data, "test").glob("*.npz")
    )
    assert len(files) == 4
    spread = {}
    for path in files:
        g = load_graph(path, TILE, "test")
        got = tile_features(g.node_feat, g.node_opcode, g.config_feat)
        assert got.shape == (g.num_configs, 6) and np.isfinite(got).all() and (got >= 0).all()
        # no more tiles than elements; per dim the padded extent is below twice the dim; one tile
        # pads at most to 8 x 128 times its size
        output, kern = tiled_tensors(g.node_feat, g.node_opcode)
        for tensor, cols in ((output, slice(0, 3)), (kern, slice(3, 6))):
            tiles, waste, lanes = got[:, cols].T
            volume, rank = g.node_feat[tensor, 28], np.count_nonzero(g.node_feat[tensor, 21:27] > 0)
            assert tiles.max() <= math.log(volume) + 1e-5 and waste.max() < rank * math.log(2) + 1e-6
            assert lanes.max() <= math.log(8 * 128) + 1e-6
        spread[path.stem] = got.std(0)
    # 0a35...: 1,282 configs of output (and kernel) bounds that differ: every output term varies
    assert (spread["0a3585c3e686065389227fa374175e48"][:3] > 0.02).all()
    # d6f5...: all bounds 0 (untiled): one tile, no waste, constant lane padding
    assert (spread["d6f5f54247bd1e58a10b9e7062c636ab"] < 1e-5).all()
