"""The ranking model: a config-independent GNN shared by all configs of a graph, then a
config-dependent GNN per configuration, pooled to one runtime-like score per config.

    h = NodeEncoder(graph)                        [N, D]    once per graph
    h = ResidualBlock(conv)(h)  x shared_layers   [N, D]    once per graph
    z = Dense(h) + ConfigEncoder(graph, h)        [N, C, Dc] configs join here
    z = ResidualBlock(conv)(z)  x config_layers   [N, C, Dc] per config
    score = RuntimeHead(z)                        [G, C]    lower = predicted faster
                                                            (pooled [G, C, Dc]; with config_attention
                                                            R > 0 configs attend to R references first)

The split is the speed lever: the shared layers run once for the C configs of a batch item,
and the per-config layers can be narrower (``config_units`` Dc < D): their cost is C times
that of a shared layer of the same width.
ConfigEncoder's ``config_interaction`` (layout) lets a layout's encoding depend on h, i.e. on
the shapes the layout applies to (a learned gather, tpuperf.models.layers.ConfigEncoder).
The official-style baseline is the same composition with ``shared_layers=0``: configuration
features join at the input and every layer runs per configuration (tpuperf.models.build_model).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_gnn as tfgnn

from tpuperf.models.layers import ConfigEncoder, NodeEncoder, ResidualBlock, RuntimeHead


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
        config_attention: int = 0,
        attention_heads: int = 1,
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
            config_attention=config_attention,
            attention_heads=attention_heads,
        )
        if config_layers < 1:
            raise ValueError("config_layers must be >= 1: configurations need message passing to interact")
        config_units = config_units or units
        self.node_encoder = NodeEncoder(units, opcode_vocab, opcode_dim)
        self.shared_blocks = [ResidualBlock(conv, units, cheb_order, dropout) for _ in range(shared_layers)]
        self.to_config_width = tf.keras.layers.Dense(config_units)
        self.config_encoder = ConfigEncoder(config_units, kind, config_interaction)
        self.config_blocks = [ResidualBlock(conv, config_units, cheb_order, dropout) for _ in range(config_layers)]
        self.head = RuntimeHead(config_units, readout, config_attention, attention_heads)

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow here: skipping
    def call(self, graph: tfgnn.GraphTensor, training: bool = False) -> tf.Tensor:  # autograph saves seconds per trace
        state = self.node_encoder(graph)
        for block in self.shared_blocks:
            state = block(graph, state, training=training)
        state = tf.expand_dims(self.to_config_width(state), 1) + self.config_encoder(graph, state)
        for block in self.config_blocks:
            state = block(graph, state, training=training)
        return self.head(graph, state)[:-1]  # the last component is padding

    @property
    def attention_references(self) -> int:
        """How many leading configs of each batch item are attention references (0: no attention)."""
        return self.settings["config_attention"]

    def get_config(self):
        return dict(self.settings)
