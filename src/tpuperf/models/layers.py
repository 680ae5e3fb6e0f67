"""Keras layers of the ranking GNNs, on tfgnn.GraphTensor batches (schema: tpuperf.training.batches).

Every convolution maps ``(graph, state, edge_set) -> new_state`` where ``state`` is either
``[nodes, units]`` (config-independent) or ``[nodes, configs, units]`` (one state per node
and configuration): tfgnn's broadcast/pool ops gather and segment along the node/edge axis
only, so the same layer serves both and the configs of a graph share one graph structure.
``edge_set`` picks the graph: ``feeds`` on the ``op`` nodes (default) or ``cfg_feeds`` on the
``cfg`` nodes, the per-config stage's smaller graph (tpuperf.training.batches).

Edges point from producer (SOURCE) to consumer (TARGET). GraphSAGE aggregates the two
directions separately (an op's inputs and its users play different roles); ChebNet works on
the symmetrised graph, as spectral filters need a symmetric Laplacian.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_gnn as tfgnn

from tpuperf.collection import get_kind
from tpuperf.data.cache import TENSOR_BYTES, TENSOR_DIMS, TENSOR_LAYOUT
from tpuperf.data.tile_features import LANES, SUBLANES
from tpuperf.training.batches import (
    CONFIG,
    CONFIG_MASK,
    CONFIG_NODES,
    CONFIG_TENSORS,
    EDGES,
    LAYOUT_CONFIG_CLASSES,
    LAYOUT_CONFIG_DIM,
    LAYOUT_GROUP_SIZE,
    NODE_FEAT,
    NODES,
    NOT_CONFIGURABLE,
    OP_INDEX,
    OPCODE,
    TILE_FILE_CONFIG_DIM,
)


def _per_edge(weights: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Reshape [edges] weights to broadcast against [edges, ...] messages."""
    return tf.reshape(weights, [-1] + [1] * (like.shape.rank - 1))


def _both_directions(graph: tfgnn.GraphTensor, edge_set: str) -> tuple[tf.Tensor, tf.Tensor]:
    """(senders, receivers) [2 x edges] of the graph's index dtype: each edge producer -> consumer,
    then consumer -> producer."""
    adjacency = graph.edge_sets[edge_set].adjacency
    return (
        tf.concat([adjacency.source, adjacency.target], axis=0),
        tf.concat([adjacency.target, adjacency.source], axis=0),
    )


def _directional_means_of(messages: tf.Tensor, receivers: tf.Tensor, nodes: tf.Tensor) -> list[tf.Tensor]:
    """[mean over the inputs, mean over the users] [nodes, ...] from ``messages`` [2 x edges, ...],
    the senders' states along :func:`_both_directions` (``receivers`` its second part): one segment
    sum over 2 x ``nodes`` segments (a node's inputs, then its users); 0 where there are none."""
    edges = tf.shape(receivers)[0] // 2
    second = tf.repeat(tf.constant([0, 1], receivers.dtype), [edges, edges])  # 1 on consumer -> producer
    segments = receivers + tf.cast(nodes, receivers.dtype) * second
    sums = tf.math.unsorted_segment_sum(messages, segments, 2 * nodes)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(segments, messages.dtype), segments, 2 * nodes)
    means = sums / _per_edge(tf.maximum(counts, 1.0), sums)
    return [means[:nodes], means[nodes:]]


def directional_means(graph: tfgnn.GraphTensor, state: tf.Tensor, edge_set: str = EDGES) -> list[tf.Tensor]:
    """[mean over the op's inputs (producers), mean over its users (consumers)], each [nodes, ...]
    like ``state``; 0 for a node without any. One gather over both edge directions."""
    senders, receivers = _both_directions(graph, edge_set)
    return _directional_means_of(tf.gather(state, senders), receivers, tf.shape(state)[0])


def symmetric_edge_weights(
    graph: tfgnn.GraphTensor, self_loops: bool, edge_set: str = EDGES
) -> tuple[tf.Tensor, tf.Tensor]:
    """Edge weights 1/sqrt(d_u d_v) of the symmetrised graph and each node's degree.

    With ``self_loops`` the degree counts the node itself (Kipf & Welling's renormalisation).
    Isolated nodes get weight 0 instead of a division by zero.
    """
    ones = tf.ones_like(graph.edge_sets[edge_set].adjacency.source, dtype=tf.float32)
    degree = tfgnn.pool_edges_to_node(graph, edge_set, tfgnn.TARGET, "sum", feature_value=ones)
    degree += tfgnn.pool_edges_to_node(graph, edge_set, tfgnn.SOURCE, "sum", feature_value=ones)
    if self_loops:
        degree += 1.0
    inv_sqrt = tf.math.divide_no_nan(1.0, tf.sqrt(degree))
    adjacency = graph.edge_sets[edge_set].adjacency
    weights = tf.gather(inv_sqrt, adjacency.source) * tf.gather(inv_sqrt, adjacency.target)
    return weights, degree


