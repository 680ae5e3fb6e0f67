"""Preprocessing stage: downloaded ``.npz`` files -> the per-collection cache of :mod:`tpuperf.data.cache`.

Two passes over one collection, each file processed in a joblib worker:

1. Read and validate every file (all splits), prune it, drop duplicate train configs, write
   its arrays (node features still raw) into a temp dir next to the cache, and return the
   per-column moments of its node features (and tile config features) when it is a TRAIN
   graph. A big layout file's ``node_config_feat`` is streamed chunk by chunk into an int8
   ``.npy`` (deduped on the way), so memory stays bounded by the chunk size whatever the
   file's size; training then memory-maps that file.
2. Merge the train moments into the transform (``stats.json``) and rewrite every graph's
   feature arrays transformed. Only train moments ever reach the transform: valid/test data
   cannot leak into it. Pass 1 writes every split at once so that each file (up to GBs
   compressed) is decompressed once for writing, not once for the stats and again for writing.

Bad files are decided here, in one place, by ``preprocess.on_bad_file``: those the download stage
listed as invalid in the dataset's manifest (:func:`tpuperf.collection.invalid_files`; checked before any
file is read) and those pass 1 rejects itself. ``fail`` stops naming them; ``skip`` leaves them out and
lists them under ``skipped`` in the cache's ``report.json`` (a skipped test file leaves its submission
rows missing, which the ensemble's submission check then names).

Choices, and why:

- Dedup keeps, among identical configurations of a TRAIN graph, the MINIMUM runtime and the
  first occurrence's config id. Timing noise on a TPU is mostly additive slowdowns
  (interference, clock changes), so the fastest measurement is the best estimate of the
  config's true runtime. Valid and test keep every config: metrics and submissions need
  every original index.
- Pruning (layout, ``preprocess.prune``) keeps, with the induced edges in the original
  (topological) order, either (``khop``) the configurable nodes plus their k-hop neighbourhood
  on the undirected graph, or (``chains``) the configurable nodes, the elementwise chains
  their layouts flow through, the ops that read those chains and the operands the chains
  are compared against (:func:`chain_nodes`). Statistics are fitted on the pruned nodes: the
  nodes the model actually sees.
- Config edges (layout) are computed on the full graph before pruning, so a chain through
  pruned nodes still links its configurable ends (:func:`config_edges`).
- Tile configs get per-config tile features (tile count, padding waste, (8, 128) padding of the
  output and kernel tensors, :mod:`tpuperf.data.tile_features`) computed from the raw file
  before the transform, as 6 more ``config_feat`` columns; models read them with
  ``tile_features``.
- A column of (near-)zero spread on train (std < ``std_floor``) is centred but not scaled, so
  a value that differs in valid/test stays in raw units instead of exploding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from joblib import Parallel, delayed
from scipy import sparse
from tqdm import tqdm

from tpuperf.atomic import replaced_dir
from tpuperf.collection import DATASET_MANIFEST, SPLITS, Collection, data_source, invalid_files
from tpuperf.config import PRUNE_MODES, Config, PreprocessConfig
from tpuperf.data import cache
from tpuperf.data.npz import (
    COL_DIMS,
    COL_ELEMENT_TYPE,
    COL_LAYOUT,
    ELEMENT_BYTES,
    LAYOUT_CONFIG_DIM,
    MAX_RANK,
    DataFormatError,
    LayoutGraph,
    TileGraph,
    iter_chunks,
    layout_codes,
    load_graph,
    read_header,
)
from tpuperf.data.opcodes import is_layout_propagating
from tpuperf.data.tile_features import with_tile_features
from tpuperf.errors import TpuperfError, listing

log = logging.getLogger(__name__)


class PreprocessError(TpuperfError, RuntimeError):
    """The collection cannot be preprocessed as a whole (no train data, every file bad, ...)."""


# ---------------------------------------------------------------- pruning


def k_hop_nodes(edge_index: np.ndarray, num_nodes: int, seeds: np.ndarray, hops: int) -> np.ndarray:
    """Sorted ids of ``seeds`` plus every node within ``hops`` undirected edges; all nodes when hops = 0."""
    if hops == 0:
        return np.arange(num_nodes, dtype=np.int64)
    u, v = edge_index[:, 0], edge_index[:, 1]
    mask = np.zeros(num_nodes, dtype=bool)
    mask[seeds] = True
    for _ in range(hops):
        reached = mask.copy()
        reached[u[mask[v]]] = True
        reached[v[mask[u]]] = True
        if np.array_equal(reached, mask):
            break
        mask = reached
    return np.flatnonzero(mask)


def layout_chains(edge_index: np.ndarray, node_opcode: np.ndarray, num_nodes: int, seeds: np.ndarray) -> np.ndarray:
    """bool (n,): ``seeds`` and, transitively, every layout-propagating consumer of a marked node.

    ``edge_index`` int (m, 2) rows ``[u, v]`` (u consumes v); ``node_opcode`` int (n,) TpuGraphs
    ids; ``seeds`` the configurable nodes. Propagating ops are the elementwise ops a layout flows
    through (:data:`~tpuperf.data.opcodes.LAYOUT_PROPAGATING`), so the marked nodes are those
    whose output layout a config can change.
    """
    u, v = edge_index[:, 0], edge_index[:, 1]
    propagating = is_layout_propagating(node_opcode)
    chain = np.zeros(num_nodes, dtype=bool)
    chain[seeds] = True
    while True:
        grown = chain.copy()
        grown[u[chain[v] & propagating[u]]] = True
        if np.array_equal(grown, chain):
            return chain
        chain = grown


def chain_nodes(
    edge_index: np.ndarray, node_opcode: np.ndarray, num_nodes: int, seeds: np.ndarray, hops: int
) -> np.ndarray:
    """Sorted ids (int64) of the nodes whose cost a layout choice at ``seeds`` can change, plus context.

    Kept: the chains (:func:`layout_chains`); every consumer of a chain node (the op that reads
    the propagated layout: reduce, transpose, copy, dot, the root tuple, ...); every operand of
    a chain node (what a chain op's layout is compared against: a configurable node's input
    and kernel, a binary op's other operand); then the ``hops``-hop undirected neighbourhood of
    all that (0 = none). Arguments as in :func:`layout_chains`.
    """
    u, v = edge_index[:, 0], edge_index[:, 1]
    chain = layout_chains(edge_index, node_opcode, num_nodes, seeds)
    kept = chain.copy()
    kept[u[chain[v]]] = True
    kept[v[chain[u]]] = True
    return k_hop_nodes(edge_index, num_nodes, np.flatnonzero(kept), hops) if hops else np.flatnonzero(kept)


def config_edges(edge_index: np.ndarray, num_nodes: int, config_ids: np.ndarray, max_length: int) -> np.ndarray:
    """The config edges of a layout graph: int32 (e, 2), rows ``[i, j]`` (positions in
    ``config_ids``) when configurable node ``config_ids[i]`` consumes, along a path of at most
    ``max_length`` edges whose interior nodes are all non-configurable, the output of
    configurable node ``config_ids[j]``: the chains through which a layout choice propagates.

    ``edge_index`` int (m, 2) rows ``[u, v]`` = u consumes v (the npz convention), over
    ``num_nodes`` nodes. Sparse breadth-first search from every configurable node at once
    (scipy.sparse): memory is bounded by (configurable nodes x nodes reached within
    ``max_length`` hops). Rows are unique and sorted; ValueError when ``max_length`` < 1.
    """
    if max_length < 1:
        raise ValueError(f"config edge path length must be >= 1, got {max_length}")
    m = len(config_ids)
    if m == 0 or len(edge_index) == 0:
        return np.zeros((0, 2), np.int32)
    position = np.full(num_nodes, -1, dtype=np.int64)
    position[config_ids] = np.arange(m)
    ones = np.ones(len(edge_index), np.float32)
    flow = sparse.csr_matrix((ones, (edge_index[:, 1], edge_index[:, 0])), shape=(num_nodes, num_nodes))
    interior = sparse.diags((position < 0).astype(np.float32))  # zeroes configurable columns: paths stop there
    frontier = sparse.csr_matrix((np.ones(m, np.float32), (np.arange(m), config_ids)), shape=(m, num_nodes))
    found = []
    for _ in range(max_length):
        frontier = frontier @ flow  # row i: nodes reached from config node i one edge further
        frontier.data[:] = 1.0  # reached or not: path counts would overflow on wide graphs
        reached = frontier.tocoo()
        hit = position[reached.col] >= 0
        found.append(np.stack([position[reached.col[hit]], reached.row[hit]], axis=1))
        frontier = frontier @ interior
        frontier.eliminate_zeros()
        if frontier.nnz == 0:
            break
    return np.unique(np.concatenate(found), axis=0).astype(np.int32).reshape(-1, 2)


def induced_edges(edge_index: np.ndarray, kept: np.ndarray, num_nodes: int) -> np.ndarray:
    """Edges with both ends in ``kept`` (sorted ids), renumbered to positions in ``kept``."""
    new_id = np.full(num_nodes, -1, dtype=np.int64)
    new_id[kept] = np.arange(len(kept))
    edges = new_id[edge_index]
    return edges[(edges >= 0).all(axis=1)].astype(np.int32)


# ---------------------------------------------------------------- layout tensors


def layout_tensors(graph: LayoutGraph) -> np.ndarray:
    """The tensors each configurable node's three layout slot groups lay out, in raw units:
    int32 (nc, 3, cache.TENSOR_WIDTH), groups output (the node), input (its operand of lowest node
    id) and kernel (the next one; rows of zeros with layout -1 where the node has fewer operands),
    columns ``cache.TENSOR_DIMS`` dims 0-5 (0 past the rank), ``cache.TENSOR_LAYOUT`` the tensor's
    own minor-to-major order from the file (-1 past the rank) and ``cache.TENSOR_BYTES`` bytes per
    element (:data:`tpuperf.data.npz.ELEMENT_BYTES`; 0 for tuples and tokens). Operands are taken in node-id order,
    as ``config_operands`` does (tpuperf.models.layers.ConfigEncoder): files hold no operand order.
    Read from the unpruned graph. The rank is the number of leading non-zero dims.
    """
    feat, ids = graph.node_feat, np.asarray(graph.node_config_ids, dtype=np.int64)
    edges = np.asarray(graph.edge_index, dtype=np.int64)  # row [consumer, producer]
    edges = edges[np.lexsort((edges[:, 1], edges[:, 0]))]
    start = np.searchsorted(edges[:, 0], ids)
    count = np.searchsorted(edges[:, 0], ids, side="right") - start
    tensors = np.zeros((len(ids), 3, cache.TENSOR_WIDTH), np.int32)
    tensors[:, :, cache.TENSOR_LAYOUT : cache.TENSOR_LAYOUT + MAX_RANK] = -1
    for group in range(3):
        present = np.ones(len(ids), bool) if group == 0 else count >= group
        rows = feat[ids if group == 0 else edges[start[present] + group - 1, 1]]
        dims = np.rint(rows[:, COL_DIMS : COL_DIMS + MAX_RANK]).astype(np.int64)
        rank = np.cumprod(dims > 0, axis=1).sum(axis=1)
        past_rank = np.arange(MAX_RANK) >= rank[:, None]
        layout = np.where(past_rank, -1, np.rint(rows[:, COL_LAYOUT : COL_LAYOUT + MAX_RANK]))
        one_hot = rows[:, COL_ELEMENT_TYPE : COL_ELEMENT_TYPE + len(ELEMENT_BYTES)]
        item = np.where(one_hot.any(axis=1), ELEMENT_BYTES[one_hot.argmax(axis=1)], 0)
        out = tensors[present, group]
        out[:, cache.TENSOR_DIMS : cache.TENSOR_DIMS + MAX_RANK] = np.where(past_rank, 0, dims)
        out[:, cache.TENSOR_LAYOUT : cache.TENSOR_LAYOUT + MAX_RANK] = layout
        out[:, cache.TENSOR_BYTES] = item
        tensors[present, group] = out
    return tensors


# ---------------------------------------------------------------- dedup


class ConfigDeduper:
    """Drops configurations whose feature row repeats an earlier one, across streamed chunks.

    Rows are keyed by a 128-bit BLAKE2 digest of their bytes (a collision is ~1e-29 likely for
    a million rows), so memory grows with the number of distinct configs, not their size. A
    repeat lowers the kept runtime to the minimum (see the module docstring for why).
    """

    def __init__(self, runtime: np.ndarray):
        self._runtime_in = runtime
        self._seen: dict[bytes, int] = {}
        self.config_ids: list[int] = []
        self.runtime: list[float] = []

    def add(self, rows: np.ndarray, start: int) -> np.ndarray:
        """Positions (in ``rows``) of rows not seen before; ``start`` is the first row's config id."""
        rows = np.ascontiguousarray(rows.reshape(len(rows), -1))
        new = []
        for i, row in enumerate(rows):
            key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
            config_id = start + i
            pos = self._seen.get(key)
            if pos is None:
                self._seen[key] = len(self.config_ids)
                self.config_ids.append(config_id)
                self.runtime.append(self._runtime_in[config_id])
                new.append(i)
            else:
                self.runtime[pos] = min(self.runtime[pos], self._runtime_in[config_id])
        return np.asarray(new, dtype=np.int64)


def first_identical(rows: np.ndarray) -> np.ndarray:
    """int64 (c,): for each row of ``rows`` (c, ...), the index of the first row equal to it (its own when none
    before it): a tile cache's ``config_first`` from the file's raw ``config_feat``."""
    _, first, inverse = np.unique(rows.reshape(len(rows), -1), axis=0, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)].astype(np.int64)


