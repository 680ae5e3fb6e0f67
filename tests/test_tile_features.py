"""Per-config tile features (tpuperf.data.tile_features): hand-computed values and the real files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tpuperf.collection import get_collection
from tpuperf.data.npz import load_graph
from tpuperf.data.opcodes import Opcode
from tpuperf.data.tile_features import (
    TILE_FEATURE_NAMES,
    element_tiles,
    file_bounds,
    physical_order,
    tile_features,
    tiled_tensors,
    with_tile_features,
)

TILE = get_collection("tile:xla")


def node(dims: list[int], layout: list[int], root: bool = False) -> np.ndarray:
    row = np.zeros(140, np.float32)
    row[0] = root
    row[21 : 21 + len(dims)] = dims
    row[27], row[28] = sum(dims), math.prod(dims)
    row[134 : 134 + len(layout)] = layout
    return row


def kernel() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A parameter [300, 64] (dim 0 minor), a smaller parameter [16], an add [4, 1000] (dim 1
    minor) and a tuple of the add and the [16] parameter (the last node): node_feat, node_opcode,
    edge_index [consumer, producer]."""
    feat = np.stack([node([300, 64], [0, 1]), node([16], [0]), node([4, 1000], [1, 0]), node([], [], root=True)])
    opcode = np.array([Opcode.PARAMETER, Opcode.PARAMETER, Opcode.ADD, Opcode.TUPLE], np.uint8)
    return feat, opcode, np.array([[2, 0], [3, 1], [3, 2]])


def config(kernel_bounds: list[float], output_bounds: list[float]) -> np.ndarray:
    """A config row with bounds as the files hold them (major to minor, 8-row / 128-lane units)."""
    row = np.zeros(24, np.float32)
    row[: len(kernel_bounds)] = kernel_bounds
    row[8 : 8 + len(output_bounds)] = output_bounds
    return row


def test_the_tiled_tensors_are_the_kernels_output_and_the_largest_parameter() -> None:
    feat, opcode, edges = kernel()
    assert tiled_tensors(feat, opcode, edges) == (2, 0)  # the tuple's largest array
    assert tiled_tensors(feat[:3], opcode[:3], edges[:1]) == (2, 0)  # an array last node is the output
    # a fusion returning the tuple (rank 0, the last node) is followed into its root tuple, as in 0a3585...
    fusion = np.concatenate([feat, node([], [], root=True)[None]])
    fused_edges = np.concatenate([edges, [[4, 3], [4, 0]]])
    assert tiled_tensors(fusion, np.append(opcode, Opcode.FUSION), fused_edges) == (2, 0)
    assert tiled_tensors(feat[3:], opcode[3:], np.zeros((0, 2))) == (None, None)  # a lone tuple: nothing to tile