def normalized_adjacency_product(
    graph: tfgnn.GraphTensor, state: tf.Tensor, weights: tf.Tensor, edge_set: str = EDGES
) -> tf.Tensor:
    """D^-1/2 A D^-1/2 x on the symmetrised graph (both edge directions): [nodes, ...] like ``state``.

    One gather and one segment sum over the edges taken in both directions (``weights`` [edges]
    for each), not one per direction: on [nodes, configs, units] states that is fewer passes
    over the tensor and one zero-filled sum buffer instead of two.
    """
    senders, receivers = _both_directions(graph, edge_set)
    return _weighted_sum(tf.gather(state, senders), receivers, weights, tf.shape(state)[0])


def _weighted_sum(messages: tf.Tensor, receivers: tf.Tensor, weights: tf.Tensor, nodes: tf.Tensor) -> tf.Tensor:
    """Sum of ``messages`` [2 x edges, ...] x ``weights`` [edges] (each direction) into ``receivers``."""
    weighted = messages * _per_edge(tf.concat([weights, weights], axis=0), messages)
    return tf.math.unsorted_segment_sum(weighted, receivers, nodes)


def chebyshev_basis(
    graph: tfgnn.GraphTensor,
    state: tf.Tensor,
    order: int,
    edge_set: str = EDGES,
    weights: tf.Tensor | None = None,
    first: tf.Tensor | None = None,
) -> list[tf.Tensor]:
    """[T_0(L~)x, ..., T_{order-1}(L~)x] for the scaled Laplacian L~ = 2L/lambda_max - I.

    With the normalised Laplacian L = I - D^-1/2 A D^-1/2 and lambda_max taken as 2 (its upper
    bound, as in Defferrard et al. and common practice), L~ = -D^-1/2 A D^-1/2. The recurrence
    T_k = 2 L~ T_{k-1} - T_{k-2} gives K-hop filters with K-1 sparse products. ``weights``
    (:func:`symmetric_edge_weights` without self loops) and ``first`` (T_1 x) may be passed in
    when already computed (:func:`chebsage_features`).
    """
    if weights is None:
        weights, _ = symmetric_edge_weights(graph, self_loops=False, edge_set=edge_set)

    def scaled_laplacian(x: tf.Tensor) -> tf.Tensor:
        return -normalized_adjacency_product(graph, x, weights, edge_set)

    basis = [state]
    if order > 1:
        basis.append(scaled_laplacian(state) if first is None else first)
    for _ in range(2, order):
        basis.append(2.0 * scaled_laplacian(basis[-1]) - basis[-2])
    return basis


def chebsage_features(graph: tfgnn.GraphTensor, state: tf.Tensor, order: int, edge_set: str = EDGES) -> list[tf.Tensor]:
    """:func:`chebyshev_basis` then :func:`directional_means`: order + 2 tensors like ``state``.

    One gather of ``state`` over both edge directions serves T_1 x and both means (two gathers
    of [2 x edges, ...] per layer instead of three at order 3, and one buffer of [2 x edges,
    configs, units] messages fewer to keep for the backward pass). Measured on the real unet3d
    file at hops 0 (chebsage, 32 configs): training peak RSS 1.49 -> 1.40 GiB; step time unchanged
    within the noise of a loaded machine.
    """
    senders, receivers = _both_directions(graph, edge_set)
    nodes = tf.shape(state)[0]
    messages = tf.gather(state, senders)
    means = _directional_means_of(messages, receivers, nodes)
    if order == 1:
        return [state, *means]
    weights, _ = symmetric_edge_weights(graph, self_loops=False, edge_set=edge_set)
    first = -_weighted_sum(messages, receivers, weights, nodes)
    return chebyshev_basis(graph, state, order, edge_set, weights, first) + means


