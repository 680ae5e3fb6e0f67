"""GNN ranking models: GraphSAGE, ChebNet, their ChebSAGE hybrid and the official-style baseline."""

from __future__ import annotations

import dataclasses

from tpuperf.config import ModelConfig
from tpuperf.models.layers import (
    ChebConv,
    ChebSAGEConv,
    ConfigAttention,
    ConfigEncoder,
    GCNConv,
    LayoutCostFeatures,
    NodeEncoder,
    ResidualBlock,
    RuntimeHead,
    SAGEConv,
)
from tpuperf.models.model import RankingModel

# The official TpuGraphs baselines: layout = GCN-style residual net with config features
# joined at the configurable nodes; tile = GraphSAGE with config features joined early.
# Both run every layer per configuration.
BASELINE_CONV = {"layout": "gcn", "tile": "sage"}


def build_model(kind: str, model: ModelConfig) -> RankingModel:
    """A RankingModel for collection kind ``tile``/``layout`` from one validated ``models.<name>``
    section (:class:`tpuperf.config.ModelConfig`).

    ``conv: baseline`` picks the official baseline's convolution for the collection's kind;
    ``config_scope`` is the kind's entry.
    """
    settings = dataclasses.asdict(model)
    settings["config_scope"] = model.config_scope[kind]
    if settings["conv"] == "baseline":
        settings["conv"] = BASELINE_CONV[kind]
    return RankingModel(kind=kind, **settings)


__all__ = [
    "BASELINE_CONV",
    "ChebConv",
    "ChebSAGEConv",
    "ConfigAttention",
    "ConfigEncoder",
    "GCNConv",
    "LayoutCostFeatures",
    "NodeEncoder",
    "RankingModel",
    "ResidualBlock",
    "RuntimeHead",
    "SAGEConv",
    "build_model",
]
