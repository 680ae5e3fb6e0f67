"""Per-config tile features: what a tile size costs on the kernel's own tensors, computed from the
file (tile:xla only; ``model_base.tile_features``), and the files' tile-bound convention.

A tile config (``config_feat``, 24 columns; names from the TpuGraphs featurizer,
tpu_graphs/process_data/xla/featurizers.h ``FeaturizeTileSizeConfig``) holds ``kernel_bounds``
0-5, ``output_bounds`` 8-13 and ``input_bounds`` 16-21, each followed by their sum and product
(product 0 when there are none). The dataset documents no unit or dim order for them; the real
files settle it (tests/test_synthetic_vs_real.py checks it on every real tile file):

- **the bounds follow the tensor's physical dims, major to minor** (``minor_to_major``, node_feat
  134-139, reversed), one per dim of its rank, 0 past it (all 0: not tiled);
- **the two minor-most of them count (8, 128) memory tiles**: the minor-most in 128-lane units,
  the second-minor in 8-row units, the others in elements (XLA tiles the two minor-most physical
  dims of a TPU array by (8, 128): https://openxla.org/xla/tiled_layout, Cloud TPU performance
  guide https://cloud.google.com/tpu/docs/performance-guide).

Evidence: ``0a8a2b...`` (output [2, 300, 300, 64], minor-to-major [2, 3, 1, 0]) has output-bound
maxima 2 / 300 / 8 / 3 over its 807 configs = its physical dims [2, 300, 64, 300] with 64 / 8 = 8
and ceil(300 / 128) = 3; ``0a3585...`` (a fusion whose output is a tuple of a convolution
[3072, 768, 1], minor-to-major [1, 0, 2], and a scalar) has output maxima 1 / 384 / 6 = [1, 3072,
768] with 3072 / 8 = 384 and 768 / 128 = 6, and kernel maxima 4 / 128 / 6 = [4, 1024, 768] (the
convolution's other operand, row-major). Logical order in elements fits neither file. A rank-1
tensor's one bound is taken as 128-lane units (no real file tiles one).

:func:`element_tiles` decodes bounds to element tile sizes in logical dim order,
:func:`file_bounds` encodes them (the synthetic generator writes its tiles with it). Per tiled
tensor (output: the kernel's output, :func:`tiled_tensors`; kernel: its largest parameter, the
main operand the kernel streams through, as the synthetic cost model reads it) three log-scaled
terms of the decoded tiles t over the logical dims d:

- ``log_tiles`` = sum over dims of log ceil(d / t): how many tiles the kernel steps through;
- ``log_waste`` = sum over dims of log(ceil(d / t) * t / d): the share of the padded iteration
  space that is padding (0 when every tile divides its dim);
- ``log_lanes`` = log(ceil(t_minor / 128) * 128 / t_minor) + log(ceil(t_second / 8) * 8 / t_second):
  the padding of one tile to the (8, 128) memory tile under the tensor's layout,

where a bound of 0 (not tiled) means the whole dim and decoded tiles are clipped to [1, d], so
every term is finite and >= 0 whatever the bounds hold. A tensor of rank 0 (no array output or
parameter found) gives zeros. Known limit: on ``0a3585...`` the kernel bounds fit the
convolution's operand [4, 1024, 768], not the largest parameter [4, 1024, 3072] the kernel terms
read (its bounds decode to valid tiles of it, but of another tensor); one real file is too few
to settle which tensor ``kernel_bounds`` tile in general.
"""

from __future__ import annotations

import numpy as np

from tpuperf.data.npz import COL_DIM_PROD, COL_DIMS, COL_IS_ROOT, COL_LAYOUT, MAX_RANK, TILE_CONFIG_DIM
from tpuperf.data.opcodes import Opcode

TILE_FEATURE_NAMES = (
    "out_log_tiles",
    "out_log_waste",
    "out_log_lanes",
    "kernel_log_tiles",
    "kernel_log_waste",
    "kernel_log_lanes",
)
# config_feat columns where each tensor's 6 per-dimension bounds start
OUTPUT_BOUNDS, KERNEL_BOUNDS = 8, 0
LANES, SUBLANES = 128, 8  # the TPU's (8, 128) tile of 32-bit values