def at_node_set(graph: tfgnn.GraphTensor, rows: tf.Tensor, node_set: str) -> tf.Tensor:
    """Per-configurable-node rows [M, ...] as rows of ``node_set``: unchanged on ``cfg``; on ``op``
    placed at each configurable node's op ([N, ...]; every other node gets zeros)."""
    if node_set == CONFIG_NODES:
        return rows
    op_index = graph.node_sets[CONFIG_NODES][OP_INDEX]
    return tf.math.unsorted_segment_sum(rows, op_index, tf.shape(graph.node_sets[NODES][OPCODE])[0])


class NodeEncoder(tf.keras.layers.Layer):
    """Initial node state: opcode embedding joined with the normalised node features."""

    def __init__(self, units: int, opcode_vocab: int = 128, opcode_dim: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.units, self.opcode_vocab, self.opcode_dim = units, opcode_vocab, opcode_dim
        self.embedding = tf.keras.layers.Embedding(opcode_vocab, opcode_dim)
        self.project = tf.keras.layers.Dense(units, activation="gelu")

    def call(self, graph: tfgnn.GraphTensor) -> tf.Tensor:
        nodes = graph.node_sets[NODES]
        opcode = tf.clip_by_value(tf.cast(nodes[OPCODE], tf.int32), 0, self.opcode_vocab - 1)
        return self.project(tf.concat([nodes[NODE_FEAT], self.embedding(opcode)], axis=-1))

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "opcode_vocab": self.opcode_vocab,
            "opcode_dim": self.opcode_dim,
        }


