"""Per-config tile features: what a tile size costs on the kernel's own tensors, computed from the
file (tile:xla only; ``preprocess.tile_features``).

A tile config (``config_feat``, 24 columns) gives tile bounds per dimension: 0-5 the kernel's,
8-13 the output's (6-7 and 14-15 their sum and product, 16-23 the input's, mostly 0). What those
bounds cost depends on the tensors they cut, whose dims and layout only the node features hold
(``node_feat`` 21-26 dims, 134-139 minor-to-major), so a model that sees the tile sizes and the
graph separately must learn a division and a ceiling per dimension. This module computes them:
per tiled tensor (output: the kernel's root, the last node flagged ``is_root`` (col 0) whose rank
is > 0; kernel: its largest parameter, the main operand the kernel streams through), three
log-scaled terms,

- ``log_tiles`` = sum over dims of log ceil(dim / t): how many tiles the kernel steps through;
- ``log_waste`` = sum over dims of log(ceil(dim / t) * t / dim): the share of the padded iteration
  space that is padding (0 when every tile divides its dim);
- ``log_lanes`` = log(ceil(t_minor / 128) * 128 / t_minor) + log(ceil(t_second / 8) * 8 / t_second):
  the padding of one tile to the TPU's (8, 128) memory tile of 32-bit values under the tensor's
  layout (XLA pads the minor-most dimension to a multiple of 128 and the second-minor to a
  multiple of 8: Cloud TPU performance guide, "Tensor dimensions" / padding,
  https://cloud.google.com/tpu/docs/performance-guide; XLA "Tiled layout",
  https://openxla.org/xla/tiled_layout),

where a bound of 0 (not tiled, as in files whose kernel bounds are all 0) means the whole dim and
other bounds are clipped to [1, dim], so every term is finite and >= 0. A tensor of rank 0 (a scalar or a tuple root with no
array operand found) gives zeros. The bounds' unit in the real files is not documented (elements
is assumed); the terms stay finite whatever it is.
"""

from __future__ import annotations

import numpy as np

from tpuperf.data.opcodes import Opcode

TILE_FEATURE_NAMES = (
    "out_log_tiles",
    "out_log_waste",
    "out_log_lanes",
    "kernel_log_tiles",
    "kernel_log_waste",
    "kernel_log_lanes",
)
# node_feat columns (TpuGraphs README): is_root, output dims 0-5, minor-to-major layout 0-5
COL_IS_ROOT, COL_DIMS, COL_LAYOUT, MAX_RANK = 0, 21, 134, 6
# config_feat columns where each tensor's 6 per-dimension bounds start
OUTPUT_BOUNDS, KERNEL_BOUNDS = 8, 0
LANES, SUBLANES = 128, 8  # the TPU's (8, 128) tile of 32-bit values


def _rank(node_feat: np.ndarray, node: int) -> int:
    """The number of leading dims >= 1 (the files pad dims beyond the rank with 0)."""
    dims = node_feat[node, COL_DIMS : COL_DIMS + MAX_RANK]
    return int(np.argmin(np.append(dims >= 1, False)))


def tiled_tensors(node_feat: np.ndarray, node_opcode: np.ndarray) -> tuple[int | None, int | None]:
    """(output node, kernel node) whose dims the output / kernel bounds cut, or None when the graph
    has no such node of rank > 0: the last ``is_root`` node of rank > 0, and the parameter with the
    largest element count (col 28; the lowest id on ties)."""
    roots = [v for v in np.flatnonzero(node_feat[:, COL_IS_ROOT] > 0) if _rank(node_feat, int(v))]
    output = int(roots[-1]) if roots else None
    params = [int(v) for v in np.flatnonzero(np.asarray(node_opcode) == Opcode.PARAMETER) if _rank(node_feat, int(v))]
    volume = node_feat[:, COL_DIMS + MAX_RANK + 1]
    kernel = max(params, key=lambda v: (volume[v], -v)) if params else None
    return output, kernel


def _tensor_terms(node_feat: np.ndarray, node: int | None, bounds: np.ndarray) -> np.ndarray:
    """(c, 3) float64 [log_tiles, log_waste, log_lanes] of tiling ``node``'s output by ``bounds``
    (c, 6) (zeros for None)."""
    out = np.zeros((len(bounds), 3))
    if node is None:
        return out
    rank = _rank(node_feat, node)
    dims = node_feat[node, COL_DIMS : COL_DIMS + rank].astype(np.float64)
    tiles = bounds[:, :rank].astype(np.float64)
    tiles = np.where(tiles <= 0, dims, np.clip(tiles, 1.0, dims))
    counts = np.ceil(dims / tiles)
    out[:, 0] = np.log(counts).sum(1)
    out[:, 1] = np.log(counts * tiles / dims).sum(1)
    layout = node_feat[node, COL_LAYOUT : COL_LAYOUT + rank].astype(np.int64)
    if sorted(layout.tolist()) != list(range(rank)):  # no valid minor-to-major order: row-major
        layout = np.arange(rank)[::-1]
    for position, width in zip(layout[:2], (LANES, SUBLANES)):
        t = tiles[:, position]
        out[:, 2] += np.log(np.ceil(t / width) * width / t)
    return out


def tile_features(node_feat: np.ndarray, node_opcode: np.ndarray, config_feat: np.ndarray) -> np.ndarray:
    """Per-config tile features of one tile file: (c, 6) float32, columns ``TILE_FEATURE_NAMES``
    (natural logs, >= 0), from ``node_feat`` (n, 140), ``node_opcode`` (n,) and ``config_feat``
    (c, 24) as stored in the file. Raises ValueError if ``config_feat`` is not (c, 24)."""
    config_feat = np.asarray(config_feat)
    if config_feat.ndim != 2 or config_feat.shape[1] != 24:
        raise ValueError(f"config_feat must be (configs, 24), got {config_feat.shape}")
    output, kernel = tiled_tensors(node_feat, node_opcode)
    parts = [
        _tensor_terms(node_feat, output, config_feat[:, OUTPUT_BOUNDS : OUTPUT_BOUNDS + MAX_RANK]),
        _tensor_terms(node_feat, kernel, config_feat[:, KERNEL_BOUNDS : KERNEL_BOUNDS + MAX_RANK]),
    ]
    return np.concatenate(parts, axis=1).astype(np.float32)


def with_tile_features(node_feat: np.ndarray, node_opcode: np.ndarray, config_feat: np.ndarray) -> np.ndarray:
    """The tile config columns the cache stores: ``config_feat`` (c, 24) then its
    :func:`tile_features` (c, 6), as float32 (c, 30). ValueError as :func:`tile_features`."""
    extra = tile_features(node_feat, node_opcode, config_feat)
    return np.concatenate([np.asarray(config_feat, np.float32), extra], axis=1)