def _rank(node_feat: np.ndarray, node: int) -> int:
    """The number of leading dims >= 1 (the files pad dims beyond the rank with 0)."""
    dims = node_feat[node, COL_DIMS : COL_DIMS + MAX_RANK]
    return int(np.argmin(np.append(dims >= 1, False)))


def _output_node(node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray) -> int | None:
    """The kernel's output: its last node (the fusion, or the root of a one-computation kernel)
    if it is an array; if it is a tuple, followed into the fused computation's root (the operand
    flagged ``is_root``) and, at a TUPLE node, its largest array operand (col 28; lowest id on
    ties). None when that path ends without an array."""
    node, rank = len(node_feat) - 1, lambda v: _rank(node_feat, v)
    for _ in range(len(node_feat)):
        if rank(node):
            return node
        operands = [int(v) for v in edge_index[edge_index[:, 0] == node, 1]]
        arrays = [v for v in operands if rank(v)]
        if node_opcode[node] == Opcode.TUPLE and arrays:
            return max(arrays, key=lambda v: (node_feat[v, COL_DIM_PROD], -v))
        inner = [v for v in operands if node_feat[v, COL_IS_ROOT] > 0 or node_opcode[v] == Opcode.TUPLE]
        if not inner:
            return None
        node = max(inner)
    return None


def tiled_tensors(
    node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray
) -> tuple[int | None, int | None]:
    """(output node, kernel node) whose dims the output / kernel bounds cut, or None when the graph
    has no such node of rank > 0: the kernel's output (followed into a tuple as
    :func:`_output_node` says), and the parameter with the largest element count (col 28; the
    lowest id on ties). ``edge_index`` (m, 2): rows [consumer, producer], any order."""
    node_opcode, edge_index = np.asarray(node_opcode), np.asarray(edge_index).reshape(-1, 2)
    output = _output_node(node_feat, node_opcode, edge_index)
    params = [int(v) for v in np.flatnonzero(node_opcode == Opcode.PARAMETER) if _rank(node_feat, int(v))]
    volume = node_feat[:, COL_DIM_PROD]
    kernel = max(params, key=lambda v: (volume[v], -v)) if params else None
    return output, kernel


def physical_order(minor_to_major: np.ndarray) -> np.ndarray:
    """(rank,) int64 logical dim indices, major to minor: ``minor_to_major`` reversed, or
    row-major (the last dim minor) when it is not a permutation of 0..rank-1."""
    layout = np.asarray(minor_to_major, np.int64)
    if sorted(layout.tolist()) != list(range(len(layout))):
        return np.arange(len(layout))
    return layout[::-1].copy()


def _units(rank: int) -> np.ndarray:
    """(rank,) elements per bound unit, major to minor: 1, ..., 8 rows, 128 lanes (rank 1: 128)."""
    units = np.ones(rank)
    units[-2:] = (SUBLANES, LANES)[-rank:] if rank else ()
    return units


def element_tiles(bounds: np.ndarray, dims: np.ndarray, minor_to_major: np.ndarray) -> np.ndarray:
    """Tile sizes in elements, (c, rank) float64 in logical dim order, of the file's ``bounds``
    (c, rank; major to minor, the two minor-most in 8-row / 128-lane units) of a tensor of
    logical ``dims`` (rank,) laid out by ``minor_to_major`` (rank,). A bound <= 0 (not tiled)
    is the whole dim; others are clipped to [1, dim]."""
    dims = np.asarray(dims, np.float64)
    order = physical_order(minor_to_major)
    extent = dims[order]
    scaled = np.asarray(bounds, np.float64) * _units(len(dims))
    physical = np.where(scaled <= 0, extent, np.clip(scaled, 1.0, extent))
    tiles = np.empty_like(physical)
    tiles[:, order] = physical
    return tiles


