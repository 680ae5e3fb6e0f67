"""Score every configuration of cached graphs with a trained model, and write fold predictions.

Prediction format (read by tpuperf.submission / ensemble.py): one parquet file per fold,
``runs/<collection-slug>/<model>/predictions/fold_<k>.parquet``, columns ``split`` ("oof",
"valid", "test"), ``graph_id``, ``config_id`` (index in the original .npz), ``pred``
(float64, lower = predicted faster) and ``runtime`` (float64 target, 0 for test). Valid and
test rows cover every config; oof rows the ``train.eval_configs`` configs per held-out graph that
early stopping scored (tpuperf.train).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from tpuperf.cache import CachedGraph
from tpuperf.graph import BatchItem, BatchShape, BucketPlan, make_dataset, pack, to_arrays, to_graph_tensor


REUSE_SLACK = 1.25  # a compiled scoring shape is reused for a planned one up to this much larger


def chunk_items(graphs: Iterable[CachedGraph], configs: int, rows: dict[str, np.ndarray] | None = None) -> list[BatchItem]:
    """Items covering every config of each graph (or only ``rows[graph_id]``) in chunks."""
    items = []
    for g in graphs:
        selected = np.arange(g.num_configs) if rows is None else rows[g.graph_id]
        for start in range(0, len(selected), configs):
            items.append(BatchItem(g, selected[start : start + configs]))
    return items


class Scorer:
    """A compiled forward pass over padded batches of a few static shapes, on every replica.

    Each :meth:`score` call plans size buckets (``plan``) from the graphs it scores, with
    ``configs`` config slots per graph, so the shapes never depend on other graphs, except that
    a shape already compiled is reused for a planned one it holds with at most ``REUSE_SLACK``
    more node and edge slots (scores do not depend on padding); the forward pass is traced
    (XLA-compiled) once per distinct shape (:attr:`compilations`). Under a
    multi-replica strategy each replica scores a different batch of the same bucket per step; a
    bucket's batch list is padded with empty batches to a multiple of the replica count.
    """

    def __init__(self, model, plan: BucketPlan, configs: int, kind: str, feat_dim: int, strategy, jit_compile: bool = True):
        import tensorflow as tf

        self.plan, self.configs, self.kind, self.feat_dim, self.strategy = plan, configs, kind, feat_dim, strategy
        forward = tf.function(lambda graph: model(graph, training=False), jit_compile=jit_compile)
        self._forward = forward
        self._shapes: list[BatchShape] = []  # shapes compiled so far
        self._step = tf.function(lambda graph: strategy.run(forward, args=(graph,)))
        # one replica: the GraphTensor is built inside the traced function; built eagerly per
        # batch it cost as much Python time as the forward pass itself
        self._single_step = tf.function(lambda arrays: forward(to_graph_tensor(arrays, kind)[0]), autograph=False)
        self._tf = tf

    def score(self, graphs: Sequence[CachedGraph], rows: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Predicted score for each config row of each graph (``rows`` restricts to a subset)."""
        replicas = self.strategy.num_replicas_in_sync
        out = {g.graph_id: np.full(g.num_configs if rows is None else len(rows[g.graph_id]), np.nan) for g in graphs}
        if not out:
            return out
        chunks = chunk_items(graphs, self.configs, rows)
        buckets = self.plan.plan(graphs, self.configs, items=max(1, round(len(chunks) / len(graphs))))
        position = {g.graph_id: 0 for g in graphs}
        for shape, items in zip(buckets.shapes, buckets.split(chunks)):
            shape = self._compiled_like(shape)
            batches = list(pack(items, shape))
            batches += [[] for _ in range(-len(batches) % replicas)]
            for step, results in enumerate(self._run(batches, shape)):
                for replica, scores in enumerate(results):
                    for slot, item in enumerate(batches[step * replicas + replica]):
                        gid, k = item.graph.graph_id, len(item.rows)
                        out[gid][position[gid] : position[gid] + k] = scores[slot, :k]
                        position[gid] += k
        for gid, values in out.items():
            if not np.isfinite(values).all():
                raise FloatingPointError(f"model produced non-finite scores for graph {gid}")
        return out

    def _compiled_like(self, shape: BatchShape) -> BatchShape:
        """The smallest compiled shape that holds ``shape`` within ``REUSE_SLACK``, else ``shape`` (now compiled)."""
        fits = [s for s in self._shapes if s.configs == shape.configs and s.graphs >= shape.graphs
                and shape.nodes <= s.nodes <= REUSE_SLACK * shape.nodes and shape.edges <= s.edges <= REUSE_SLACK * shape.edges]
        if fits:
            return min(fits, key=lambda s: (s.nodes, s.edges, s.graphs))
        self._shapes.append(shape)
        return shape

    @property
    def compilations(self) -> int:
        """Traces (= XLA compilations with jit_compile) of the forward pass so far: one per batch shape."""
        return self._forward.experimental_get_tracing_count()

    def _run(self, batches: list[list[BatchItem]], shape: BatchShape):
        """Per step, each replica's [graphs, configs] scores as numpy arrays."""
        replicas = self.strategy.num_replicas_in_sync
        if replicas == 1:  # no tf.data/distribution machinery: it costs more than small batches do
            for batch in batches:
                arrays = to_arrays(batch, shape, self.kind, self.feat_dim)
                yield [self._single_step({k: self._tf.constant(v) for k, v in arrays.items()}).numpy()]
            return
        dataset = self.strategy.distribute_datasets_from_function(
            lambda _: make_dataset(lambda: iter(batches), shape, self.kind, self.feat_dim).map(lambda g, _: g))
        iterator = iter(dataset)
        for _ in range(len(batches) // replicas):
            yield [r.numpy() for r in self.strategy.experimental_local_results(self._step(next(iterator)))]


def prediction_frame(split: str, graphs: Sequence, scores: dict[str, np.ndarray],
                     rows: dict[str, np.ndarray] | None = None) -> pl.DataFrame:
    """Rows of the prediction format for one split (graphs are tpuperf.cache.CachedGraph);
    ``rows`` restricts each graph to the config rows its scores belong to."""
    def pick(g, values) -> np.ndarray:
        values = np.asarray(values)
        return values if rows is None else values[rows[g.graph_id]]

    frames = [
        pl.DataFrame(
            {
                "split": split,
                "graph_id": g.graph_id,
                "config_id": pick(g, g.config_ids).astype(np.int64),
                "pred": scores[g.graph_id].astype(np.float64),
                "runtime": pick(g, g.runtime).astype(np.float64),
            }
        )
        for g in graphs
    ]
    return pl.concat(frames) if frames else pl.DataFrame(
        schema={"split": pl.String, "graph_id": pl.String, "config_id": pl.Int64, "pred": pl.Float64, "runtime": pl.Float64}
    )


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write next to the target and rename, so a kill never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)