class ConfigEncoder(tf.keras.layers.Layer):
    """Per node of ``node_set`` and configuration, what the configuration adds to the node's
    state: [nodes of node_set, C, units] float32.

    tile: the kernel's tile sizes (a context feature) reach every node of ``node_set`` (the ops,
    or the kernel's one ``cfg`` node): the file's 24 columns, and with ``tile_features`` also the
    6 per-config tile features the cache appends (tpuperf.data.tile_features).
    layout: each configurable node's 18 minor-to-major slots are one-hot encoded (value -1..5;
    padding ``cfg`` nodes carry -2, whose one-hot is all zeros). On ``node_set`` ``cfg`` that is
    the output; on ``op`` the configurable nodes' rows are placed at their ops and every other
    node gets exactly nothing. ``node_state`` [N, D] is the ``op`` nodes' state (read at the
    configurable nodes; needed with ``interaction`` only).

    With ``interaction`` k > 0 (layout only) the encoding also depends on the node's
    config-independent state h [N, D], because what a layout costs depends on the shapes it
    applies to: a learned gather. For each slot group g (output, input, kernel) the node maps h
    to an embedding e[g, v] (k wide) per slot value v (a dimension index, or -1); the value at
    position p of the group selects e[g, value], mixed by a per-position matrix W[g, p], and the
    18 results are summed and projected. So "dimension 2 is minor" can mean "a dimension of
    size 3 is minor", which a config term added to a node term cannot express. Tile configs
    ignore it: they reach every node as a context feature already (a bilinear tile variant
    measured no better).

    With ``operands`` (and ``interaction`` > 0) each group's embeddings e[g, v] come from the
    tensor that group lays out instead of the configurable node alone: output = the node,
    input = its operand of lowest node id, kernel = the next (TpuGraphs files sort edge rows by
    node id, so HLO operand order is not in the file; zeros when absent), through a gelu MLP of that tensor's node
    features and state [NODE_FEAT, h]: so "the input's dim 2 is minor" can mean "a dim of size
    3 of the operand is minor", which the node's own state holds only blurred by message passing.
    """

    def __init__(
        self,
        units: int,
        kind: str,
        interaction: int = 0,
        operands: bool = False,
        tile_features: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.per_node = get_kind(kind).config_per_node
        self.units, self.kind, self.interaction, self.operands = units, kind, interaction, operands
        self.tile_features = tile_features
        self.project = tf.keras.layers.Dense(units, use_bias=False)
        if interaction and self.per_node:
            self.groups = LAYOUT_CONFIG_DIM // LAYOUT_GROUP_SIZE
            if operands:
                self.tensor_side = tf.keras.layers.Dense(units, activation="gelu")
                self.group_side = tf.keras.layers.EinsumDense(
                    "mgh,ghz->mgz", (self.groups, LAYOUT_CONFIG_CLASSES * interaction), bias_axes="gz"
                )
            else:
                self.node_side = tf.keras.layers.Dense(self.groups * LAYOUT_CONFIG_CLASSES * interaction)
            self.position_mix = self.add_weight(
                name="position_mix",
                shape=(self.groups, LAYOUT_GROUP_SIZE, interaction, interaction),
                initializer=tf.keras.initializers.GlorotUniform(),
            )
            self.project_interaction = tf.keras.layers.Dense(units, use_bias=False)

    def build(self, input_shape):
        if self.interaction and self.per_node:  # the interaction reads project's kernel without calling it
            with tf.name_scope(self.project.name):
                self.project.build((None, LAYOUT_CONFIG_DIM * LAYOUT_CONFIG_CLASSES))
        super().build(input_shape)

    def call(self, graph: tfgnn.GraphTensor, node_state: tf.Tensor | None = None, node_set: str = NODES) -> tf.Tensor:
        if not self.per_node:
            config = graph.context[CONFIG]
            if not self.tile_features:
                config = config[..., :TILE_FILE_CONFIG_DIM]
            return self.project(tfgnn.broadcast_context_to_nodes(graph, node_set, feature_value=config))
        return at_node_set(graph, self._encode_configurable(graph, node_state), node_set)

    def _encode_configurable(self, graph: tfgnn.GraphTensor, node_state: tf.Tensor | None) -> tf.Tensor:
        raw = tf.cast(graph.node_sets[CONFIG_NODES][CONFIG], tf.int32)  # [M, C, 18]
        one_hot = tf.one_hot(raw + 1, LAYOUT_CONFIG_CLASSES)  # -2 -> index -1 -> zeros
        nodes, configs = tf.shape(raw)[0], tf.shape(raw)[1]
        one_hot = tf.reshape(one_hot, [nodes, configs, LAYOUT_CONFIG_DIM * LAYOUT_CONFIG_CLASSES])
        if not self.interaction:
            return self.project(one_hot)
        # W[g, p] e[n, g, v] for every (g, p, v) once per node, projected and added to the project
        # weights: a per-node table [M, 126, units] whose rows the one-hot sums, so a config costs
        # one 126-wide product as without interaction (a gather of its 18 rows measured 2x slower).
        op_index = graph.node_sets[CONFIG_NODES][OP_INDEX]
        if self.operands:
            values = self.group_side(self.tensor_side(self._group_tensors(graph, node_state, op_index)))
        else:
            values = self.node_side(tf.gather(node_state, op_index))
        values = tf.reshape(values, [nodes, self.groups, LAYOUT_CONFIG_CLASSES, self.interaction])
        per_node = tf.reshape(tf.einsum("ngvk,gpkr->ngpvr", values, self.position_mix), [nodes, -1, self.interaction])
        table = self.project.kernel + self.project_interaction(per_node)
        return tf.einsum("ncf,nfu->ncu", one_hot, table)

    def _group_tensors(self, graph: tfgnn.GraphTensor, node_state: tf.Tensor, op_index: tf.Tensor) -> tf.Tensor:
        """[M, 3, F + D] float32: [NODE_FEAT, h] of each configurable node (output group), its
        operand of lowest node id (input group) and its next one (kernel group); zeros for a
        missing operand. Operands are taken in node-id order because that is all a file holds:
        TpuGraphs files list edge rows sorted by (consumer, producer) id, not in HLO operand order
        (checked on real files: a dynamic-slice's array operand is not always its first row)."""
        tensor = tf.concat([graph.node_sets[NODES][NODE_FEAT], node_state], axis=-1)
        adjacency = graph.edge_sets[EDGES].adjacency
        producer, consumer = adjacency.source, adjacency.target
        edges = tf.cast(tf.maximum(tf.shape(producer)[0], 1), tf.int64)
        key = tf.cast(producer, tf.int64) * edges + tf.range(edges)[: tf.shape(producer)[0]]  # id order, then row
        none = tf.constant(tf.int64.max, tf.int64)  # what unsorted_segment_min gives an empty segment
        first = tf.math.unsorted_segment_min(key, consumer, tf.shape(tensor)[0])
        is_first = tf.equal(key, tf.gather(first, consumer))
        second = tf.math.unsorted_segment_min(tf.where(is_first, none, key), consumer, tf.shape(tensor)[0])
        rows = [tf.gather(tensor, op_index)]
        for chosen in (tf.gather(first, op_index), tf.gather(second, op_index)):  # [M]: configurable nodes only
            found = chosen < none
            operand = tf.where(found, chosen // edges, 0)  # the producer's node id
            rows.append(tf.where(found[:, tf.newaxis], tf.gather(tensor, operand), 0.0))
        return tf.stack(rows, axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "kind": self.kind,
            "interaction": self.interaction,
            "operands": self.operands,
            "tile_features": self.tile_features,
        }


# TPU tiled layout (https://openxla.org/xla/tiled_layout): the minor-most dim of an array in HBM is
# padded to a multiple of 128 (lanes) and the second-minor to a multiple of 8 (sublanes), the (8, 128)
# tile of 32-bit types (tpuperf.data.tile_features.LANES / SUBLANES); one tile for every element type
# here (bytes already scale with the type).
COST_TERMS = 8  # per slot group: see layout_cost_terms


def _tile_padding(dims: tf.Tensor, minor: tf.Tensor, second: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(padding ratio, log size of the minor-most dim, of the second-minor dim), each [M, C, 3]
    float32, of tensors of ``dims`` [M, 1, 3, 6] float32 (0 past the rank) whose minor-most and
    second-minor dims are the indices ``minor`` and ``second`` [M, C, 3] int32. An index -1 or
    naming a dim of size 0 (past the rank) is no dim: it pads nothing and its log size is 0, so
    rank-1 tensors pad their one dim to 128 and scalars pad nothing."""
    ratios, logs = [], []
    for index, tile in ((minor, LANES), (second, SUBLANES)):
        size = tf.reduce_sum(tf.one_hot(index, dims.shape[-1]) * dims, axis=-1)  # -1 -> 0
        has = size > 0
        size = tf.maximum(size, 1.0)
        ratios.append(tf.where(has, tf.math.ceil(size / tile) * tile / size, 1.0))
        logs.append(tf.math.log(size))
    return ratios[0] * ratios[1], logs[0], logs[1]


def _tensor_bytes(tensors: tf.Tensor) -> tf.Tensor:
    """[M, 3] float32: unpadded bytes of each group's tensor (elements x bytes per element; 0 if absent)."""
    dims = tf.cast(tensors[..., TENSOR_DIMS : TENSOR_DIMS + LAYOUT_GROUP_SIZE], tf.float32)
    return tf.reduce_prod(tf.maximum(dims, 1.0), axis=-1) * tf.cast(tensors[..., TENSOR_BYTES], tf.float32)


def own_padded_bytes(tensors: tf.Tensor) -> tf.Tensor:
    """[M] float32: bytes of a configurable node's three tensors in their own layouts, (8, 128) padded."""
    dims = tf.cast(tensors[:, tf.newaxis, :, TENSOR_DIMS : TENSOR_DIMS + LAYOUT_GROUP_SIZE], tf.float32)
    own = tensors[:, tf.newaxis, :, TENSOR_LAYOUT : TENSOR_LAYOUT + 2]
    own_pad, _, _ = _tile_padding(dims, own[..., 0], own[..., 1])
    return tf.reduce_sum(_tensor_bytes(tensors) * own_pad[:, 0], axis=-1)


def layout_cost_terms(config: tf.Tensor, tensors: tf.Tensor, graph_bytes: tf.Tensor) -> tf.Tensor:
    """What each layout config costs each configurable node's tensors, from physical TPU layout facts.

    ``config`` [M, C, 18] int (minor-to-major values -1..5 of the output, input and kernel
    groups; -1 entries are left to the compiler: a group of only -1 keeps the tensor's own layout,
    the default, and one that sets only its minor-most dim keeps the own layout's order for the
    rest, as real default-search files do; -2 marks a padding node, whose terms are 0);
    ``tensors`` [M, 3, 13] int32, the cache's ``config_tensors`` (raw dims, own minor-to-major,
    bytes per element of the tensor each group lays out; tpuperf.data.preprocess.layout_tensors);
    ``graph_bytes`` [M] float32, the mean :func:`own_padded_bytes` of the node's graph (0 gives 0
    for terms 6-7). Returns [M, C, 3, 8] float32, per group, with ``pad`` the (8, 128) tile
    padding ratio (padded / real elements; :data:`tpuperf.data.tile_features.LANES`) of the chosen layout, ``own`` that
    of the tensor's own layout, ``bytes`` its unpadded size and ``moved`` 1 where the chosen
    layout differs from its own (a copy or transpose: a set entry differs from the own layout's):

    0. log(pad); 1. log1p(bytes x pad) / 16 (about 1 at 10 MB); 2-3. log of the sizes of the
       dims at the minor-most and second-minor positions (0 where there is none);
    4. moved; 5. moved x log1p(bytes x (pad + own)) / 16, the traffic of the copy;
    6. bytes x (pad - own) / graph_bytes, the padding the choice adds, and
    7. moved x bytes x (pad + own) / graph_bytes, the copy's traffic, both relative to the
       graph's mean configurable node so that summing over nodes compares configs of a graph.
    An absent operand (no dims, 0 bytes) gives 0 everywhere.
    """
    shape = tf.shape(config)
    raw = tf.reshape(tf.cast(config, tf.int32), [shape[0], shape[1], 3, LAYOUT_GROUP_SIZE])
    dims = tf.cast(tensors[:, tf.newaxis, :, TENSOR_DIMS : TENSOR_DIMS + LAYOUT_GROUP_SIZE], tf.float32)
    own = tensors[:, tf.newaxis, :, TENSOR_LAYOUT : TENSOR_LAYOUT + LAYOUT_GROUP_SIZE]  # [M, 1, 3, 6]
    is_set = raw >= 0  # configs may set only the leading (minor-most) entries of a group
    minor = tf.where(is_set[..., 0], raw[..., 0], own[..., 0])
    # an unset second-minor entry: the most minor dim of the own layout that is not the chosen minor
    second = tf.where(is_set[..., 1], raw[..., 1], tf.where(own[..., 0] != minor, own[..., 0], own[..., 1]))
    pad, log_minor, log_second = _tile_padding(dims, minor, second)
    own_pad, _, _ = _tile_padding(dims, own[..., 0], own[..., 1])
    present = tf.cast(tf.reduce_any(dims > 0, axis=-1), tf.float32)  # [M, 1, 3]
    moved = present * tf.cast(tf.reduce_any(tf.logical_and(is_set, raw != own), axis=-1), tf.float32)
    nbytes = _tensor_bytes(tensors)[:, tf.newaxis]  # [M, 1, 3]
    relative = tf.math.divide_no_nan(nbytes, graph_bytes[:, tf.newaxis, tf.newaxis])
    terms = [
        tf.math.log(pad),
        tf.math.log1p(nbytes * pad) / 16.0,
        log_minor,
        log_second,
        moved,
        moved * tf.math.log1p(nbytes * (pad + own_pad)) / 16.0,
        relative * (pad - own_pad),
        moved * relative * (pad + own_pad),
    ]
    real = tf.cast(raw[..., 0] != NOT_CONFIGURABLE, tf.float32)  # [M, C, 3]
    return tf.stack(terms, axis=-1) * real[..., tf.newaxis]


class LayoutCostFeatures(tf.keras.layers.Layer):
    """Per configurable node and layout config, an embedding of :func:`layout_cost_terms`:
    ``call(graph, node_set) -> [nodes of node_set, C, units]`` float32 (on ``op``, zeros at
    non-configurable nodes, like :class:`ConfigEncoder`). The 24 terms (8 per slot group) pass a
    gelu MLP (``units`` wide, two layers). ``graph_bytes`` is the mean :func:`own_padded_bytes` of
    each graph's configurable nodes (cfg nodes pooled to their component). Layout only: what
    a config costs is paired here with the dims it lays out, which the GNN does not learn to do
    from 12-24 graphs (README "Why the layout models stop short of the oracle")."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = tf.keras.layers.Dense(units, activation="gelu")
        self.out = tf.keras.layers.Dense(units)

    def call(self, graph: tfgnn.GraphTensor, node_set: str = NODES) -> tf.Tensor:
        nodes = graph.node_sets[CONFIG_NODES]
        tensors = nodes[CONFIG_TENSORS]
        mean = tfgnn.pool_nodes_to_context(graph, CONFIG_NODES, "mean", feature_value=own_padded_bytes(tensors))
        graph_bytes = tfgnn.broadcast_context_to_nodes(graph, CONFIG_NODES, feature_value=mean)
        terms = layout_cost_terms(nodes[CONFIG], tensors, graph_bytes)
        flat = tf.reshape(terms, [tf.shape(terms)[0], tf.shape(terms)[1], 3 * COST_TERMS])
        return at_node_set(graph, self.out(self.hidden(flat)), node_set)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class SAGEConv(tf.keras.layers.Layer):
    """GraphSAGE with mean aggregation, producers and consumers aggregated separately."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.project = tf.keras.layers.Dense(units)

    def features(self, graph: tfgnn.GraphTensor, state: tf.Tensor, edge_set: str = EDGES) -> list[tf.Tensor]:
        return [state, *directional_means(graph, state, edge_set)]

    def call(self, graph: tfgnn.GraphTensor, state: tf.Tensor, edge_set: str = EDGES) -> tf.Tensor:
        return self.project(tf.concat(self.features(graph, state, edge_set), axis=-1))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class ChebConv(tf.keras.layers.Layer):
    """ChebNet: sum_k W_k T_k(L~) x, an order-K polynomial spectral filter (K-hop support)."""

    def __init__(self, units: int, order: int = 3, **kwargs):
        super().__init__(**kwargs)
        if order < 1:
            raise ValueError(f"Chebyshev order must be >= 1, got {order}")
        self.units, self.order = units, order
        self.project = tf.keras.layers.Dense(units)  # one Dense over the stacked basis = sum_k W_k T_k x

    def features(self, graph: tfgnn.GraphTensor, state: tf.Tensor, edge_set: str = EDGES) -> list[tf.Tensor]:
        return chebyshev_basis(graph, state, self.order, edge_set)

    def call(self, graph: tfgnn.GraphTensor, state: tf.Tensor, edge_set: str = EDGES) -> tf.Tensor:
        return self.project(tf.concat(self.features(graph, state, edge_set), axis=-1))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "order": self.order}


class ChebSAGEConv(tf.keras.layers.Layer):
    """ChebNet and GraphSAGE in one layer: their outputs are summed before the activation.

    Summing W_cheb [T_0 x .. T_{K-1} x] + W_sage [x, mean_in, mean_out] is one Dense over the
    concatenation of both feature sets (T_0 x = x is shared), which is how it is computed:
    the spectral branch sees the smooth multi-hop structure of the undirected graph, the SAGE
    branch keeps the direction of data flow that the symmetric Laplacian loses.
    """

    def __init__(self, units: int, order: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.units, self.order = units, order
        self.project = tf.keras.layers.Dense(units)

    def call(self, graph: tfgnn.GraphTensor, state: tf.Tensor, edge_set: str = EDGES) -> tf.Tensor:
        return self.project(tf.concat(chebsage_features(graph, state, self.order, edge_set), axis=-1))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "order": self.order}


class GCNConv(tf.keras.layers.Layer):
    """Kipf & Welling GCN on the symmetrised graph with self-loops (the baseline's convolution)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.project = tf.keras.layers.Dense(units)

    def call(self, graph: tfgnn.GraphTensor, state: tf.Tensor, edge_set: str = EDGES) -> tf.Tensor:
        weights, degree = symmetric_edge_weights(graph, self_loops=True, edge_set=edge_set)
        self_term = state * _per_edge(tf.math.divide_no_nan(1.0, degree), state)
        return self.project(normalized_adjacency_product(graph, state, weights, edge_set) + self_term)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


CONVOLUTIONS = {"sage": SAGEConv, "cheb": ChebConv, "chebsage": ChebSAGEConv, "gcn": GCNConv}


def make_convolution(kind: str, units: int, order: int, **kwargs) -> tf.keras.layers.Layer:
    """A convolution by name: ``sage``, ``cheb``, ``chebsage`` or ``gcn``."""
    if kind not in CONVOLUTIONS:
        raise ValueError(f"unknown convolution {kind!r}; choose from {sorted(CONVOLUTIONS)}")
    if kind in ("cheb", "chebsage"):
        return CONVOLUTIONS[kind](units, order=order, **kwargs)
    return CONVOLUTIONS[kind](units, **kwargs)


def gelu(x: tf.Tensor) -> tf.Tensor:
    """The exact GELU, 0.5 x (1 + erf(x / sqrt(2))), elementwise, dtype of ``x``.

    The value of ``tf.nn.gelu(x)`` (up to float rounding); that one is written with erfc, which
    XLA on CPU computes in two materialised passes over the tensor instead of one.
    """
    return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))


class LayerNorm(tf.keras.layers.LayerNormalization):
    """Keras' LayerNormalization over the last axis (same variables ``gamma``, ``beta`` [units],
    ``epsilon``, same values up to float rounding), computed from the mean and variance of the last
    axis: (x - mean) / sqrt(var + epsilon) * gamma + beta, any leading shape, float32.

    Keras computes a last-axis layer norm as a fused batch norm over a reshaped tensor, which XLA
    on CPU lowers to a reduce-window and recomputes, with the layer's whole elementwise input
    chain, inside every consumer: on [nodes, configs, units] states that made the baseline's
    per-config layers ~3x slower (README "Ranking new programs").
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        mean = tf.reduce_mean(inputs, axis=-1, keepdims=True)
        centred = inputs - mean
        variance = tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True)
        return centred * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta


