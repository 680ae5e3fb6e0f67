"""The competition's metrics (Kaggle predict-ai-model-runtime, Evaluation page; the TpuGraphs paper, Phothilimthana et al., NeurIPS 2023 Datasets and Benchmarks), in numpy/scipy so that scoring needs no TensorFlow.

Conventions shared with the losses and the submission files:

- ``pred`` is runtime-like: lower means predicted faster.
- ``runtime`` is what the metric compares: runtime / normaliser for ``tile:xla``, runtime in ns
  for ``layout:*``.
- Ties in ``pred`` are broken by config index (stable sort), so a ranking is deterministic.
- A tile top 5 holds every distinct configuration before any repeat (identical features; ``same``
  labels, :func:`rank_configs`), as the submission and ``tpuperf rank`` list it. The scorers that can
  know the labels (training's valid and out-of-fold scores, the ensemble's valid report) pass them to
  :func:`collection_score`, so a training-time score is the score of the submission it produces.
- A graph whose configs have fewer than 2 distinct runtimes has no order to predict
  (:func:`has_ranking`): Kendall tau is undefined there, and the tile score is 1.0 whatever
  the prediction, so such graphs say nothing about a model. :func:`collection_score` leaves
  them out of the mean (for tile too), and training leaves them out of its batches and
  out-of-fold scores (:mod:`tpuperf.training.trainer`). Example: a real layout:xla:random train file,
  ``openai_v0_rnn_optimized``, holds 20 identical configs, one after deduplication.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import kendalltau

from tpuperf.collection import BY_NAME, TILE, Collection, get_collection

TILE_TOP_K = TILE.top_k


def _vectors(pred: np.ndarray, runtime: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    runtime = np.asarray(runtime, dtype=np.float64)
    if pred.ndim != 1 or pred.shape != runtime.shape:
        raise ValueError(f"pred {pred.shape} and runtime {runtime.shape} must be 1-D and of equal length")
    if pred.size == 0:
        raise ValueError("no configurations to score")
    if not np.isfinite(pred).all():
        raise ValueError(f"{int((~np.isfinite(pred)).sum())} non-finite predictions")
    if not (np.isfinite(runtime).all() and (runtime > 0).all()):
        raise ValueError("runtimes must be finite and positive (unlabelled test data cannot be scored)")
    return pred, runtime


def has_ranking(runtime: np.ndarray) -> bool:
    """True when the 1-D ``runtime`` holds at least 2 distinct values (see the module docstring)."""
    runtime = np.asarray(runtime)
    return runtime.size >= 2 and bool((runtime != runtime.flat[0]).any())


def unranked_graphs(runtimes: Mapping[str, np.ndarray]) -> list[str]:
    """Sorted ids of the graphs (``{graph_id: runtime}``) without 2 distinct runtimes."""
    return sorted(g for g, runtime in runtimes.items() if not has_ranking(runtime))


def rank_configs(pred: np.ndarray, same: np.ndarray | None = None) -> np.ndarray:
    """Config indices ordered predicted-fastest first (ascending ``pred``, ties by index).

    ``same`` (int, shape of ``pred``): a label per config, equal for configurations with identical features
    (e.g. the id of the first identical one, a tile cache's ``config_first``). With it, every distinct
    configuration (its fastest-predicted config) comes before any repeat, so a top K (the tile
    submission's 5, ``tpuperf rank --top K``) holds K distinct configurations when the graph has them: a
    repeat's measured runtime can only be the same configuration's again. Repeats then follow in order.
    ValueError for a non-1-D or non-finite ``pred`` or a ``same`` of another shape.
    """
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 1:
        raise ValueError(f"pred must be 1-D, got shape {pred.shape}")
    if not np.isfinite(pred).all():
        raise ValueError(f"{int((~np.isfinite(pred)).sum())} non-finite predictions cannot be ranked")
    order = np.argsort(pred, kind="stable")
    if same is None:
        return order
    same = np.asarray(same)
    if same.shape != pred.shape:
        raise ValueError(f"same has shape {same.shape}, pred {pred.shape}")
    _, first = np.unique(same[order], return_index=True)  # each label's first position in the order
    distinct = np.zeros(order.size, dtype=bool)
    distinct[first] = True
    return np.concatenate([order[distinct], order[~distinct]])


def ranking_positions(pred: np.ndarray) -> np.ndarray:
    """float64 (c,): each config's position in :func:`rank_configs` ``(pred)`` (0 = predicted fastest, ties
    broken by index): the ranking a submission row conveys, in which no two configs tie. Scoring these
    rather than raw ``pred`` (whose ties Kendall tau-b counts as ties, e.g. identical configurations of a
    valid or test file, which score alike) gives the score of the row; training's and the ensemble's scores
    both do. ValueError for a non-1-D or non-finite ``pred``.
    """
    order = rank_configs(pred)
    position = np.empty(order.size, dtype=np.float64)
    position[order] = np.arange(order.size)
    return position


def kendall_tau(pred: np.ndarray, runtime: np.ndarray) -> float:
    """Kendall tau-b between predicted and true runtimes of one graph's configs (layout metric).

    tau-b is scipy's default and what the Kaggle metric computes. Constant predictions give
    0.0 (scipy: NaN): they carry no ordering information, which is what tau 0 (random) means.

    Raises:
        ValueError: fewer than 2 distinct runtimes (a single config, or all equal): tau is
            undefined and no score is right; :func:`collection_score` skips such graphs.
    """
    pred, runtime = _vectors(pred, runtime)
    if not has_ranking(runtime):
        raise ValueError(f"Kendall tau is undefined for {runtime.size} config(s) with fewer than 2 distinct runtimes")
    return tau_b(pred, runtime)


def tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-b (scipy's, ties counted as ties) of two float (c,) vectors, c >= 2; 0.0 where it is NaN (either
    vector constant): no order is no agreement. What :func:`kendall_tau` and
    :func:`tpuperf.ranking.ranker.member_agreement` compute."""
    tau = kendalltau(a, b).statistic
    return 0.0 if np.isnan(tau) else float(tau)


def tile_score_of_ranking(ranking: np.ndarray, runtime: np.ndarray, k: int = TILE_TOP_K) -> float:
    """``2 - min(runtime of the first k configs of ranking) / min(runtime)``; 1.0 is perfect.

    This is the form a submission row gives (its top-k config ids). The paper's top-k slowdown
    is ``1 - score``.
    """
    runtime = np.asarray(runtime, dtype=np.float64)
    ranking = np.asarray(ranking)
    if ranking.ndim != 1 or ranking.size == 0 or ranking.dtype.kind not in "iu":
        raise ValueError(f"ranking must be a non-empty 1-D integer array, got {ranking.dtype} {ranking.shape}")
    if ranking.min() < 0 or ranking.max() >= runtime.size:
        raise ValueError(f"ranking ids {ranking.min()}..{ranking.max()} outside 0..{runtime.size - 1}")
    if not (np.isfinite(runtime).all() and (runtime > 0).all()):
        raise ValueError("runtimes must be finite and positive (unlabelled test data cannot be scored)")
    return float(2.0 - runtime[ranking[:k]].min() / runtime.min())


def tile_score(pred: np.ndarray, runtime: np.ndarray, k: int = TILE_TOP_K, same: np.ndarray | None = None) -> float:
    """Tile metric of one kernel from per-config predictions (see :func:`tile_score_of_ranking`).

    ``pred``, ``runtime``: float (c,). ``same``: int (c,) or None, the labels :func:`rank_configs` takes
    (equal for identical configurations, e.g. a tile cache's ``config_first``): the top k is then the
    submission's, every distinct configuration before any repeat. ValueError for mismatched shapes, no
    configs, non-finite predictions or non-positive runtimes.
    """
    pred, runtime = _vectors(pred, runtime)
    return tile_score_of_ranking(rank_configs(pred, same), runtime, k)


# Kind.metric -> the function scoring one graph
GRAPH_METRICS = {"tile_score": tile_score, "kendall_tau": kendall_tau}


def graph_score(
    collection: Collection | str, pred: np.ndarray, runtime: np.ndarray, same: np.ndarray | None = None
) -> float:
    """The metric of ``collection`` for one graph: tile score or Kendall tau.

    ``pred``, ``runtime``: float (c,). ``same``: int (c,) labels of identical configurations, for a
    collection with a top K only (tile: :func:`tile_score`); ValueError when given for one that ranks
    every config (layout: Kendall tau compares the whole ranking, repeats included).
    """
    col = collection if isinstance(collection, Collection) else get_collection(collection)
    if same is None:
        return GRAPH_METRICS[col.kind.metric](pred, runtime)
    if col.kind.top_k is None:
        raise ValueError(f"{col.name} ranks every config: its metric takes no 'same' labels")
    return GRAPH_METRICS[col.kind.metric](pred, runtime, same=same)


def collection_score(
    collection: Collection | str,
    preds: Mapping[str, np.ndarray],
    runtimes: Mapping[str, np.ndarray],
    same: Mapping[str, np.ndarray] | None = None,
) -> float:
    """Mean per-graph metric over the graphs of one collection; the mappings keyed by graph id.

    ``preds[g]``, ``runtimes[g]``: float (c_g,). ``same``: None, or for a tile collection ``{graph_id:
    int (c_g,)}`` of every graph, the labels of identical configurations (a tile cache's ``config_first``
    at the scored rows), so that each top 5 is ranked as the submission ranks it (:func:`rank_configs`).
    Graphs without 2 distinct runtimes (:func:`unranked_graphs`) are left out of the mean.

    Raises:
        ValueError: the ids differ (``same``'s too), there is no graph, no graph has 2 distinct
            runtimes, or ``same`` is given for a collection without a top K (:func:`graph_score`).
    """
    if set(preds) != set(runtimes):
        only_pred = sorted(set(preds) - set(runtimes))[:5]
        only_true = sorted(set(runtimes) - set(preds))[:5]
        raise ValueError(f"graph ids differ: predicted only {only_pred}, labelled only {only_true}")
    if same is not None and set(same) != set(preds):
        raise ValueError(
            f"same labels for other graphs: missing {sorted(set(preds) - set(same))[:5]}, "
            f"extra {sorted(set(same) - set(preds))[:5]}"
        )
    if not preds:
        raise ValueError("no graphs to score")
    unranked = set(unranked_graphs(runtimes))
    if len(unranked) == len(preds):
        raise ValueError(
            f"none of the {len(preds)} graph(s) has 2 distinct runtimes (e.g. {sorted(unranked)[:3]}): "
            "nothing to rank, so the score is undefined"
        )
    return float(
        np.mean(
            [
                graph_score(collection, preds[g], runtimes[g], None if same is None else same[g])
                for g in preds
                if g not in unranked
            ]
        )
    )


def competition_score(scores: Mapping[str, float]) -> float:
    """Mean of the per-collection scores (keys are collection names, e.g. ``tile:xla``).

    This is the competition score only when all five collections are present; callers that
    score a subset must say so.
    """
    unknown = sorted(set(scores) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown collections {unknown}; known: {sorted(BY_NAME)}")
    if not scores:
        raise ValueError("no collection scores")
    return float(np.mean(list(scores.values())))
