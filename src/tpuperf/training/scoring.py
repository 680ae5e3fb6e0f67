"""Score every configuration of cached graphs with a trained model, and write fold predictions.

Prediction format (defined, read and checked in tpuperf.runs): one parquet file per fold,
``runs/<collection-slug>/<model>/predictions/fold_<k>.parquet``, columns ``split`` ("oof",
"valid", "test"), ``graph_id``, ``config_id`` (index in the original .npz), ``pred``
(float64, lower = predicted faster) and ``runtime`` (float64 target, 0 for test). Valid and
test rows cover every config; oof rows the ``train.eval_configs`` configs per held-out graph that
early stopping scored (tpuperf.training.trainer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

from tpuperf.data.cache import CachedGraph
from tpuperf.training.batches import BatchItem, BatchShape, BucketPlan, make_dataset, pack, to_arrays, to_graph_tensor

REUSE_SLACK = 1.25  # a compiled scoring shape is reused for a planned one up to this much larger


def selected_rows(g: CachedGraph, rows: dict[str, np.ndarray] | None) -> np.ndarray:
    """The config rows of ``g`` to score: all of them, or ``rows[g.graph_id]``."""
    return np.arange(g.num_configs) if rows is None else np.asarray(rows[g.graph_id])


def chunk_items(
    graphs: Iterable[CachedGraph], configs: int, rows: dict[str, np.ndarray] | None = None, references: int = 0
) -> list[BatchItem]:
    """Items covering every config of each graph (or only ``rows[graph_id]``) in chunks of ``configs``.

    With ``references`` R > 0 every chunk of a graph leads with the same R reference rows,
    spread evenly over the selected rows (so a file sorted by anything still gives a spread-out
    set), followed by up to ``configs - R`` of the other rows: the reference set of a
    ConfigAttention model. Raises ValueError unless R < ``configs``.
    """
    if references >= configs:
        raise ValueError(
            f"{references} attention references leave no room for other configs in chunks of {configs}: "
            "raise train.predict_configs_per_graph (or train.buckets.predict_config_nodes for large graphs) "
            "or lower the model's config_attention in params.yaml"
        )
    items = []
    for g in graphs:
        selected = selected_rows(g, rows)
        spread = np.linspace(0, len(selected) - 1, min(references, len(selected))).astype(np.int64)
        lead, rest = selected[spread], np.delete(selected, spread)
        step = configs - len(lead)
        starts = range(0, len(rest), step) if len(rest) else range(min(len(lead), 1))  # references only: one chunk
        items.extend(BatchItem(g, np.concatenate([lead, rest[start : start + step]])) for start in starts)
    return items


class Scorer:
    """A compiled forward pass over padded batches of a few static shapes, on every replica.

    Each :meth:`score` call plans size buckets (``plan``) from the graphs it scores, with
    ``configs`` config slots per graph (fewer in a bucket of large graphs: ``plan.max_config_nodes``
    bounds node slots x configs per batch), so the shapes never depend on other graphs, except that
    a shape already compiled is reused for a planned one it holds with at most ``REUSE_SLACK``
    more node and edge slots (scores do not depend on padding); the forward pass is traced
    (XLA-compiled) once per distinct shape (:attr:`compilations`). Under a
    multi-replica strategy each replica scores a different batch of the same bucket per step; a
    bucket's batch list is padded with empty batches to a multiple of the replica count.

    A model with config attention (``model.attention_references`` R > 0) sees each graph in
    chunks that all lead with the graph's R reference configs (:func:`chunk_items`).
    """

    def __init__(
        self, model, plan: BucketPlan, configs: int, kind: str, feat_dim: int, strategy, jit_compile: bool = True
    ):
        import tensorflow as tf

        self.plan, self.configs, self.kind, self.feat_dim, self.strategy = plan, configs, kind, feat_dim, strategy
        self.references = model.attention_references
        forward = tf.function(lambda graph: model(graph, training=False), jit_compile=jit_compile)
        self._forward = forward
        self._shapes: list[BatchShape] = []  # shapes compiled so far
        # strategy.run of a Python function, not of ``forward`` itself: so each replica device traces (and
        # XLA-compiles) its own program; given ``forward`` with jit_compile, MirroredStrategy over logical CPUs
        # ran replica 1's call on CPU:0, reading its mirrored variables across devices (an XLA error)
        self._step = tf.function(lambda graph: strategy.run(lambda g: forward(g), args=(graph,)))
        # one replica: the GraphTensor is built inside the traced function; built eagerly per
        # batch it cost as much Python time as the forward pass itself
        self._single_step = tf.function(lambda arrays: forward(to_graph_tensor(arrays, kind)[0]), autograph=False)
        self._tf = tf

    def score(self, graphs: Sequence[CachedGraph], rows: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Predicted score for each config row of each graph (``rows`` restricts to a subset)."""
        replicas = self.strategy.num_replicas_in_sync
        out, position = {}, {}  # position: per graph, config row -> its index in out (references recur)
        for g in graphs:
            selected = selected_rows(g, rows)
            out[g.graph_id] = np.full(len(selected), np.nan)
            position[g.graph_id] = np.full(g.num_configs, -1, np.int64)
            position[g.graph_id][selected] = np.arange(len(selected))
        if not out:
            return out
        chunks = len(chunk_items(graphs, self.configs, rows, self.references))
        buckets = self.plan.plan(graphs, self.configs, items=max(1, round(chunks / len(graphs))))
        for planned, members in zip(buckets.shapes, buckets.split(graphs, graph=lambda g: g)):
            items = chunk_items(members, planned.configs, rows, self.references)  # the bucket's configs per graph
            shape = self._compiled_like(planned, members)
            batches = pack(items, shape)
            batches += [[] for _ in range(-len(batches) % replicas)]
            for step, results in enumerate(self._run(batches, shape)):
                for replica, scores in enumerate(results):
                    for slot, item in enumerate(batches[step * replicas + replica]):
                        gid = item.graph.graph_id
                        out[gid][position[gid][item.rows]] = scores[slot, : len(item.rows)]
        for gid, values in out.items():
            if not np.isfinite(values).all():
                raise FloatingPointError(f"model produced non-finite scores for graph {gid}")
        return out

    def _compiled_like(self, shape: BatchShape, graphs: Iterable[CachedGraph]) -> BatchShape:
        """The smallest compiled shape that holds ``shape``'s node and edge budgets within
        ``REUSE_SLACK`` and each of ``graphs`` in its cfg budgets (packing then closes batches at
        them if need be), else ``shape`` (now compiled)."""
        graphs = list(graphs)
        fits = [
            s
            for s in self._shapes
            if s.configs == shape.configs
            and s.graphs >= shape.graphs
            and shape.nodes <= s.nodes <= REUSE_SLACK * shape.nodes
            and shape.edges <= s.edges <= REUSE_SLACK * shape.edges
            and all(g.num_config_nodes < s.config_nodes and g.num_config_edges <= s.config_edges for g in graphs)
        ]
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
            lambda _: make_dataset(lambda: iter(batches), shape, self.kind, self.feat_dim).map(lambda g, _: g)
        )
        iterator = iter(dataset)
        for _ in range(len(batches) // replicas):
            yield [r.numpy() for r in self.strategy.experimental_local_results(self._step(next(iterator)))]


def prediction_frame(
    split: str, graphs: Sequence, scores: dict[str, np.ndarray], rows: dict[str, np.ndarray] | None = None
) -> pl.DataFrame:
    """Rows of the prediction format for one split (graphs are tpuperf.data.cache.CachedGraph);
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
    return (
        pl.concat(frames)
        if frames
        else pl.DataFrame(
            schema={
                "split": pl.String,
                "graph_id": pl.String,
                "config_id": pl.Int64,
                "pred": pl.Float64,
                "runtime": pl.Float64,
            }
        )
    )
