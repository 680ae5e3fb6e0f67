"""The ranking model: a config-independent GNN shared by all configs of a graph, then a
config-dependent GNN per configuration, pooled to one runtime-like score per config.

    h = NodeEncoder(graph)                        [N, D]    once per graph
    h = ResidualBlock(conv)(h)  x shared_layers   [N, D]    once per graph
    z = Dense(h@S) + ConfigEncoder(graph, h, S)   [S, C, Dc] configs join here
    z = ResidualBlock(conv, S)(z) x config_layers [S, C, Dc] per config
    score = RuntimeHead(z, S)                     [G, C]    lower = predicted faster
                                                            (pooled [G, C, Dc]; with config_attention
                                                            R > 0 configs attend to R references first)

S, the nodes the per-config stage runs on, is ``config_scope``: ``nodes`` = every (kept) node
and edge of the graph (h@S = h); ``configurable`` = the batch's ``cfg`` graph
(tpuperf.training.batches): for layout the M configurable nodes linked by config edges (paths
through non-configurable nodes, tpuperf.data.preprocess.config_edges) with h@S = h at those
nodes; for tile one node per kernel and no edges, h@S = h pooled over the kernel (``readout``).
Configurations act only where they act, so the per-config cost scales with M (or 1), not N.

The split is the speed lever: the shared layers run once for the C configs of a batch item,
and the per-config layers can be narrower (``config_units`` Dc < D): their cost is C times
that of a shared layer of the same width.
With ``tile_features`` (tile) ConfigEncoder also reads the 6 per-config tile features of the cache
(tile count, padding waste and (8, 128) padding of the tiled tensors, tpuperf.data.tile_features).
ConfigEncoder's ``config_interaction`` (layout) lets a layout's encoding depend on h, i.e. on
the shapes the layout applies to (a learned gather, tpuperf.models.layers.ConfigEncoder).
``layout_cost_features`` (layout) adds an embedding of per-node tile-padding and copy terms of
each config computed from the raw dims (tpuperf.models.layers.LayoutCostFeatures) to z.
The official-style baseline is the same composition with ``shared_layers=0``: configuration
features join at the input and every layer runs per configuration (tpuperf.models.build_model).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_gnn as tfgnn

from tpuperf.config import CONFIG_SCOPES
from tpuperf.models.layers import ConfigEncoder, LayoutCostFeatures, NodeEncoder, ResidualBlock, RuntimeHead
from tpuperf.training.batches import CONFIG_EDGES, CONFIG_NODES, EDGES, NODES, OP_INDEX


class RankingModel(tf.keras.Model):
    """Scores every configuration of every graph in a padded batch; drops the padding component."""

    def __init__(
        self,
        kind: str,
        conv: str = "chebsage",
        units: int = 64,
        config_units: int | None = None,
        shared_layers: int = 2,
        config_layers: int = 2,
        cheb_order: int = 3,
        opcode_vocab: int = 128,
        opcode_dim: int = 16,
        dropout: float = 0.0,
        readout: str = "mean",
        config_interaction: int = 0,
        config_operands: bool = False,
        layout_cost_features: bool = False,
        config_attention: int = 0,
        attention_heads: int = 1,
        config_scope: str = "nodes",
        tile_features: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.settings = dict(
            kind=kind,
            conv=conv,
            units=units,
            config_units=config_units,
            shared_layers=shared_layers,
            config_layers=config_layers,
            cheb_order=cheb_order,
            opcode_vocab=opcode_vocab,
            opcode_dim=opcode_dim,
            dropout=dropout,
            readout=readout,
            config_interaction=config_interaction,
            config_operands=config_operands,
            layout_cost_features=layout_cost_features,
            config_attention=config_attention,
            attention_heads=attention_heads,
            config_scope=config_scope,
            tile_features=tile_features,
        )
        if config_scope not in CONFIG_SCOPES:
            raise ValueError(f"config_scope must be one of {', '.join(CONFIG_SCOPES)}, got {config_scope!r}")
        if config_layers < 1:
            raise ValueError("config_layers must be >= 1: configurations need message passing to interact")
        config_units = config_units or units
        self.node_encoder = NodeEncoder(units, opcode_vocab, opcode_dim)
        self.shared_blocks = [ResidualBlock(conv, units, cheb_order, dropout) for _ in range(shared_layers)]
        self.to_config_width = tf.keras.layers.Dense(config_units)
        self.config_encoder = ConfigEncoder(config_units, kind, config_interaction, config_operands, tile_features)
        per_node = self.config_encoder.per_node
        self.cost_features = LayoutCostFeatures(config_units) if layout_cost_features and per_node else None
        self.config_blocks = [ResidualBlock(conv, config_units, cheb_order, dropout) for _ in range(config_layers)]
        self.head = RuntimeHead(config_units, readout, config_attention, attention_heads)

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow here: skipping
    def call(self, graph: tfgnn.GraphTensor, training: bool = False) -> tf.Tensor:  # autograph saves seconds per trace
        state = self.node_encoder(graph)
        for block in self.shared_blocks:
            state = block(graph, state, training=training)
        node_set, edge_set, start = NODES, EDGES, state
        if self.settings["config_scope"] == "configurable":
            node_set, edge_set = CONFIG_NODES, CONFIG_EDGES
            start = self._at_config_nodes(graph, state)
        config_state = tf.expand_dims(self.to_config_width(start), 1) + self.config_encoder(graph, state, node_set)
        if self.cost_features is not None:
            config_state += self.cost_features(graph, node_set)
        for block in self.config_blocks:
            config_state = block(graph, config_state, training=training, edge_set=edge_set)
        return self.head(graph, config_state, node_set)[:-1]  # the last component is padding

    def _at_config_nodes(self, graph: tfgnn.GraphTensor, state: tf.Tensor) -> tf.Tensor:
        """The shared state [N, D] read at the ``cfg`` nodes: [M, D] (layout: at the configurable
        nodes; tile: pooled over the kernel's nodes, one ``cfg`` node per kernel)."""
        if self.config_encoder.per_node:
            return tf.gather(state, graph.node_sets[CONFIG_NODES][OP_INDEX])
        pooled = tfgnn.pool_nodes_to_context(graph, NODES, self.settings["readout"], feature_value=state)
        return tfgnn.broadcast_context_to_nodes(graph, CONFIG_NODES, feature_value=pooled)

    @property
    def attention_references(self) -> int:
        """How many leading configs of each batch item are attention references (0: no attention)."""
        return self.settings["config_attention"]

    def get_config(self):
        return dict(self.settings)
