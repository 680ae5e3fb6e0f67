"""Tiny random preprocessed graphs for model and batching tests (no files involved)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FakeGraph:
    graph_id: str
    node_feat: np.ndarray
    node_opcode: np.ndarray
    edge_index: np.ndarray
    config_feat: np.ndarray
    config_node_pos: np.ndarray | None
    runtime: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.node_feat)

    @property
    def num_edges(self) -> int:
        return len(self.edge_index)

    @property
    def num_configs(self) -> int:
        return len(self.runtime)


def fake_graph(rng: np.random.Generator, kind: str, nodes: int, configs: int, feat_dim: int = 6, name: str = "g") -> FakeGraph:
    """A random DAG in topological order: each node consumes one or two earlier nodes."""
    edges = []
    for u in range(1, nodes):
        for v in rng.choice(u, size=min(u, rng.integers(1, 3)), replace=False):
            edges.append((u, v))
    edge_index = np.array(edges, np.int32).reshape(-1, 2)
    if kind == "layout":
        pos = np.sort(rng.choice(nodes, size=max(1, nodes // 3), replace=False)).astype(np.int32)
        config_feat = rng.integers(-1, 4, size=(configs, len(pos), 18)).astype(np.int8)
    else:
        pos = None
        config_feat = rng.normal(size=(configs, 24)).astype(np.float32)
    return FakeGraph(
        name,
        rng.normal(size=(nodes, feat_dim)).astype(np.float32),
        rng.integers(0, 20, size=nodes).astype(np.int32),
        edge_index,
        config_feat,
        pos,
        rng.uniform(1.0, 2.0, size=configs),
    )
