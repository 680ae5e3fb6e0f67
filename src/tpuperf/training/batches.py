"""Padded, static-shape batches of (graph, configurations) as tfgnn.GraphTensor.

A batch holds up to ``BatchShape.graphs`` items; an item is one graph with up to ``configs``
of its configurations. Items are merged into one GraphTensor with ``graphs + 1`` components:
the items, empty components for unused slots, and a last padding component that absorbs the
unused node and edge budget. Every tensor therefore has the same shape in every batch of one
shape, so a ``jit_compile=True`` step compiles once per shape (on TPU too) and never sees a
dynamic shape. Graphs are grouped by node count into a few shapes (:class:`BucketPlan`) so that
small graphs are not padded to the largest one.

Schema: node set ``op`` with ``feat`` [N, F] float32 and ``opcode`` [N] int32; edge set
``feeds`` from producer (source) to consumer (target); node set ``cfg``, the nodes
configurations act on, with ``op`` [M] int32, the node's row in ``op`` (layout: the
configurable nodes, M of them, with ``config`` [M, C, 18] int8 raw minor-to-major values and
``tensors`` [M, 3, 13] int32, the cache's raw ``config_tensors`` (zeros on padding nodes);
tile: one node per real item, the kernel, whose ``op`` is the kernel's first node; tfgnn reads
a node set's static size from its features, so ``op`` is what keeps XLA's shapes static there)
and edge set ``cfg_feeds`` on it (layout: the cached
config edges, producer -> consumer; tile: none but padding); context ``config`` [graphs+1, C,
30] float32 for tile (the file's 24 config columns, then :mod:`tpuperf.data.tile_features`' 6)
and context ``config_mask`` [graphs+1, C] float32 (1 = a real config of the item, 0 = a padded
slot; from the item's config count, so known at test time too). Labels
are [graphs, C] float32 runtimes with 0 marking padded configs. ``cfg`` and ``cfg_feeds`` have
their own budgets (``config_nodes``, ``config_edges``) and padding like ``op`` and ``feeds``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import TypeVar

import numpy as np

from tpuperf.collection import get_kind
from tpuperf.config import TrainConfig
from tpuperf.data.cache import TENSOR_WIDTH, CachedGraph
from tpuperf.data.npz import TILE_CONFIG_DIM as TILE_FILE_CONFIG_DIM
from tpuperf.data.tile_features import TILE_FEATURE_NAMES

NODES, EDGES = "op", "feeds"
CONFIG_NODES, CONFIG_EDGES = "cfg", "cfg_feeds"
NODE_FEAT, OPCODE, CONFIG, CONFIG_MASK, OP_INDEX = "feat", "opcode", "config", "config_mask", "op"
T = TypeVar("T")  # what Buckets.split groups (batch items or graphs)

CONFIG_TENSORS = "tensors"  # layout cfg nodes: the cache's config_tensors (tpuperf.data.cache)
LAYOUT_CONFIG_DIM = 18
LAYOUT_GROUP_SIZE = 6  # output, input and kernel layouts: 6 minor-to-major slots each
LAYOUT_CONFIG_CLASSES = 7  # minor-to-major values -1..5
NOT_CONFIGURABLE = -2  # one-hot of (-2 + 1) = -1 is all zeros
TILE_CONFIG_DIM = TILE_FILE_CONFIG_DIM + len(TILE_FEATURE_NAMES)  # the file's 24 columns + tile features


@dataclass(frozen=True)
class BatchShape:
    """Static sizes of every batch: real graph slots, node and edge budgets, configs per graph,
    and the node and edge budgets of the ``cfg`` graph (see the module docstring)."""

    graphs: int
    nodes: int
    edges: int
    configs: int
    config_nodes: int
    config_edges: int

    def fits(self, nodes: int, edges: int, graphs: int, config_nodes: int, config_edges: int) -> bool:
        # the padding component needs at least one node (and one cfg node) for its padding edges
        return (
            graphs <= self.graphs
            and nodes <= self.nodes - 1
            and edges <= self.edges
            and config_nodes <= self.config_nodes - 1
            and config_edges <= self.config_edges
        )


@dataclass
class BatchItem:
    """One graph and the rows of its cached configurations scored in this batch."""

    graph: CachedGraph
    rows: np.ndarray


def plan_batch_shape(graphs: Iterable[CachedGraph], graphs_per_batch: int, configs: int, slack: float) -> BatchShape:
    """Budgets that fit the largest graph and, on average, ``graphs_per_batch`` graphs.

    ``slack`` > 1 leaves room so packing rarely closes a batch early; budgets are rounded up to
    a multiple of 64, or of 8 to 32 for small budgets (at most 1/8 of padding), so that nearby
    datasets share compiled shapes. The ``cfg`` budgets hold whatever fits the node budget: the
    smaller of (node budget x the graphs' largest cfg-nodes (cfg-edges) per node) and
    ``graphs_per_batch`` x the largest count, so they never close a batch that nodes and edges
    leave open (items of one graph may share a batch).
    """
    graphs = list(graphs)
    if not graphs:
        raise ValueError("cannot plan batches for zero graphs")
    nodes = np.array([g.num_nodes for g in graphs])
    edges = np.array([g.num_edges for g in graphs])

    def round_up(need: int) -> int:
        step = min(64, max(8, 2 ** (need.bit_length() - 4)))
        return int(math.ceil(need / step) * step)

    def budget(sizes: np.ndarray, extra: int) -> int:
        return round_up(max(int(sizes.max()), math.ceil(graphs_per_batch * float(sizes.mean()) * slack)) + extra)

    node_budget = budget(nodes, 1)

    def config_budget(sizes: np.ndarray, extra: int) -> int:
        per_node = math.ceil(float(np.max(sizes / np.maximum(nodes, 1))) * (node_budget - 1))
        return round_up(max(1, min(per_node, graphs_per_batch * int(sizes.max()))) + extra)

    return BatchShape(
        graphs_per_batch,
        node_budget,
        budget(np.maximum(edges, 1), 0),
        configs,
        config_budget(np.array([g.num_config_nodes for g in graphs]), 1),
        config_budget(np.array([g.num_config_edges for g in graphs]), 0),
    )


@dataclass(frozen=True)
class Buckets:
    """Static batch shapes for graphs grouped by node count (see :class:`BucketPlan`).

    ``bounds[b]`` is the largest node count bucket ``b`` takes (ascending; the last is the
    largest graph the buckets were planned from) and ``shapes[b]`` its batch shape.
    """

    bounds: tuple[int, ...]
    shapes: tuple[BatchShape, ...]

    def index(self, graph: CachedGraph) -> int:
        """The bucket of ``graph``; ValueError (naming it) when it exceeds the largest bucket."""
        if graph.num_nodes > self.bounds[-1]:
            raise ValueError(
                f"graph {graph.graph_id} has {graph.num_nodes} nodes, more than the largest batch bucket "
                f"({self.bounds[-1]} nodes); plan the buckets (train.buckets) from graphs that include it"
            )
        return int(np.searchsorted(self.bounds, graph.num_nodes, side="left"))

    def configs(self, graph: CachedGraph) -> int:
        """Config slots per graph in the batches of ``graph``'s bucket (ValueError as :meth:`index`)."""
        return self.shapes[self.index(graph)].configs

    def split(self, entries: Iterable[T], graph: Callable[[T], CachedGraph] = attrgetter("graph")) -> list[list[T]]:
        """``entries`` per bucket, in their order; ``graph`` gives an entry's graph (default: batch
        items' ``.graph``; pass ``lambda g: g`` for graphs). ValueError as :meth:`index`."""
        groups: list[list[T]] = [[] for _ in self.shapes]
        for entry in entries:
            groups[self.index(graph(entry))].append(entry)
        return groups


@dataclass(frozen=True)
class BucketPlan:
    """How graphs are grouped into a few static batch shapes (params.yaml ``train``).

    Bucket bounds are geometric below the largest planned graph: ``largest / growth**k`` nodes
    for k = count-1 .. 0; buckets without graphs are dropped and neighbours merged where
    splitting saves no node slots, so at most ``count`` shapes (XLA compilations) exist per
    planned set. Each bucket's shape is :func:`plan_batch_shape` of its
    own graphs, with graphs per batch lowered (to 1 at least) so that
    ``graphs x slack x mean nodes`` stays within ``max_batch_nodes``: a huge graph is alone. Its
    configs per graph are then lowered (to 2 at least, or the requested count if smaller) so that
    node slots x configs stay within ``max_config_nodes``: the per-config tensors of the layout
    models are [configs, nodes, units], so this bounds a batch's memory for graphs of any size.
    """

    graphs_per_batch: int
    slack: float
    count: int
    growth: float
    max_batch_nodes: int
    max_config_nodes: int

    @classmethod
    def from_config(cls, train: TrainConfig, predict: bool = False) -> BucketPlan:
        """From ``train.graphs_per_batch``, ``train.batch_slack`` and ``train.buckets`` (validated by
        tpuperf.config); ``max_config_nodes`` is ``buckets.predict_config_nodes`` for scoring
        (``predict``), else ``buckets.train_config_nodes``."""
        b = train.buckets
        budget = b.predict_config_nodes if predict else b.train_config_nodes
        return cls(train.graphs_per_batch, train.batch_slack, b.count, b.growth, b.max_batch_nodes, budget)

    def plan(self, graphs: Iterable[CachedGraph], configs: int, items: int) -> Buckets:
        """Buckets for ``graphs`` with ``configs`` config slots per graph; ValueError for no graphs.

        Adjacent buckets are merged while that does not raise the node slots of packing
        ``items`` batch items per graph (batches x node budget; packing is only counted): a split
        that would mostly leave half-empty batches behind costs a compilation and saves nothing.
        """
        graphs = list(graphs)
        if not graphs:
            raise ValueError("cannot plan batches for zero graphs")
        nodes = np.array([g.num_nodes for g in graphs])
        top = int(nodes.max())
        bounds = [math.ceil(top / self.growth**k) for k in range(self.count - 1, 0, -1)] + [top]
        member = np.searchsorted(bounds, nodes, side="left")
        groups = [(bound, [g for g, m in zip(graphs, member) if m == b]) for b, bound in enumerate(bounds)]
        groups = [(bound, group) for bound, group in groups if group]
        while len(groups) > 1:
            saving = [
                self._slots(a, items) + self._slots(b, items) - self._slots(a + b, items)
                for (_, a), (_, b) in zip(groups, groups[1:])
            ]
            best = int(np.argmax(saving))
            if saving[best] < 0:
                break
            groups[best : best + 2] = [(groups[best + 1][0], groups[best][1] + groups[best + 1][1])]
        return Buckets(tuple(bound for bound, _ in groups), tuple(self._shape(group, configs) for _, group in groups))

    def _shape(self, group: list[CachedGraph], configs: int) -> BatchShape:
        mean = float(np.mean([g.num_nodes for g in group]))
        per_batch = max(1, min(self.graphs_per_batch, int(self.max_batch_nodes // (self.slack * mean))))
        shape = plan_batch_shape(group, per_batch, configs, self.slack)
        fit = min(configs, max(2, self.max_config_nodes // shape.nodes))
        return shape if fit == configs else replace(shape, configs=fit)

    def _slots(self, group: list[CachedGraph], items: int) -> int:
        """Node slots of packing ``items`` items per graph, in a fixed shuffled order."""
        shape = self._shape(group, 1)
        order = np.random.default_rng(0).permutation(items * len(group))
        no_rows = np.zeros(0, np.int64)
        return sum(1 for _ in pack([BatchItem(group[i % len(group)], no_rows) for i in order], shape)) * shape.nodes


@dataclass
class SlotUsage:
    """Real versus padded node and config slots of batches (padding efficiency)."""

    nodes: int = 0
    node_slots: int = 0
    configs: int = 0
    config_slots: int = 0

    def add(self, batch: list[BatchItem], shape: BatchShape) -> None:
        self.nodes += sum(item.graph.num_nodes for item in batch)
        self.node_slots += shape.nodes
        self.configs += sum(len(item.rows) for item in batch)
        self.config_slots += shape.graphs * shape.configs

    @property
    def node_fill(self) -> float:
        """Real node slots / padded node slots (nan before any batch)."""
        return self.nodes / self.node_slots if self.node_slots else math.nan

    @property
    def config_fill(self) -> float:
        """Real configs / config slots (nan before any batch)."""
        return self.configs / self.config_slots if self.config_slots else math.nan


def pack(items: Iterable[BatchItem], shape: BatchShape) -> list[list[BatchItem]]:
    """Group items into batches that fit ``shape``, first fit: each item joins the first batch
    (in the order they were opened) with room for its nodes, edges, cfg nodes, cfg edges and a
    graph slot, else opens a new one. Items keep their order within a batch. Unlike closing a
    batch at the first item that does not fit, a small item later fills the room a large one
    left (the padding figures are in params.yaml at ``train.buckets.growth``).

    ValueError (naming the graph) for an item above the budgets or with more than
    ``shape.configs`` rows.
    """
    batches: list[list[BatchItem]] = []
    room: list[tuple[int, np.ndarray]] = []  # (batch index, used nodes/edges/cfg nodes/cfg edges), free slot
    for item in items:
        g = item.graph
        size = np.array([g.num_nodes, g.num_edges, g.num_config_nodes, g.num_config_edges])
        if not shape.fits(size[0], size[1], 1, size[2], size[3]):
            raise ValueError(
                f"graph {g.graph_id} ({size[0]} nodes, {size[1]} edges, {size[2]} cfg nodes, {size[3]} cfg edges) "
                f"exceeds the batch budget ({shape.nodes - 1} nodes, {shape.edges} edges, "
                f"{shape.config_nodes - 1} cfg nodes, {shape.config_edges} cfg edges)"
            )
        if len(item.rows) > shape.configs:
            raise ValueError(f"item of {g.graph_id} has {len(item.rows)} configs > {shape.configs}")
        for slot, (b, used) in enumerate(room):
            total = used + size
            if shape.fits(total[0], total[1], len(batches[b]) + 1, total[2], total[3]):
                batches[b].append(item)
                if len(batches[b]) < shape.graphs:
                    room[slot] = (b, total)
                else:
                    del room[slot]
                break
        else:
            batches.append([item])
            if shape.graphs > 1:
                room.append((len(batches) - 1, size))
    return batches


def to_arrays(batch: list[BatchItem], shape: BatchShape, kind: str, feat_dim: int) -> dict[str, np.ndarray]:
    """The padded numpy arrays of one batch (see the module docstring for the schema)."""
    components = shape.graphs + 1
    node_sizes = np.zeros(components, np.int64)
    edge_sizes = np.zeros(components, np.int64)
    config_node_sizes = np.zeros(components, np.int64)
    config_edge_sizes = np.zeros(components, np.int64)
    feat = np.zeros((shape.nodes, feat_dim), np.float32)
    opcode = np.zeros(shape.nodes, np.int32)
    source = np.zeros(shape.edges, np.int64)
    target = np.zeros(shape.edges, np.int64)
    config_source = np.zeros(shape.config_edges, np.int64)
    config_target = np.zeros(shape.config_edges, np.int64)
    op_index = np.full(shape.config_nodes, shape.nodes - 1, np.int32)  # padding cfg nodes: the last padding node
    runtime = np.zeros((shape.graphs, shape.configs), np.float32)
    config_mask = np.zeros((components, shape.configs), np.float32)
    per_node = get_kind(kind).config_per_node
    if per_node:
        config = np.full((shape.config_nodes, shape.configs, LAYOUT_CONFIG_DIM), NOT_CONFIGURABLE, np.int8)
        tensors = np.zeros((shape.config_nodes, 3, TENSOR_WIDTH), np.int32)
    else:
        config = np.zeros((components, shape.configs, TILE_CONFIG_DIM), np.float32)

    node_offset = edge_offset = cfg_offset = cfg_edge_offset = 0
    for slot, item in enumerate(batch):
        g, rows = item.graph, np.asarray(item.rows)
        n, m, k = g.num_nodes, g.num_edges, len(rows)
        cn, cm = g.num_config_nodes, g.num_config_edges
        node_sizes[slot], edge_sizes[slot] = n, m
        config_node_sizes[slot], config_edge_sizes[slot] = cn, cm
        feat[node_offset : node_offset + n] = g.node_feat
        opcode[node_offset : node_offset + n] = g.node_opcode
        edges = np.asarray(g.edge_index)
        source[edge_offset : edge_offset + m] = edges[:, 1] + node_offset  # producer
        target[edge_offset : edge_offset + m] = edges[:, 0] + node_offset  # consumer
        chosen = np.asarray(g.config_feat[np.sort(rows)])[np.argsort(np.argsort(rows))]  # sorted reads from a memmap
        if per_node:
            config[cfg_offset : cfg_offset + cn, :k] = chosen.transpose(1, 0, 2)
            op_index[cfg_offset : cfg_offset + cn] = np.asarray(g.config_node_pos) + node_offset
            tensors[cfg_offset : cfg_offset + cn] = g.config_tensors
            cfg_edges = np.asarray(g.config_edges)
            config_source[cfg_edge_offset : cfg_edge_offset + cm] = cfg_edges[:, 1] + cfg_offset
            config_target[cfg_edge_offset : cfg_edge_offset + cm] = cfg_edges[:, 0] + cfg_offset
        else:
            config[slot, :k] = chosen
            op_index[cfg_offset] = node_offset
        runtime[slot, :k] = g.runtime[rows]
        config_mask[slot, :k] = 1.0
        node_offset, edge_offset = node_offset + n, edge_offset + m
        cfg_offset, cfg_edge_offset = cfg_offset + cn, cfg_edge_offset + cm

    node_sizes[-1] = shape.nodes - node_offset
    edge_sizes[-1] = shape.edges - edge_offset
    config_node_sizes[-1] = shape.config_nodes - cfg_offset
    config_edge_sizes[-1] = shape.config_edges - cfg_edge_offset
    source[edge_offset:] = shape.nodes - 1  # padding edges loop on the last padding node
    target[edge_offset:] = shape.nodes - 1
    config_source[cfg_edge_offset:] = shape.config_nodes - 1
    config_target[cfg_edge_offset:] = shape.config_nodes - 1
    arrays = {
        "node_sizes": node_sizes,
        "edge_sizes": edge_sizes,
        "config_node_sizes": config_node_sizes,
        "config_edge_sizes": config_edge_sizes,
        NODE_FEAT: feat,
        OPCODE: opcode,
        "source": source,
        "target": target,
        "config_source": config_source,
        "config_target": config_target,
        OP_INDEX: op_index,
        CONFIG: config,
        CONFIG_MASK: config_mask,
        "runtime": runtime,
    }
    if per_node:
        arrays[CONFIG_TENSORS] = tensors
    return arrays


def array_signature(shape: BatchShape, kind: str, feat_dim: int):
    """tf.TensorSpecs of :func:`to_arrays`' output, fully static."""
    import tensorflow as tf

    components = shape.graphs + 1
    per_node = get_kind(kind).config_per_node
    config = (
        tf.TensorSpec((shape.config_nodes, shape.configs, LAYOUT_CONFIG_DIM), tf.int8)
        if per_node
        else tf.TensorSpec((components, shape.configs, TILE_CONFIG_DIM), tf.float32)
    )
    signature = {
        "node_sizes": tf.TensorSpec((components,), tf.int64),
        "edge_sizes": tf.TensorSpec((components,), tf.int64),
        "config_node_sizes": tf.TensorSpec((components,), tf.int64),
        "config_edge_sizes": tf.TensorSpec((components,), tf.int64),
        NODE_FEAT: tf.TensorSpec((shape.nodes, feat_dim), tf.float32),
        OPCODE: tf.TensorSpec((shape.nodes,), tf.int32),
        "source": tf.TensorSpec((shape.edges,), tf.int64),
        "target": tf.TensorSpec((shape.edges,), tf.int64),
        "config_source": tf.TensorSpec((shape.config_edges,), tf.int64),
        "config_target": tf.TensorSpec((shape.config_edges,), tf.int64),
        OP_INDEX: tf.TensorSpec((shape.config_nodes,), tf.int32),
        CONFIG: config,
        CONFIG_MASK: tf.TensorSpec((components, shape.configs), tf.float32),
        "runtime": tf.TensorSpec((shape.graphs, shape.configs), tf.float32),
    }
    if per_node:
        signature[CONFIG_TENSORS] = tf.TensorSpec((shape.config_nodes, 3, TENSOR_WIDTH), tf.int32)
    return signature


def to_graph_tensor(arrays: dict, kind: str):
    """Build the GraphTensor (and labels) from :func:`to_arrays` output, as tensors."""
    import tensorflow as tf
    import tensorflow_gnn as tfgnn

    node_features = {NODE_FEAT: arrays[NODE_FEAT], OPCODE: arrays[OPCODE]}
    config_node_features = {OP_INDEX: arrays[OP_INDEX]}  # also what gives the set a static size (XLA)
    context_features = {CONFIG_MASK: arrays[CONFIG_MASK]}
    if get_kind(kind).config_per_node:
        config_node_features[CONFIG] = arrays[CONFIG]
        config_node_features[CONFIG_TENSORS] = arrays[CONFIG_TENSORS]
    else:
        context_features[CONFIG] = arrays[CONFIG]
    graph = tfgnn.GraphTensor.from_pieces(
        context=tfgnn.Context.from_fields(features=context_features, sizes=tf.ones_like(arrays["node_sizes"])),
        node_sets={
            NODES: tfgnn.NodeSet.from_fields(sizes=arrays["node_sizes"], features=node_features),
            CONFIG_NODES: tfgnn.NodeSet.from_fields(sizes=arrays["config_node_sizes"], features=config_node_features),
        },
        edge_sets={
            EDGES: tfgnn.EdgeSet.from_fields(
                sizes=arrays["edge_sizes"],
                adjacency=tfgnn.Adjacency.from_indices(
                    source=(NODES, arrays["source"]), target=(NODES, arrays["target"])
                ),
            ),
            CONFIG_EDGES: tfgnn.EdgeSet.from_fields(
                sizes=arrays["config_edge_sizes"],
                adjacency=tfgnn.Adjacency.from_indices(
                    source=(CONFIG_NODES, arrays["config_source"]), target=(CONFIG_NODES, arrays["config_target"])
                ),
            ),
        },
    )
    return graph, arrays["runtime"]


def make_dataset(batches: Callable[[], Iterable[list[BatchItem]]], shape: BatchShape, kind: str, feat_dim: int):
    """tf.data pipeline of (GraphTensor, runtime) from a generator function of batches of items."""
    import tensorflow as tf

    def generate():
        for batch in batches():
            yield to_arrays(batch, shape, kind, feat_dim)

    dataset = tf.data.Dataset.from_generator(generate, output_signature=array_signature(shape, kind, feat_dim))
    return dataset.map(lambda arrays: to_graph_tensor(arrays, kind)).prefetch(2)
