"""The preprocessed per-collection cache that training reads, and its reader.

Written by :mod:`tpuperf.data.preprocess` (the ``preprocess`` DVC stage) to ``<root>/<slug>/``
(``cache/layout-nlp-random/`` by default). Every array is a plain ``.npy`` so that
``np.load(mmap_mode="r")`` works: training samples a few configs of a big graph without
reading the others. Layout on disk::

    stats.json       the feature transform, fitted on TRAIN graphs only (see below)
    index.parquet    one row per graph: split, graph_id, num_nodes, num_edges, num_configs,
                     num_configs_original, num_config_nodes, num_config_edges, path (graph dir relative to the
                     cache), num_nodes_original and num_edges_original (before pruning), and
                     content_hash: see :class:`ContentHash`
    report.json      files processed, skipped (with reasons), dedup and pruning totals
    <split>/<graph_id>/
        node_feat.npy        float32 (n', F')  transformed node features (kept columns only)
        node_opcode.npy      int32 (n',)       HLO opcode ids, for an embedding
        edge_index.npy       int32 (m', 2)     row [u, v] = u consumes v's output, pruned ids
        node_ids.npy         int64 (n',)       original node id of each kept node (ascending,
                                               so the topological order is preserved)
        config_feat.npy      tile:   float32 (c', 30) the file's 24 config columns then their
                                     tile features (tpuperf.data.tile_features), transformed
                                     with the train stats
                             layout: int8 (c', nc, 18) raw minor-to-major values -1..5,
                                     unchanged, so the encoding is the same in every split
        config_node_pos.npy  int32 (nc,)       layout only: position of each configurable
                                               node in the pruned node order
        config_edges.npy     int32 (e, 2)      layout only: row [i, j] = configurable node i
                                               reads configurable node j's output through
                                               non-configurable nodes only (positions in
                                               config_node_pos; computed on the unpruned graph,
                                               paths of at most ``config_edge_length`` edges)
        config_tensors.npy   int32 (nc, 3, 13) layout only: the raw dims (0-5), own
                                               minor-to-major (6-11, -1 past the rank) and
                                               bytes per element (12) of the tensors each
                                               configurable node's slot groups lay out (output,
                                               operands of lowest ids; tpuperf.data.preprocess.layout_tensors)
        runtime.npy          float64 (c',)     tile: runtime / normaliser; layout: runtime in
                                               ns; zeros in test
        config_ids.npy       int64 (c',)       index of each kept config in the original file
        config_first.npy     int64 (c',)       tile only: the id (in the original file) of the first config
                                               whose raw features equal this one's (its own id when none
                                               before it; train: always its own, train is deduplicated);
                                               what :func:`tpuperf.metrics.rank_configs` needs to give a
                                               top 5 distinct configurations

``stats.json`` holds ``format_version``, ``collection``, ``slug``, ``data_source`` (the dataset manifest's
``source``: kaggle, synthetic, local, or null without a manifest), ``prune``, ``hops``, ``config_edge_length``, ``max_nodes``,
``max_edges``, ``max_config_nodes`` (over all splits, after pruning: static padded shapes),
``max_opcode``, ``node_feat_dim``, ``config_feat_shape`` (one config's trailing shape padded to
the maxima: ``[30]`` for tile, ``[max_config_nodes, 18]`` for layout), the fit settings
(``log1p_above``, ``std_floor``, ``num_train_graphs``) and, for ``node_feat`` and (tile)
``config_feat``, the transform: ``columns`` (original column indices kept), ``log_columns``
(original indices that get ``sign(x) * log1p(|x|)``), ``mean`` and ``std`` (one per kept
column, after the log; the transform is ``(x' - mean) / std``).

A graph's ``content_hash`` (32 hex digits) is a BLAKE2b-128 digest of every array preprocess
writes for it, taken as the bytes are written (pass 1, so ``node_feat`` and tile ``config_feat``
before the transform: the transform itself is in ``stats.json``). A checkpoint is tied to the
hashes of the graphs it trained on plus ``stats.json`` (:mod:`tpuperf.training.trainer`), so relabelled
runtimes, other configs or another pruning invalidate it without re-reading the cache.

Only train graphs are deduplicated (valid/test keep every config, so ``config_ids`` is then
``0..c-1``): see :mod:`tpuperf.data.preprocess` for why and which runtime a duplicate keeps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from tpuperf.collection import Collection, get_collection
from tpuperf.config import plain
from tpuperf.errors import TpuperfError

if TYPE_CHECKING:
    from tpuperf.config import PreprocessConfig

FORMAT_VERSION = 6  # 2: index.parquet has content_hash; 3: layout config_edges.npy, stats.json has prune
# 4: layout graphs have config_tensors
# 5: tile config_feat has tile features (30 columns)
# 6: tile graphs have config_first
STATS_FILE = "stats.json"
# stats.json keys that say where the files came from, not what the models see: the same files downloaded from
# Kaggle or read as a local copy (a Kaggle kernel preprocesses with data.source local) make equal caches for
# training, export and the ensemble (CollectionCache.fitted_stats)
DATA_ORIGIN_KEYS = ("data_source",)
# the preprocess.* settings stats.json records (what the cache was built with; tpuperf.data.preprocess)
PREPROCESS_KEYS = ("prune", "hops", "config_edge_length", "log1p_above", "std_floor")
INDEX_FILE = "index.parquet"
REPORT_FILE = "report.json"
GRAPH_ARRAYS = ("node_feat", "node_opcode", "edge_index", "node_ids", "config_feat", "runtime", "config_ids")
LAYOUT_ARRAYS = ("config_node_pos", "config_edges", "config_tensors")
TILE_ARRAYS = ("config_first",)
# config_tensors columns: dims 0-5, the tensor's own minor-to-major 6-11, bytes per element 12
TENSOR_DIMS, TENSOR_LAYOUT, TENSOR_BYTES, TENSOR_WIDTH = 0, 6, 12, 13
MEMMAPPED = ("config_feat", "runtime")
REBUILD_HINT = "run `dvc repro preprocess` (or `tpuperf preprocess --collection <name>`)"


class CacheError(TpuperfError, FileNotFoundError):
    """The cache is absent, incomplete or from another format version; says how to rebuild it."""


def preprocess_differences(
    a: PreprocessConfig | Mapping[str, Any], b: PreprocessConfig | Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """``(key, a's value, b's value)`` for each of :data:`PREPROCESS_KEYS` whose value differs between two sets of
    preprocess settings, in that key order. Each is a :class:`tpuperf.config.PreprocessConfig` or a mapping such as
    ``stats.json`` (a key it lacks is None); values are compared as JSON reads them back
    (:func:`tpuperf.config.plain`: a tuple equals its list, 100 equals 100.0), and returned so."""

    def values(settings: PreprocessConfig | Mapping[str, Any]) -> dict[str, Any]:
        raw = settings if isinstance(settings, Mapping) else dataclasses.asdict(settings)
        return plain({k: raw.get(k) for k in PREPROCESS_KEYS})

    was, now = values(a), values(b)
    return [(k, was[k], now[k]) for k in PREPROCESS_KEYS if was[k] != now[k]]


@dataclass
class CachedGraph:
    """One preprocessed graph; ``config_feat`` and ``runtime`` are memory-mapped read-only."""

    graph_id: str
    split: str
    node_feat: np.ndarray
    node_opcode: np.ndarray
    edge_index: np.ndarray
    node_ids: np.ndarray
    config_feat: np.ndarray
    config_node_pos: np.ndarray | None  # None for tile
    config_edges: np.ndarray | None  # None for tile
    config_tensors: np.ndarray | None  # None for tile
    runtime: np.ndarray
    config_ids: np.ndarray
    config_first: np.ndarray | None = None  # tile: int64 (c',), see the module docstring; None for layout

    @property
    def num_nodes(self) -> int:
        return len(self.node_feat)

    @property
    def num_edges(self) -> int:
        return len(self.edge_index)

    @property
    def num_config_nodes(self) -> int:
        """Nodes of the per-config stage's graph (tpuperf.training.batches): layout its
        configurable nodes, tile 1 (the kernel)."""
        return 1 if self.config_node_pos is None else len(self.config_node_pos)

    @property
    def num_config_edges(self) -> int:
        """Edges of the per-config stage's graph: layout its config edges, tile none."""
        return 0 if self.config_edges is None else len(self.config_edges)

    @property
    def num_configs(self) -> int:
        return len(self.runtime)


