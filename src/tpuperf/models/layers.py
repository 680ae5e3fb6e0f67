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
from tpuperf.training.batches import (
    CONFIG,
    CONFIG_MASK,
    CONFIG_NODES,
    EDGES,
    LAYOUT_CONFIG_CLASSES,
    LAYOUT_CONFIG_DIM,
    LAYOUT_GROUP_SIZE,
    NODE_FEAT,
    NODES,
    OP_INDEX,
    OPCODE,
    TILE_FILE_CONFIG_DIM,
)


def _per_edge(weights: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Reshape [edges] weights to broadcast against [edges, ...] messages."""
    return tf.reshape(weights, [-1] + [1] * (like.shape.rank - 1))


def _aggregate(
    graph: tfgnn.GraphTensor, state: tf.Tensor, towards: str, reduce: str, weights=None, edge_set: str = EDGES
) -> tf.Tensor:
    """Pool neighbour states along ``edge_set`` into ``towards`` (TARGET: from producers)."""
    source = tfgnn.SOURCE if towards == tfgnn.TARGET else tfgnn.TARGET
    messages = tfgnn.broadcast_node_to_edges(graph, edge_set, source, feature_value=state)
    if weights is not None:
        messages = messages * _per_edge(weights, messages)
    return tfgnn.pool_edges_to_node(graph, edge_set, towards, reduce, feature_value=messages)


def directional_means(graph: tfgnn.GraphTensor, state: tf.Tensor, edge_set: str = EDGES) -> list[tf.Tensor]:
    """[mean over the op's inputs (producers), mean over its users (consumers)]."""
    return [
        _aggregate(graph, state, tfgnn.TARGET, "mean", edge_set=edge_set),
        _aggregate(graph, state, tfgnn.SOURCE, "mean", edge_set=edge_set),
    ]


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
    """D^-1/2 A D^-1/2 x on the symmetrised graph (both edge directions)."""
    return _aggregate(graph, state, tfgnn.TARGET, "sum", weights, edge_set) + _aggregate(
        graph, state, tfgnn.SOURCE, "sum", weights, edge_set
    )


def chebyshev_basis(graph: tfgnn.GraphTensor, state: tf.Tensor, order: int, edge_set: str = EDGES) -> list[tf.Tensor]:
    """[T_0(L~)x, ..., T_{order-1}(L~)x] for the scaled Laplacian L~ = 2L/lambda_max - I.

    With the normalised Laplacian L = I - D^-1/2 A D^-1/2 and lambda_max taken as 2 (its upper
    bound, as in Defferrard et al. and common practice), L~ = -D^-1/2 A D^-1/2. The recurrence
    T_k = 2 L~ T_{k-1} - T_{k-2} gives K-hop filters with K-1 sparse products.
    """
    weights, _ = symmetric_edge_weights(graph, self_loops=False, edge_set=edge_set)

    def scaled_laplacian(x: tf.Tensor) -> tf.Tensor:
        return -normalized_adjacency_product(graph, x, weights, edge_set)

    basis = [state]
    if order > 1:
        basis.append(scaled_laplacian(state))
    for _ in range(2, order):
        basis.append(2.0 * scaled_laplacian(basis[-1]) - basis[-2])
    return basis


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
        encoded = self._encode_configurable(graph, node_state)  # [M, C, units]
        if node_set == CONFIG_NODES:
            return encoded
        op_index = graph.node_sets[CONFIG_NODES][OP_INDEX]
        return tf.math.unsorted_segment_sum(encoded, op_index, tf.shape(graph.node_sets[NODES][OPCODE])[0])

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
        features = chebyshev_basis(graph, state, self.order, edge_set) + directional_means(graph, state, edge_set)
        return self.project(tf.concat(features, axis=-1))

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


class ResidualBlock(tf.keras.layers.Layer):
    """x + dropout(gelu(conv(x))), then LayerNorm: keeps deep stacks trainable."""

    def __init__(self, conv: str, units: int, order: int = 3, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.conv_kind, self.units, self.order, self.dropout_rate = conv, units, order, dropout
        self.conv = make_convolution(conv, units, order)
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.norm = tf.keras.layers.LayerNormalization()

    def call(
        self, graph: tfgnn.GraphTensor, state: tf.Tensor, training: bool = False, edge_set: str = EDGES
    ) -> tf.Tensor:
        update = self.dropout(tf.nn.gelu(self.conv(graph, state, edge_set)), training=training)
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
