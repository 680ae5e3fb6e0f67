"""Tiny random preprocessed graphs (tpuperf.data.cache.CachedGraph) for model and batching tests, no files."""

from __future__ import annotations

import numpy as np

from tpuperf.data.cache import TENSOR_BYTES, TENSOR_DIMS, TENSOR_LAYOUT, TENSOR_WIDTH, CachedGraph
from tpuperf.data.preprocess import config_edges
from tpuperf.training.batches import TILE_CONFIG_DIM


def fake_graph(
    rng: np.random.Generator, kind: str, nodes: int, configs: int, feat_dim: int = 6, name: str = "g"
) -> CachedGraph:
    """A random DAG in topological order: each node consumes one or two earlier nodes."""
    edges = []
    for u in range(1, nodes):
        for v in rng.choice(u, size=min(u, rng.integers(1, 3)), replace=False):
            edges.append((u, v))
    edge_index = np.array(edges, np.int32).reshape(-1, 2)
    if kind == "layout":
        pos = np.sort(rng.choice(nodes, size=max(1, nodes // 3), replace=False)).astype(np.int32)
        config_feat = rng.integers(-1, 4, size=(configs, len(pos), 18)).astype(np.int8)
        links = config_edges(edge_index, nodes, pos, max_length=4)
        tensors = np.zeros((len(pos), 3, TENSOR_WIDTH), np.int32)  # rank-4 tensors of dims 1..300, own layout
        dims_rng = np.random.default_rng([nodes, configs])  # its own stream: rng draws the same graphs as before
        tensors[:, :, TENSOR_DIMS : TENSOR_DIMS + 4] = dims_rng.integers(1, 300, size=(len(pos), 3, 4))
        tensors[:, :, TENSOR_LAYOUT : TENSOR_LAYOUT + 6] = [3, 2, 1, 0, -1, -1]
        tensors[:, :, TENSOR_BYTES] = 4
    else:
        pos = links = tensors = None
        config_feat = rng.normal(size=(configs, TILE_CONFIG_DIM)).astype(np.float32)
    return CachedGraph(
        graph_id=name,
        split="train",
        node_feat=rng.normal(size=(nodes, feat_dim)).astype(np.float32),
        node_opcode=rng.integers(0, 20, size=nodes).astype(np.int32),
        edge_index=edge_index,
        node_ids=np.arange(nodes),
        config_feat=config_feat,
        config_node_pos=pos,
        config_edges=links,
        config_tensors=tensors,
        runtime=rng.uniform(1.0, 2.0, size=configs),
        config_ids=np.arange(configs),
        config_first=None if kind == "layout" else np.arange(configs),  # a tile cache's: no repeats
    )