class ContentHash:
    """Incremental BLAKE2b-128 digest of one graph's cache arrays (the index's ``content_hash``).

    Each array contributes its name, dtype, shape and bytes, so equal hashes mean equal arrays.
    """

    def __init__(self) -> None:
        self._digest = hashlib.blake2b(digest_size=16)

    def add(self, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self._digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        self._digest.update(array.tobytes())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def graph_dir(split: str, graph_id: str) -> str:
    """Directory of one graph relative to the collection's cache (the index's ``path``)."""
    return f"{split}/{graph_id}"


def array_names(collection: Collection) -> tuple[str, ...]:
    """The ``.npy`` files every graph of this collection has."""
    return GRAPH_ARRAYS + (LAYOUT_ARRAYS if collection.kind.config_per_node else TILE_ARRAYS)


class CollectionCache:
    """Reader of one collection's cache under ``root`` (e.g. ``cache``); fails early and
    names the missing file when the cache has not been built."""

    def __init__(self, root: Path | str, collection: Collection | str):
        self.collection = collection if isinstance(collection, Collection) else get_collection(collection)
        self.dir = Path(root) / self.collection.slug
        for name in (STATS_FILE, INDEX_FILE):
            self._require(self.dir / name)
        version = self.stats.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheError(
                f"{self.dir / STATS_FILE}: format version {version}, reader expects {FORMAT_VERSION}: {REBUILD_HINT}"
            )

    @staticmethod
    def _require(path: Path) -> None:
        if not path.exists():
            raise CacheError(f"{path} missing: {REBUILD_HINT}")

    @cached_property
    def stats(self) -> dict:
        return json.loads((self.dir / STATS_FILE).read_text())

    @cached_property
    def fitted_stats(self) -> dict:
        """:attr:`stats` without :data:`DATA_ORIGIN_KEYS`: the transform and preprocess settings the models depend
        on, what checkpoints (:func:`tpuperf.provenance.weights_provenance`) and predictions (:meth:`identity`)
        are tied to."""
        return {k: v for k, v in self.stats.items() if k not in DATA_ORIGIN_KEYS}

    def check_built_with(self, preprocess: PreprocessConfig) -> None:
        """CacheError naming stats.json and each setting, when ``preprocess`` (params.yaml's
        :class:`tpuperf.config.PreprocessConfig`) is not what the cache was built with (:data:`PREPROCESS_KEYS`):
        e.g. ``preprocess.hops`` edited and ``tpuperf train`` run by hand without ``tpuperf preprocess`` would train,
        export and ensemble on the old cache as if it were the new setting's."""
        diff = [
            f"preprocess.{k} {was!r} (params.yaml: {now!r})"
            for k, was, now in preprocess_differences(self.stats, preprocess)
        ]
        if diff:
            hint = REBUILD_HINT.replace("<name>", self.collection.slug)
            raise CacheError(f"{self.dir / STATS_FILE}: built with {', '.join(diff)}: {hint}")

    @cached_property
    def index(self) -> pl.DataFrame:
        return pl.read_parquet(self.dir / INDEX_FILE)

    @cached_property
    def _paths(self) -> dict[tuple[str, str], str]:
        rows = self.index.select("split", "graph_id", "path").iter_rows()
        return {(split, gid): path for split, gid, path in rows}

    @property
    def node_feat_dim(self) -> int:
        return int(self.stats["node_feat_dim"])

    @property
    def config_feat_shape(self) -> tuple[int, ...]:
        """One config's features padded to the maxima: ``(24,)`` tile, ``(max_config_nodes, 18)`` layout."""
        return tuple(self.stats["config_feat_shape"])

    def content_hashes(self, split: str) -> dict[str, str]:
        """``{graph_id: content_hash}`` of one split's graphs (see :class:`ContentHash`)."""
        rows = self.index.filter(pl.col("split") == split).select("graph_id", "content_hash").iter_rows()
        return dict(rows)

    def identity(self) -> dict[str, str]:
        """What predictions made from this cache were made from (a run report's ``predicted_from``,
        :mod:`tpuperf.runs`): ``stats``, sha256 (64 hex chars) of :attr:`fitted_stats` (keys sorted: the transform
        and the preprocess settings, not where the files came from), and ``graphs``, sha256 of every graph's (split, graph_id, content_hash),
        sorted. Equal values: same transform, settings and graph contents."""
        stats = json.dumps(self.fitted_stats, sort_keys=True).encode()
        rows = self.index.select("split", "graph_id", "content_hash").sort("split", "graph_id").rows()
        return {
            "stats": hashlib.sha256(stats).hexdigest(),
            "graphs": hashlib.sha256(json.dumps(rows).encode()).hexdigest(),
        }

    def config_first(self, split: str) -> dict[str, np.ndarray]:
        """``{graph_id: config_first}`` (int64 (c',), see the module docstring) of one split's tile graphs.
        Raises :class:`CacheError` for a layout cache (it has none) or a missing file."""
        if self.collection.kind.config_per_node:
            raise CacheError(f"{self.dir}: {self.collection.name} graphs have no config_first (tile only)")
        found = {}
        for graph_id, rel in self.index.filter(pl.col("split") == split).select("graph_id", "path").iter_rows():
            path = self.dir / rel / "config_first.npy"
            self._require(path)
            found[graph_id] = np.load(path)
        return found

    def graph_ids(self, split: str) -> list[str]:
        return self.index.filter(pl.col("split") == split)["graph_id"].to_list()

    def load(self, split: str, graph_id: str) -> CachedGraph:
        rel = self._paths.get((split, graph_id))
        if rel is None:
            raise KeyError(
                f"{self.collection.name}: no graph {graph_id!r} in split {split!r} of {self.dir / INDEX_FILE}"
            )
        arrays = {}
        for name in array_names(self.collection):
            path = self.dir / rel / f"{name}.npy"
            self._require(path)
            arrays[name] = np.load(path, mmap_mode="r" if name in MEMMAPPED else None)
        arrays.setdefault("config_node_pos", None)
        arrays.setdefault("config_edges", None)
        arrays.setdefault("config_tensors", None)
        arrays.setdefault("config_first", None)
        return CachedGraph(graph_id=graph_id, split=split, **arrays)

    def graphs(self, split: str) -> Iterator[CachedGraph]:
        for graph_id in self.graph_ids(split):
            yield self.load(split, graph_id)