def file_bounds(tiles: np.ndarray, dims: np.ndarray, minor_to_major: np.ndarray) -> np.ndarray:
    """The inverse of :func:`element_tiles` for tiles (c, rank) in elements, logical order, each
    in [1, dim]: (c, rank) float64 bounds major to minor, a tile of the two minor-most dims as
    ceil(tile / unit) units, or as the fraction tile / unit when smaller than both its unit and
    its dim (the real files hold whole units only; the synthetic generator also tries tiles
    below one (8, 128) tile). Exact for tiles that are a multiple of their unit, the whole dim,
    or below one unit: ``element_tiles(file_bounds(t)) == t``."""
    dims = np.asarray(dims, np.float64)
    order = physical_order(minor_to_major)
    units = _units(len(dims))
    physical = np.asarray(tiles, np.float64)[:, order]
    below = (physical < units) & (physical < dims[order])
    return np.where(below, physical / units, np.ceil(physical / units))


def tile_padding(
    dims: np.ndarray, tiles: np.ndarray, minor_to_major: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per config, of element ``tiles`` (c, rank; logical order, >= 1 after a floor at 1) of a
    tensor of ``dims`` (rank,) laid out by ``minor_to_major``: (tile count, padding waste of the
    tiled tensor prod(ceil(d / t) * t / d), (8, 128) padding of one tile under the layout), each
    (c,) float64 >= 1."""
    tiles = np.maximum(tiles, 1.0)
    counts = np.ceil(dims / tiles)
    waste = np.prod(counts * tiles / dims, axis=1)
    lane = np.ones(len(tiles))
    for position, width in zip(physical_order(minor_to_major)[::-1][:2], (LANES, SUBLANES)):
        t = tiles[:, position]
        lane *= np.ceil(t / width) * width / t
    return np.prod(counts, axis=1), waste, lane


def _tensor_terms(node_feat: np.ndarray, node: int | None, bounds: np.ndarray) -> np.ndarray:
    """(c, 3) float64 [log_tiles, log_waste, log_lanes] of tiling ``node``'s output by the file's
    ``bounds`` (c, 6) (zeros for None)."""
    if node is None:
        return np.zeros((len(bounds), 3))
    rank = _rank(node_feat, node)
    dims = node_feat[node, COL_DIMS : COL_DIMS + rank].astype(np.float64)
    layout = node_feat[node, COL_LAYOUT : COL_LAYOUT + rank]
    return np.log(np.stack(tile_padding(dims, element_tiles(bounds[:, :rank], dims, layout), layout), axis=1))


def tile_features(
    node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray, config_feat: np.ndarray
) -> np.ndarray:
    """Per-config tile features of one tile file: (c, 6) float32, columns ``TILE_FEATURE_NAMES``
    (natural logs, >= 0), from ``node_feat`` (n, 140), ``node_opcode`` (n,), ``edge_index`` (m, 2)
    and ``config_feat`` (c, 24) as stored in the file. Raises ValueError if ``config_feat`` is not
    (c, 24)."""
    config_feat = np.asarray(config_feat)
    if config_feat.ndim != 2 or config_feat.shape[1] != TILE_CONFIG_DIM:
        raise ValueError(f"config_feat must be (configs, {TILE_CONFIG_DIM}), got {config_feat.shape}")
    output, kernel = tiled_tensors(node_feat, node_opcode, edge_index)
    parts = [
        _tensor_terms(node_feat, output, config_feat[:, OUTPUT_BOUNDS : OUTPUT_BOUNDS + MAX_RANK]),
        _tensor_terms(node_feat, kernel, config_feat[:, KERNEL_BOUNDS : KERNEL_BOUNDS + MAX_RANK]),
    ]
    return np.concatenate(parts, axis=1).astype(np.float32)


def with_tile_features(
    node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray, config_feat: np.ndarray
) -> np.ndarray:
    """The tile config columns the cache stores: ``config_feat`` (c, 24) then its
    :func:`tile_features` (c, 6), as float32 (c, 30). ValueError as :func:`tile_features`."""
    extra = tile_features(node_feat, node_opcode, edge_index, config_feat)
    return np.concatenate([np.asarray(config_feat, np.float32), extra], axis=1)