@pytest.mark.parametrize(
    "dims, layout, whole",
    [
        ([1000], [0], [8]),  # rank 1: 128-lane units
        ([300, 64], [0, 1], [8, 3]),  # dim 0 minor: [64 rows, 300 lanes]
        ([2, 300, 300, 64], [2, 3, 1, 0], [2, 300, 8, 3]),  # 0a8a2b...'s output
        ([3072, 768, 1], [1, 0, 2], [1, 384, 6]),  # 0a3585...'s output
        ([2, 3, 4, 5, 16, 256], [5, 4, 3, 2, 1, 0], [2, 3, 4, 5, 2, 2]),  # rank 6, row-major
    ],
)
def test_bounds_are_physical_dims_with_the_two_minor_most_in_8_128_units(dims, layout, whole) -> None:
    dims_f = np.asarray(dims, np.float64)
    np.testing.assert_array_equal(file_bounds(dims_f[None], dims_f, layout), [whole])
    np.testing.assert_array_equal(element_tiles(np.asarray([whole]), dims_f, layout), [dims])
    np.testing.assert_array_equal(element_tiles(np.zeros((1, len(dims))), dims_f, layout), [dims])  # 0: untiled
    rng = np.random.default_rng(len(dims))
    # every tile a multiple of its unit, the whole dim, or below one unit survives the round trip
    order = physical_order(np.asarray(layout))
    units = np.ones(len(dims))
    units[-2:] = (8, 128)[-len(dims) :]
    tiles = np.empty((50, len(dims)))
    for position, logical in enumerate(order):
        d, u = dims[logical], units[position]
        choices = [d] + [k * u for k in range(1, int(d // u) + 1)] + list(range(1, int(min(u, d))))
        tiles[:, logical] = rng.choice(choices, 50)
    np.testing.assert_array_equal(element_tiles(file_bounds(tiles, dims_f, layout), dims_f, layout), tiles)


def test_hand_computed_tile_count_waste_and_lane_padding() -> None:
    feat, opcode, edges = kernel()
    configs = np.stack(
        [
            # output [4, 1000] (rows, lanes): tiles (8 -> 4, 128); kernel [64, 300] physical: tiles (8, 128)
            config([1, 1], [1, 1]),  # root: 8 tiles, 1024 / 1000 waste; kernel: 3 x 8 tiles, 384 / 300
            config([3 / 8, 100 / 128], [3 / 8, 8]),  # below one unit: 3 rows; root dim 0 of 4 in 3s: 6 / 4
            config([0, 0], [1, 16]),  # 0 = untiled; bounds above the dim are clipped to it
        ]
    )
    got = tile_features(feat, opcode, edges, configs).astype(np.float64)
    assert got.shape == (3, len(TILE_FEATURE_NAMES)) and got.dtype == np.float64
    log = math.log
    want = [
        # output [4, 1000], minor dim 1 then dim 0:  kernel [300, 64], minor dim 0 then dim 1
        [log(1 * 8), log(1024 / 1000), log(8 / 4), log(3 * 8), log(384 / 300), 0.0],
        [log(2 * 1), log(6 / 4), log(1024 / 1000) + log(8 / 3), log(3 * 22), log(66 / 64), log(128 / 100) + log(8 / 3)],
        [0.0, 0.0, log(1024 / 1000) + log(8 / 4), 0.0, 0.0, log(384 / 300)],
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    both = with_tile_features(feat, opcode, edges, configs)
    assert both.shape == (3, 30) and both.dtype == np.float32
    np.testing.assert_array_equal(both[:, :24], configs)
    np.testing.assert_array_equal(both[:, 24:], tile_features(feat, opcode, edges, configs))


def test_an_invalid_layout_falls_back_to_row_major_and_bad_configs_are_refused() -> None:
    feat, opcode, edges = kernel()
    feat[2, 134:136] = [0, 0]  # not a permutation: row-major (last dim minor), as the root's [1, 0]
    np.testing.assert_allclose(
        tile_features(feat, opcode, edges, config([], [3 / 8, 100 / 128])[None])[0, 2], math.log(128 / 100 * 8 / 3)
    )
    # garbage: a 0 inside the dims ends the rank (rank 1: 128-lane units), tiles are clipped to
    # [1, dim], negative bounds are untiled: finite, >= 0
    feat[2, 21:25] = [4, 0.5, 0, 7]
    got = tile_features(feat, opcode, edges, np.stack([config([0.2, 7], [0.005, 1]), config([-3, 1e9], [5, 0])]))
    assert np.isfinite(got).all() and (got >= 0).all()
    np.testing.assert_allclose(got[:, :2], [[math.log(4), 0.0], [0.0, 0.0]], atol=1e-7)
    with pytest.raises(ValueError, match=r"config_feat must be \(configs, 24\), got \(2, 18\)"):
        tile_features(feat, opcode, edges, np.zeros((2, 18)))


def real_tile_files(shared_data: Path) -> list[Path]:
    files = sorted(TILE.split_dir(shared_data, "train").glob("*.npz"))
    return files + sorted(TILE.split_dir(shared_data, "test").glob("*.npz"))


def test_real_tile_files_give_finite_plausible_features(shared_data: Path) -> None:
    files = real_tile_files(shared_data)
    assert len(files) == 4
    spread = {}
    for path in files:
        g = load_graph(path, TILE, "test")
        got = tile_features(g.node_feat, g.node_opcode, g.edge_index, g.config_feat)
        assert got.shape == (g.num_configs, 6) and np.isfinite(got).all() and (got >= 0).all()
        # no more tiles than elements; per dim the padded extent is below twice the dim; one tile
        # pads at most to 8 x 128 times its size
        output, kern = tiled_tensors(g.node_feat, g.node_opcode, g.edge_index)
        for tensor, cols in ((output, slice(0, 3)), (kern, slice(3, 6))):
            tiles, waste, lanes = got[:, cols].T
            volume, rank = g.node_feat[tensor, 28], np.count_nonzero(g.node_feat[tensor, 21:27] > 0)
            assert tiles.max() <= math.log(volume) + 1e-5 and waste.max() < rank * math.log(2) + 1e-6
            assert lanes.max() <= math.log(8 * 128) + 1e-6
        spread[path.stem] = got.std(0)
    # 0a35... / 0a8a...: 1,282 / 807 configs whose output bounds differ: tile count and waste vary
    assert (spread["0a3585c3e686065389227fa374175e48"][:2] > 0.01).all()
    assert (spread["0a8a2b247d7a20b9dcab1daf50066a4d"][:3] > 0.1).all()
    # d6f5...: all bounds 0 (untiled): one tile, no waste, constant lane padding
    assert (spread["d6f5f54247bd1e58a10b9e7062c636ab"] < 1e-5).all()


def test_known_limit_the_real_kernel_bounds_tile_another_tensor_than_the_largest_parameter(shared_data: Path) -> None:
    """0a3585...'s kernel bounds (maxima 4 / 128 / 6) are the physical tiled extents of a
    [4, 1024, 768] row-major tensor (the convolution's other operand), not of the largest parameter
    [4, 1024, 3072] (4 / 128 / 24) whose terms the kernel columns hold: documented in
    tpuperf.data.tile_features. If a rule that finds the right tensor lands, this test must change."""
    g = load_graph(TILE.split_dir(shared_data, "test") / "0a3585c3e686065389227fa374175e48.npz", TILE, "test")
    _, kern = tiled_tensors(g.node_feat, g.node_opcode, g.edge_index)
    dims = g.node_feat[kern, 21:24]
    maxima = g.config_feat[:, 0:3].max(0)
    assert dims.tolist() == [4, 1024, 3072] and maxima.tolist() == [4, 128, 6]
    assert file_bounds(dims[None], dims, g.node_feat[kern, 134:137])[0].tolist() == [4, 128, 24]
    other = np.array([4.0, 1024.0, 768.0])
    assert file_bounds(other[None], other, [2, 1, 0])[0].tolist() == maxima.tolist()