class ResidualBlock(tf.keras.layers.Layer):
    """x + dropout(gelu(conv(x))), then LayerNorm: keeps deep stacks trainable."""

    def __init__(self, conv: str, units: int, order: int = 3, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.conv_kind, self.units, self.order, self.dropout_rate = conv, units, order, dropout
        self.conv = make_convolution(conv, units, order)
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.norm = LayerNorm()

    def call(
        self, graph: tfgnn.GraphTensor, state: tf.Tensor, training: bool = False, edge_set: str = EDGES
    ) -> tf.Tensor:
        update = self.dropout(gelu(self.conv(graph, state, edge_set)), training=training)
        return self.norm(state + update)

    def get_config(self):
        return {
            **super().get_config(),
            "conv": self.conv_kind,
            "units": self.units,
            "order": self.order,
            "dropout": self.dropout_rate,
        }


class ConfigAttention(tf.keras.layers.Layer):
    """Cross-config attention: each config's graph embedding attends to its graph's reference configs.

    ``call(pooled [G, C, D] float32, mask [G, C] float32) -> [G, C, D]``: LayerNorm(x +
    MultiHeadAttention(query=x, key=value=x)), where the keys of graph g are its slots c <
    ``references`` with mask[g, c] = 1 (the first real configs of the item). A config's output
    therefore depends on itself and on its graph's reference configs only, not on which other
    configs share its batch item: scoring stays exactly invariant to how a graph's configs are
    chunked as long as every chunk leads with the same references (tpuperf.training.scoring.chunk_items).
    Training items are random config samples, so their first ``references`` are a random
    reference set. A component without real configs (an empty slot, the padding component)
    attends uniformly over masked slots; its output is finite and discarded.
    """

    def __init__(self, units: int, references: int, heads: int, **kwargs):
        super().__init__(**kwargs)
        if references < 1 or heads < 1:
            raise ValueError(f"config attention needs references >= 1 and heads >= 1, got {references} and {heads}")
        if units % heads:
            raise ValueError(f"attention heads ({heads}) must divide the config units ({units})")
        self.units, self.references, self.heads = units, references, heads
        self.attention = tf.keras.layers.MultiHeadAttention(heads, units // heads)
        self.norm = tf.keras.layers.LayerNormalization()

    def call(self, pooled: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        is_reference = tf.range(tf.shape(mask)[1]) < self.references  # [C]
        keys = tf.logical_and(mask > 0, is_reference[tf.newaxis, :])  # [G, C]
        attend = tf.broadcast_to(keys[:, tf.newaxis, :], tf.concat([tf.shape(mask), tf.shape(mask)[1:]], 0))
        return self.norm(pooled + self.attention(pooled, pooled, attention_mask=attend))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "references": self.references, "heads": self.heads}


class RuntimeHead(tf.keras.layers.Layer):
    """Pools per-config states of ``node_set``'s nodes to each graph and maps them to a runtime-like score.

    With ``attention_references`` R > 0 the pooled config embeddings pass a ConfigAttention
    (R references, ``attention_heads`` heads) before the score MLP; 0 keeps configs independent.
    """

    def __init__(
        self, units: int, reduce: str = "mean", attention_references: int = 0, attention_heads: int = 1, **kwargs
    ):
        super().__init__(**kwargs)
        self.units, self.reduce = units, reduce
        self.attention_references, self.attention_heads = attention_references, attention_heads
        self.attention = ConfigAttention(units, attention_references, attention_heads) if attention_references else None
        self.hidden = tf.keras.layers.Dense(units, activation="gelu")
        self.out = tf.keras.layers.Dense(1)

    def call(self, graph: tfgnn.GraphTensor, state: tf.Tensor, node_set: str = NODES) -> tf.Tensor:
        pooled = tfgnn.pool_nodes_to_context(graph, node_set, self.reduce, feature_value=state)
        if self.attention is not None:
            pooled = self.attention(pooled, graph.context[CONFIG_MASK])
        return tf.squeeze(self.out(self.hidden(pooled)), axis=-1)  # [components, C]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "reduce": self.reduce,
            "attention_references": self.attention_references,
            "attention_heads": self.attention_heads,
        }