def _shrink_npy(path: Path, rows: int) -> None:
    """Cut a C-order .npy to its first ``rows`` rows in place.

    numpy pads every header with room for the first axis to grow to any size, so the header
    rewritten with a smaller shape has the same length and the data need not move.
    """
    fmt = np.lib.format
    with open(path, "r+b") as fh:
        version = fmt.read_magic(fh)
        shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(fh)
        offset = fh.tell()
        header = {"descr": fmt.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (rows, *shape[1:])}
        fh.seek(0)
        (fmt.write_array_header_1_0 if version == (1, 0) else fmt.write_array_header_2_0)(fh, header)
        if fh.tell() != offset:
            raise RuntimeError(f"{path}: .npy header changed length when shrunk ({offset} -> {fh.tell()})")
        fh.truncate(offset + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def _write_layout_configs(
    path: Path, out: Path, runtime: np.ndarray, dedup: bool, chunk_bytes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stream ``node_config_feat`` into ``out`` (int8 .npy), dropping repeats when ``dedup``.

    Chunks are appended with plain buffered writes rather than through a memory map: a map's
    written pages count in the process's RSS until it is closed (1 GB for a 60k x 1000-node
    graph), while written file data leaves RSS at about the chunk size. The header is
    written for all ``c`` configs and shrunk to the number kept at the end.
    Returns (config_ids, runtime) of the configs written, in file order, and the BLAKE2b-128
    digest of the written int8 rows (uint8 (16,), for the graph's content hash).
    """
    c, nc, _ = read_header(path)["node_config_feat"].shape
    deduper = ConfigDeduper(runtime) if dedup else None
    digest = hashlib.blake2b(digest_size=16)
    written = start = 0
    with open(out, "wb") as fh:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.int8)),
            "fortran_order": False,
            "shape": (c, nc, LAYOUT_CONFIG_DIM),
        }
        np.lib.format.write_array_header_1_0(fh, header)
        for chunk in iter_chunks(path, "node_config_feat", chunk_bytes):
            codes = layout_codes(path, chunk)
            if deduper is not None:
                codes = codes[deduper.add(codes, start)]
            data = codes.tobytes()
            fh.write(data)
            digest.update(data)
            written += len(codes)
            start += len(chunk)
    if written < c:
        _shrink_npy(out, written)
    rows = np.frombuffer(digest.digest(), dtype=np.uint8)
    if deduper is None:
        return np.arange(c, dtype=np.int64), runtime.astype(np.float64), rows
    return np.asarray(deduper.config_ids, dtype=np.int64), np.asarray(deduper.runtime, dtype=np.float64), rows


# ---------------------------------------------------------------- statistics and transform


def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def column_moments(x: np.ndarray) -> pl.DataFrame:
    """Per-column count, min, max, mean and M2 (sum of squared deviations) of ``x`` (rows = samples),
    for the raw values and for their signed log1p; mergeable across files with :func:`merge_moments`."""
    raw = pl.from_numpy(np.asarray(x, dtype=np.float64))
    logged = raw.select(pl.all().sign() * pl.all().abs().log1p())
    n = len(raw)

    def agg(frame: pl.DataFrame, expr: pl.Expr) -> np.ndarray:
        return frame.select(expr).to_numpy()[0]

    return pl.DataFrame(
        {
            "column": np.arange(x.shape[1]),
            "count": np.full(x.shape[1], n, dtype=np.int64),
            "min": agg(raw, pl.all().min()),
            "max": agg(raw, pl.all().max()),
            "mean": agg(raw, pl.all().mean()),
            "m2": agg(raw, pl.all().var(ddof=0)) * n,
            "log_mean": agg(logged, pl.all().mean()),
            "log_m2": agg(logged, pl.all().var(ddof=0)) * n,
        }
    )


def merge_moments(parts: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Pool per-file moments exactly (Chan et al.'s parallel variance), one row per column."""
    both = pl.concat(list(parts))
    count = pl.col("count")
    aggs = [count.sum().alias("count"), pl.col("min").min(), pl.col("max").max()]
    for mean, m2 in (("mean", "m2"), ("log_mean", "log_m2")):
        pooled = (count * pl.col(mean)).sum() / count.sum()
        aggs += [pooled.alias(mean), (pl.col(m2).sum() + (count * (pl.col(mean) - pooled) ** 2).sum()).alias(m2)]
    return both.group_by("column").agg(aggs).sort("column")


def fit_transform(moments: pl.DataFrame, log1p_above: float, std_floor: float, drop_constant: bool) -> dict[str, Any]:
    """The transform of one feature matrix from its pooled train moments (stored in stats.json)."""
    m = moments.to_dict(as_series=False)
    col_min, col_max = np.array(m["min"]), np.array(m["max"])
    keep = col_max > col_min if drop_constant else np.ones(len(col_min), dtype=bool)
    use_log = np.maximum(np.abs(col_min), np.abs(col_max)) > log1p_above
    count = np.array(m["count"], dtype=np.float64)
    mean = np.where(use_log, m["log_mean"], m["mean"])
    std = np.sqrt(np.where(use_log, m["log_m2"], m["m2"]) / count)
    std = np.where(std < std_floor, 1.0, std)
    columns = np.flatnonzero(keep)
    return {
        "columns": columns.tolist(),
        "log_columns": np.flatnonzero(keep & use_log).tolist(),
        "mean": mean[keep].tolist(),
        "std": std[keep].tolist(),
        "dim": int(len(columns)),
    }


def apply_transform(x: np.ndarray, transform: dict[str, Any], source: Path | str, field: str) -> np.ndarray:
    """Keep the transform's columns, signed-log1p its wide ones, standardise; float32 (n, len(columns)).
    :class:`~tpuperf.data.npz.DataFormatError` naming ``source`` (the file ``x`` came from), ``field`` and the
    column when a value leaves float32's range once transformed (finite, but far beyond the training data)."""
    columns = np.asarray(transform["columns"], dtype=np.int64)
    out = np.asarray(x, dtype=np.float64)[:, columns]
    logged = np.isin(columns, transform["log_columns"])
    out[:, logged] = signed_log1p(out[:, logged])
    out = (out - np.asarray(transform["mean"])) / np.asarray(transform["std"])
    wide = np.abs(out) > np.finfo(np.float32).max
    if wide.any():
        row, col = np.argwhere(wide)[0]
        raise DataFormatError(
            source,
            field,
            f"column {columns[col]}: value {np.asarray(x)[row, columns[col]]:g} overflows float32 once transformed "
            f"(train mean {transform['mean'][col]:g}, std {transform['std'][col]:g})",
        )
    return out.astype(np.float32)


# ---------------------------------------------------------------- per-file work


@dataclass
class GraphResult:
    """What pass 1 returns for one file: its index row and, for train, its feature moments."""

    row: dict[str, Any]
    node_moments: pl.DataFrame | None = None
    config_moments: pl.DataFrame | None = None


@dataclass
class BadFile:
    """A file that failed validation (picklable, unlike the exception, for joblib workers)."""

    path: str
    field: str | None
    problem: str

    @property
    def reason(self) -> str:
        return f"{self.field}: {self.problem}" if self.field else self.problem


def _save(dir_: Path, content: cache.ContentHash, **arrays: np.ndarray) -> None:
    """Save each array as ``<name>.npy`` and add it to the graph's ``content`` hash."""
    for name, arr in arrays.items():
        np.save(dir_ / f"{name}.npy", arr)
        content.add(name, arr)


def prepare_file(
    path: Path, collection: Collection, split: str, tmp: Path, settings: PreprocessConfig
) -> GraphResult | BadFile:
    """Pass 1 for one file: validate, prune, dedup (train), write raw arrays under ``tmp``."""
    rel = cache.graph_dir(split, path.stem)
    out = tmp / rel
    out.mkdir(parents=True)
    try:
        return _prepare(path, collection, split, out, rel, settings)
    except DataFormatError as exc:
        shutil.rmtree(out)
        return BadFile(str(exc.path), exc.field, exc.problem)


def prune(graph: TileGraph | LayoutGraph, mode: str, hops: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The nodes and edges the model sees: ``(kept, edges, config_node_pos)``.

    ``kept`` int64 (n',): sorted original ids of the kept nodes: every node of a tile graph; of a
    layout graph, with ``mode`` ``khop`` the configurable nodes and their ``hops``-hop
    neighbourhood (all nodes when 0), with ``chains`` :func:`chain_nodes` (``hops`` of context);
    ``edges`` int32 (m', 2): induced edges renumbered to positions in ``kept``;
    ``config_node_pos`` int32 (nc,): layout only (None for tile), each configurable node's
    position in ``kept``.
    """
    n = len(graph.node_feat)
    if isinstance(graph, LayoutGraph):
        if mode == "chains":
            kept = chain_nodes(graph.edge_index, graph.node_opcode, n, graph.node_config_ids, hops)
        elif mode == "khop":
            kept = k_hop_nodes(graph.edge_index, n, graph.node_config_ids, hops)
        else:
            raise ValueError(f"pruning mode must be one of {', '.join(PRUNE_MODES)}, got {mode!r}")
        config_node_pos = np.searchsorted(kept, graph.node_config_ids).astype(np.int32)
    else:
        kept, config_node_pos = np.arange(n, dtype=np.int64), None
    return kept, induced_edges(graph.edge_index, kept, n), config_node_pos


def graph_structure(
    graph: TileGraph | LayoutGraph, mode: str, hops: int, config_edge_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """What the model sees of ``graph``'s wiring: :func:`prune`'s ``(kept, edges, config_node_pos)``
    and, for a layout graph, its :func:`config_edges` (int32 (e, 2), paths of at most
    ``config_edge_length`` edges on the unpruned graph; None for tile). The one place the cache
    (:func:`preprocess_collection`) and the ranker (:func:`prepare_graph`) derive it from, so both
    see the same structure. ValueError as :func:`prune` and :func:`config_edges`.
    """
    kept, edges, config_node_pos = prune(graph, mode, hops)
    links = None
    if isinstance(graph, LayoutGraph):
        links = config_edges(graph.edge_index, len(graph.node_feat), graph.node_config_ids, config_edge_length)
    return kept, edges, config_node_pos, links


def prepare_graph(path: Path | str, collection: Collection, stats: dict[str, Any]) -> cache.CachedGraph:
    """One raw file as the cache would hold it in the test split, built in memory.

    Validates the file (:func:`tpuperf.data.npz.load_graph`; runtimes may be zeros or absent),
    prunes it with ``stats["prune"]`` and ``stats["hops"]``, links its configurable nodes with config edges of at most
    ``stats["config_edge_length"]`` edges (:func:`config_edges`) and applies the stored transform ``stats`` (the
    ``stats.json`` of the model's training cache), keeping every configuration, exactly as
    :func:`preprocess_collection` treats a test file. ``graph_id`` is the path. Layout
    configurations are fully loaded (c x nc x 18 int8 in memory). Raises
    :class:`~tpuperf.data.npz.DataFormatError` naming the file and field.
    """
    path = Path(path)
    graph = load_graph(path, collection, "test", runtimes_optional=True)
    kept, edges, config_node_pos, layout_edges = graph_structure(
        graph, stats["prune"], int(stats["hops"]), int(stats["config_edge_length"])
    )
    if collection.kind.config_per_node:
        config_feat = layout_codes(path, graph.node_config_feat)
        tensors = layout_tensors(graph)
        config_first = None
    else:
        config_first = first_identical(graph.config_feat)
        config_feat = apply_transform(
            with_tile_features(graph.node_feat, graph.node_opcode, graph.edge_index, graph.config_feat),
            stats["config_feat"],
            path,
            "config_feat",
        )
        tensors = None
    return cache.CachedGraph(
        graph_id=str(path),
        split="test",
        node_feat=apply_transform(graph.node_feat[kept].astype(np.float32), stats["node_feat"], path, "node_feat"),
        node_opcode=graph.node_opcode[kept].astype(np.int32),
        edge_index=edges,
        node_ids=kept,
        config_feat=config_feat,
        config_node_pos=config_node_pos,
        config_edges=layout_edges,
        config_tensors=tensors,
        runtime=graph.target.astype(np.float64),
        config_ids=np.arange(graph.num_configs, dtype=np.int64),
        config_first=config_first,
    )


def _prepare(
    path: Path, collection: Collection, split: str, out: Path, rel: str, settings: PreprocessConfig
) -> GraphResult:
    graph = load_graph(path, collection, split, load_configs=False)
    n = len(graph.node_feat)
    is_train = split == "train"
    content = cache.ContentHash()
    kept, edges, config_node_pos, layout_edges = graph_structure(
        graph, settings.prune, settings.hops, settings.config_edge_length
    )
    if collection.kind.config_per_node:
        config_ids, runtime, config_digest = _write_layout_configs(
            path, out / "config_feat.npy", graph.config_runtime, is_train, settings.chunk_mb << 20
        )
        content.add("config_feat.blake2b", config_digest)
        _save(
            out,
            content,
            config_node_pos=config_node_pos,
            config_edges=layout_edges,
            config_tensors=layout_tensors(graph),
        )
        config_moments = None
    else:
        assert isinstance(graph, TileGraph)
        target = graph.target
        config_feat = graph.config_feat
        if is_train:
            deduper = ConfigDeduper(target)
            config_feat = config_feat[deduper.add(config_feat, 0)]
            config_ids, runtime = np.asarray(deduper.config_ids, dtype=np.int64), np.asarray(deduper.runtime)
            config_first = config_ids  # deduplicated: each config is the first of its features
        else:
            config_ids, runtime = np.arange(graph.num_configs, dtype=np.int64), target.astype(np.float64)
            config_first = first_identical(config_feat)
        config_feat = with_tile_features(graph.node_feat, graph.node_opcode, graph.edge_index, config_feat)
        _save(out, content, config_feat=config_feat, config_first=config_first)
        config_moments = column_moments(config_feat) if is_train else None
    node_feat = graph.node_feat[kept].astype(np.float32)
    _save(
        out,
        content,
        node_feat=node_feat,
        node_opcode=graph.node_opcode[kept].astype(np.int32),
        edge_index=edges,
        node_ids=kept.astype(np.int64),
        runtime=runtime.astype(np.float64),
        config_ids=config_ids,
    )
    row = {
        "split": split,
        "graph_id": path.stem,
        "num_nodes": len(kept),
        "num_edges": len(edges),
        "num_configs": len(config_ids),
        "num_configs_original": graph.num_configs,
        "num_config_nodes": len(graph.node_config_ids) if collection.kind.config_per_node else 0,
        "num_config_edges": len(layout_edges) if collection.kind.config_per_node else 0,
        "path": rel,
        "num_nodes_original": n,
        "num_edges_original": len(graph.edge_index),
        "max_opcode": int(graph.node_opcode.max()),
        "content_hash": content.hexdigest(),
    }
    return GraphResult(row, column_moments(node_feat) if is_train else None, config_moments)


def finish_graph(dir_: Path, stats: dict[str, Any], config_per_node: bool, source: Path) -> None:
    """Pass 2 for one graph: overwrite its raw feature arrays with the transformed ones (per-graph
    ``config_feat`` too; per-node layout configs stay raw int8 codes). ``source``: the graph's .npz, which a
    :class:`~tpuperf.data.npz.DataFormatError` of :func:`apply_transform` names."""
    names = ("node_feat",) if config_per_node else ("node_feat", "config_feat")
    for name in names:
        path = dir_ / f"{name}.npy"
        np.save(path, apply_transform(np.load(path), stats[name], source, name))


# ---------------------------------------------------------------- the stage


@dataclass
class _Inputs:
    data_dir: Path
    files: dict[str, list[Path]] = field(default_factory=dict)
    missing_splits: list[str] = field(default_factory=list)


def _find_inputs(data_root: Path, collection: Collection) -> _Inputs:
    inputs = _Inputs(collection.split_dir(data_root, "train").parent)
    for split in SPLITS:
        d = collection.split_dir(data_root, split)
        if d.is_dir():
            inputs.files[split] = sorted(d.glob("*.npz"))
        else:
            inputs.missing_splits.append(split)
            inputs.files[split] = []
    if not inputs.files["train"]:
        raise PreprocessError(
            f"{collection.name}: no train .npz files under {collection.split_dir(data_root, 'train')}: "
            "cannot fit the feature transform. Add this collection's train files to the dataset (data.dir for "
            f"data.source local) or leave {collection.slug} out of `collections` in params.yaml; if {data_root} is "
            "empty, run `dvc repro download` first"
        )
    return inputs


def _parallel(jobs: int, tasks: list, desc: str, progress: bool) -> Iterable:
    """Run joblib tasks with a progress bar, yielding results as they finish."""
    results = Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks)
    return tqdm(results, total=len(tasks), desc=desc, unit="graph", disable=not progress)


def _build_stats(
    collection: Collection,
    results: list[GraphResult],
    settings: PreprocessConfig,
    index: pl.DataFrame,
    source: str | None,
) -> dict[str, Any]:
    # sorted: pooled float sums must not depend on the order in which workers finished
    train = sorted((r for r in results if r.row["split"] == "train"), key=lambda r: r.row["graph_id"])
    if not train:
        raise PreprocessError(f"{collection.name}: every train file was skipped: cannot fit the feature transform")
    node = fit_transform(merge_moments(r.node_moments for r in train), settings.log1p_above, settings.std_floor, True)
    max_config_nodes = int(index["num_config_nodes"].max())
    stats: dict[str, Any] = {
        "format_version": cache.FORMAT_VERSION,
        "collection": collection.name,
        "slug": collection.slug,
        "data_source": source,
        "prune": settings.prune,
        "hops": settings.hops,
        "config_edge_length": settings.config_edge_length,
        "log1p_above": settings.log1p_above,
        "std_floor": settings.std_floor,
        "num_train_graphs": len(train),
        "max_nodes": int(index["num_nodes"].max()),
        "max_edges": int(index["num_edges"].max()),
        "max_config_nodes": max_config_nodes,
        "max_opcode": int(index["max_opcode"].max()),
        "node_feat_dim": node["dim"],
        "node_feat": node,
    }
    if not collection.kind.config_per_node:
        conf = fit_transform(
            merge_moments(r.config_moments for r in train), settings.log1p_above, settings.std_floor, False
        )
        stats["config_feat"] = conf
        stats["config_feat_shape"] = [conf["dim"]]
    else:
        stats["config_feat"] = {"encoding": "raw minor-to-major values -1..5 as int8, not transformed"}
        stats["config_feat_shape"] = [max_config_nodes, LAYOUT_CONFIG_DIM]
    return stats


def _report(inputs: _Inputs, index: pl.DataFrame, bad: list[BadFile], settings: PreprocessConfig) -> dict[str, Any]:
    per_split = {}
    for split in SPLITS:
        part = index.filter(pl.col("split") == split)
        per_split[split] = {
            "files": len(inputs.files[split]),
            "graphs": len(part),
            "configs_original": int(part["num_configs_original"].sum()),
            "configs_kept": int(part["num_configs"].sum()),
            "nodes_original": int(part["num_nodes_original"].sum()),
            "nodes_kept": int(part["num_nodes"].sum()),
            "edges_original": int(part["num_edges_original"].sum()),
            "edges_kept": int(part["num_edges"].sum()),
        }
    return {
        "data_dir": str(inputs.data_dir),
        "missing_splits": inputs.missing_splits,
        "settings": asdict(settings),
        "splits": per_split,
        "skipped": [{"path": b.path, "reason": b.reason} for b in bad],
    }


def _listed_invalid(
    data_root: Path, inputs: _Inputs, collection: Collection, settings: PreprocessConfig
) -> dict[Path, str]:
    """This collection's files the download stage listed as invalid (:func:`tpuperf.collection.invalid_files`):
    path -> problem, to be skipped; PreprocessError naming them (the count and the first few, with their
    problems) when ``on_bad_file`` is ``fail``."""
    listed: dict[Path, str] = {}
    for split in SPLITS:
        present = set(inputs.files[split])
        listed.update({path: why for path, why in invalid_files(data_root, split).items() if path in present})
    if listed and settings.on_bad_file == "fail":
        raise PreprocessError(
            f"{collection.name}: {len(listed)} file(s) failed validation in the download stage (listed as invalid in "
            f"{data_root / DATASET_MANIFEST}): {listing([f'{path}: {why}' for path, why in listed.items()])}. "
            "preprocess.on_bad_file is 'fail': replace or remove them in the source and run the download again, "
            "or set preprocess.on_bad_file: skip in params.yaml to leave them out (a test file left out has no "
            "submission rows, which Kaggle refuses)"
        )
    return listed


def preprocess_stage(config: Config, collection: Collection) -> dict[str, Any]:
    """The ``preprocess`` stage of one collection (``tpuperf preprocess``, the Kaggle kernel):
    :func:`preprocess_collection` from ``data.out`` to ``preprocess.out`` with the loaded
    params.yaml's ``preprocess`` settings; the report. Raises what it raises."""
    return preprocess_collection(config.data.out, config.preprocess.out, collection, config.preprocess)


def preprocess_collection(
    data_root: Path | str,
    out_root: Path | str,
    collection: Collection,
    settings: PreprocessConfig,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Build ``<out_root>/<slug>/`` from ``<data_root>/npz/...``; returns the report (also saved).

    Built in a temp dir beside the target and renamed into place at the end, so a failure
    leaves the previous cache untouched and no partial directory. With ``settings.on_bad_file``
    ``fail``, raises PreprocessError for files the download stage listed as invalid (before reading
    any file) and :class:`~tpuperf.data.npz.DataFormatError` for a file pass 1 rejects; with ``skip``
    both are left out and listed in the report's ``skipped``. PreprocessError also when there is no
    train file left to fit the transform on.
    """
    data_root, out_root = Path(data_root), Path(out_root)
    inputs = _find_inputs(data_root, collection)
    counts = ", ".join(f"{s} {len(inputs.files[s])}" for s in SPLITS)
    log.info("preprocess %s: %s (graphs: %s)", collection.name, inputs.data_dir, counts)
    for split in inputs.missing_splits:
        log.warning("  no %s split under %s: the cache will have no %s graphs", split, inputs.data_dir, split)

    listed = _listed_invalid(data_root, inputs, collection, settings)
    final = out_root / collection.slug
    with replaced_dir(final) as tmp:
        tasks = [
            delayed(prepare_file)(path, collection, split, tmp, settings)
            for split in SPLITS
            for path in inputs.files[split]
            if path not in listed
        ]
        results: list[GraphResult] = []
        bad = [BadFile(str(path), None, why) for path, why in listed.items()]
        for res in _parallel(settings.jobs, tasks, f"read {collection.slug}", progress):
            if isinstance(res, BadFile):
                if settings.on_bad_file == "fail":
                    raise DataFormatError(res.path, res.field, res.problem)
                bad.append(res)
            else:
                results.append(res)
        split_order = pl.Enum(list(SPLITS))
        index = (
            pl.DataFrame([r.row for r in results])
            .with_columns(pl.col("split").cast(split_order))
            .sort("split", "graph_id")
            .with_columns(pl.col("split").cast(pl.String))
        )
        stats = _build_stats(collection, results, settings, index, data_source(data_root))
        sources = {(split, path.stem): path for split in SPLITS for path in inputs.files[split]}
        finish = [
            delayed(finish_graph)(tmp / rel, stats, collection.kind.config_per_node, sources[split, graph_id])
            for split, graph_id, rel in index.select("split", "graph_id", "path").iter_rows()
        ]
        for _ in _parallel(settings.jobs, finish, f"transform {collection.slug}", progress):
            pass
        report = _report(inputs, index, sorted(bad, key=lambda b: b.path), settings)
        index.write_parquet(tmp / cache.INDEX_FILE)
        (tmp / cache.STATS_FILE).write_text(json.dumps(stats, indent=1))
        (tmp / cache.REPORT_FILE).write_text(json.dumps(report, indent=1))
    _log_summary(final, report, collection, settings)
    return report


def _log_summary(final: Path, report: dict[str, Any], collection: Collection, settings: PreprocessConfig) -> None:
    for b in report["skipped"]:
        log.warning("  skipped %s: %s", b["path"], b["reason"])
    test = [b["path"] for b in report["skipped"] if Path(b["path"]).parent.name == "test"]
    if test:
        log.warning(
            "  %d test file(s) skipped: their submission rows will be missing, so no submission can be written "
            "(Kaggle refuses one without them): %s",
            len(test),
            listing(test),
        )
    s = report["splits"]
    tr = s["train"]
    nodes_o = sum(v["nodes_original"] for v in s.values())
    nodes_k = sum(v["nodes_kept"] for v in s.values())
    edges_o = sum(v["edges_original"] for v in s.values())
    edges_k = sum(v["edges_kept"] for v in s.values())
    if not collection.kind.config_per_node or (settings.prune == "khop" and settings.hops == 0):
        pruning = "full graphs kept"
    elif settings.prune == "khop":
        pruning = f"{settings.hops}-hop pruning"
    else:
        pruning = f"chain pruning, {settings.hops} hop(s) of context"
    log.info(
        "  wrote %s: %s graphs; train configs %d -> %d after dedup; nodes %d -> %d, edges %d -> %d (%s); %d file(s) skipped",
        final,
        "/".join(str(v["graphs"]) for v in s.values()),
        tr["configs_original"],
        tr["configs_kept"],
        nodes_o,
        nodes_k,
        edges_o,
        edges_k,
        pruning,
        len(report["skipped"]),
    )
