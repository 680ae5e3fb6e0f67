"""Fold and model predictions -> one ranking per graph -> a checked submission CSV.

Combining (per collection, per graph). Every member (one model's one fold) scores each config;
its scores become normalised ranks ``r = rank / (n - 1)`` in [0, 1] (0 = predicted fastest,
ties get their average rank), so that members whose raw scores live on different scales
(ListMLE logits, log-runtimes) count alike and only their order matters. The ensemble score is
the weighted mean of the members' ``r``; lower = faster, ties go to the lower config id. A tile row
then ranks each distinct configuration before any repeat (the cache's ``config_first``:
:func:`tpuperf.metrics.rank_configs`), so its top 5 are 5 distinct configurations where the file has them.
Within a model the folds share its weight equally.

Model weights (``ensemble.weights``), per collection:

- ``equal``: every model 1 / M.
- ``oof``: ``softmax(oof_score / temperature)`` over the models, with ``oof_score`` from each
  model's run report (``report.json``; mean over folds of the held-out-fold score on train graphs).
  Softmax because it needs no floor, copes with negative Kendall taus, and has one knob:
  a model ahead by ``temperature`` gets e (2.7x) the weight; a large temperature tends to
  ``equal``, a small one to picking the best model. Out-of-fold and not valid scores, so
  that the valid scores reported in ``ensemble_report.json`` stay a held-out estimate.

A model whose weight is below ``ensemble.min_weight`` is left out and the others' weights are
renormalised (:func:`model_weights`): the submission and the export (``tpuperf rank``) apply the
same rule, so ranking needs to score only the models that count.

Before combining, every model of a collection must have been predicted from the cache ``preprocess.out``
holds now (each run report's ``predicted_from``, :data:`tpuperf.runs.PREDICTED_FROM_KEYS`: stats.json and the
graphs' content hashes): run by hand after ``tpuperf preprocess`` (e.g. other hops) and a re-train of only some
models, or of none, the ensemble refuses, naming the models to train again (:func:`check_predicted_from`). So it
does when a model's params.yaml section (merged with ``model_base``) or the ``train`` section is not the one its
run was trained with (``predicted_from``'s ``model`` and ``train``: an edit without a re-train, :func:`check_settings`;
``tpuperf export`` refuses those weights), except :data:`TRAIN_EXECUTION_KEYS`.

Report (``ensemble_report.json``; the flat DVC metric ``ensemble_metrics.json`` holds only each
collection's and the mean valid ensemble score, see :func:`tpuperf.runs.write_ensemble_report`): per collection, on the valid split and scored exactly as
``tpuperf score`` would score the rows (metrics.py on the submission order), the ensemble, each
model's fold ensemble and the mean of its folds, the mean single fold and the best single fold
(picked on valid itself, so an optimistic reference), the fold ensemble of the highest-weighted
model (``top_model_score``: what ``tpuperf rank --members best`` ranks with), then their means
over collections.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tpuperf.collection import COLLECTIONS, Collection, get_collection
from tpuperf.config import WEIGHT_SCHEMES, Config, PreprocessConfig
from tpuperf.data.cache import STATS_FILE, CollectionCache
from tpuperf.errors import TpuperfError, listing
from tpuperf.metrics import collection_score, ranking_positions, unranked_graphs
from tpuperf.runs import (
    ENSEMBLE_METRICS_FILE,
    ENSEMBLE_REPORT_FILE,
    PredictionFormatError,
    check_prediction_digests,
    read_fold_predictions,
    read_run_report,
    trained_with,
    write_ensemble_report,
)
from tpuperf.submission.csv import identical_labels, rankings_from_predictions, skipped_files, write_submission

log = logging.getLogger(__name__)

MEMBER = ("model", "fold")
SAMPLE_SUBMISSION = "sample_submission.csv"
# train settings that decide how a run executes, not what it learns: its scores and weights agree to float rounding
# (two CPU replicas train like one on the same global batch: tests/test_strategy.py; a graph's configs scored in
# chunks of any size score alike, config attention included: tests/test_models.py, no op mixes configs but the
# attention to the chunk-invariant references, tpuperf.training.scoring.chunk_items); the Kaggle kernels override them
# for their accelerator (kernels.overrides), so a run made there is not another run's for them
TRAIN_EXECUTION_KEYS = ("strategy", "cpu_replicas", "jit_compile", "predict_configs_per_graph")
SUBMISSION_FILES = {"test": "submission.csv", "valid": "valid_submission.csv"}


class EnsembleError(TpuperfError, ValueError):
    """Inputs that cannot be combined into an honest ensemble (bad params, metrics, coverage)."""


@dataclass(frozen=True)
class EnsembleSettings:
    """What ``ensemble.py`` reads from params.yaml (:meth:`from_config`). ``trained_with``: model -> what a run of it
    made with params.yaml's settings records (:func:`tpuperf.runs.trained_with`: ``{"model": ..., "train": ...}``),
    for each of ``models``; ``preprocess``: what each collection's cache must have been built with
    (:meth:`tpuperf.data.cache.CollectionCache.check_built_with`)."""

    models: tuple[str, ...]
    trained_with: Mapping[str, Mapping[str, Mapping[str, Any]]]
    preprocess: PreprocessConfig
    collections: tuple[Collection, ...]
    weights: str
    temperature: float
    min_weight: float
    folds: int
    runs_dir: Path
    data_dir: Path
    cache_dir: Path
    out_dir: Path

    @classmethod
    def from_config(cls, config: Config) -> EnsembleSettings:
        """The ensemble's view of a validated params.yaml (ensemble.*, collections, train.folds/runs_dir, data.out,
        preprocess.out)."""
        return cls(
            models=config.ensemble_models,
            trained_with={m: trained_with(config, m) for m in config.ensemble_models},
            preprocess=config.preprocess,
            collections=tuple(get_collection(slug) for slug in config.collections),
            weights=config.ensemble.weights,
            temperature=config.ensemble.temperature,
            min_weight=config.ensemble.min_weight,
            folds=config.train.folds,
            runs_dir=Path(config.train.runs_dir),
            data_dir=Path(config.data.out),
            cache_dir=Path(config.preprocess.out),
            out_dir=Path(config.ensemble.out),
        )


# ---------------------------------------------------------------- weights


def model_weights(
    oof_scores: Mapping[str, float], scheme: str, temperature: float = 1.0, *, min_weight: float
) -> dict[str, float]:
    """Weight per model (summing to 1): equal, or softmax of out-of-fold score / temperature;
    models below ``min_weight`` are left out (not keys of the result) and the rest renormalised.

    Raises :class:`EnsembleError` for no models, an unknown scheme, a temperature <= 0,
    non-finite scores, or a ``min_weight`` above every model's weight.
    """
    if not oof_scores:
        raise EnsembleError("no models to weight")
    if scheme == "equal":
        return _at_least({m: 1.0 / len(oof_scores) for m in oof_scores}, min_weight)
    if scheme != "oof":
        raise EnsembleError(f"unknown weight scheme {scheme!r}; expected one of {WEIGHT_SCHEMES}")
    if not temperature > 0:
        raise EnsembleError(f"temperature must be > 0, got {temperature}")
    scores = np.array(list(oof_scores.values()), dtype=np.float64)
    if not np.isfinite(scores).all():
        raise EnsembleError(f"oof scores must be finite, got {dict(oof_scores)}")
    z = np.exp((scores - scores.max()) / temperature)
    return _at_least(dict(zip(oof_scores, (z / z.sum()).tolist())), min_weight)


def top_model(weights: Mapping[str, float]) -> str:
    """The highest-weighted model (the first of ``weights`` on a tie): what ``tpuperf rank
    --members best`` scores with alone, reported on valid as ``top_model_score``."""
    return max(weights, key=weights.get)


def _at_least(weights: dict[str, float], min_weight: float) -> dict[str, float]:
    """``weights`` without the models below ``min_weight``, renormalised to sum to 1."""
    kept = {m: w for m, w in weights.items() if w >= min_weight}
    if not kept:
        raise EnsembleError(
            f"ensemble.min_weight {min_weight} is above every model's weight ({_describe_weights(weights)}): "
            "lower it in params.yaml"
        )
    total = sum(kept.values())
    return {m: w / total for m, w in kept.items()}


# ---------------------------------------------------------------- provenance


def check_predicted_from(collection: Collection, made_from: Mapping[str, Mapping[str, Any]], cache: Path) -> None:
    """Refuse models of ``collection`` whose predictions were not made from the cache under ``cache`` (the
    ``preprocess.out`` root) as it is now. ``made_from``: model -> its run report's ``predicted_from``.

    Raises :class:`EnsembleError` naming the collection and the models when they were predicted from
    different caches, or all from one that is not the current one (preprocess ran again, train did not);
    :class:`tpuperf.data.cache.CacheError` when there is no cache to check against.
    """
    current = CollectionCache(cache, collection).identity()
    stale = [m for m, made in made_from.items() if any(made[k] != current[k] for k in current)]
    if not stale:
        return
    fresh = [m for m in made_from if m not in stale]
    what = "; ".join(f"{m}: {' and '.join(k for k in current if made_from[m][k] != current[k])} differ" for m in stale)
    cached = cache / collection.slug
    if fresh:
        problem = (
            f"its models were predicted from different caches: {', '.join(fresh)} from the one in {cached}, "
            f"{', '.join(stale)} from another ({what})"
        )
    else:
        problem = (
            f"every model ({', '.join(stale)}) was predicted from another cache than {cached} holds now ({what}; "
            f"preprocess ran after train?)"
        )
    raise EnsembleError(
        f"{collection.name}: {problem}; {STATS_FILE} decides the transform and pruning, the graphs' content hashes "
        f"the data: train them again ({', '.join(f'dvc repro train@{collection.slug}-{m}' for m in stale)})"
    )


def _differences(
    section: str, was: Mapping[str, Any], now: Mapping[str, Any], keys: list[str], was_in: str, now_in: str
) -> list[str]:
    return [
        f"{section}.{k}: {was.get(k, 'absent')} in {was_in}, {now.get(k, 'absent')} in {now_in}"
        for k in keys
        if was.get(k, "absent") != now.get(k, "absent")
    ]


def setting_differences(
    model: str,
    was: Mapping[str, Mapping[str, Any]],
    now: Mapping[str, Mapping[str, Any]],
    was_in: str = "its run report",
    now_in: str = "params.yaml",
) -> list[str]:
    """``<section>.<key>: <was> in <was_in>, <now> in <now_in>`` for each setting of ``model`` that differs between
    two ``{"model": ..., "train": ...}`` (as :func:`tpuperf.runs.trained_with` gives them, e.g. a run report's
    ``predicted_from``): every model setting, and every train setting ``was`` holds except :data:`TRAIN_EXECUTION_KEYS`."""
    was_model, now_model = was["model"], now["model"]
    keys = list(now_model) + [k for k in was_model if k not in now_model]
    trained = [k for k in was["train"] if k not in TRAIN_EXECUTION_KEYS]
    return _differences(f"models.{model}", was_model, now_model, keys, was_in, now_in) + _differences(
        "train", was["train"], now["train"], trained, was_in, now_in
    )


def check_settings(
    collection: Collection,
    made_from: Mapping[str, Mapping[str, Any]],
    now: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> None:
    """Refuse models of ``collection`` whose run was trained with other settings than params.yaml holds now.
    ``made_from``: model -> its run report's ``predicted_from``; ``now``: model -> :func:`tpuperf.runs.trained_with`
    of params.yaml (:attr:`EnsembleSettings.trained_with`). Compared by :func:`setting_differences` (every model
    setting, and the train settings the report records except :data:`TRAIN_EXECUTION_KEYS`).

    Raises :class:`EnsembleError` naming the collection, each such model and every key that differs with both values.
    """
    stale = {}
    for model, made in made_from.items():
        diff = setting_differences(model, made, now[model])
        if diff:
            stale[model] = "; ".join(diff)
    if stale:
        what = ", ".join(f"{m} was trained with other settings than params.yaml holds ({d})" for m, d in stale.items())
        again = ", ".join(f"dvc repro train@{collection.slug}-{m}" for m in stale)
        raise EnsembleError(f"{collection.name}: {what}: train again ({again})")


def check_reports(settings: EnsembleSettings, collection: Collection, reports: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse the run reports (model -> :func:`tpuperf.runs.read_run_report`) of ``collection`` whose models were
    predicted from another cache than ``settings.cache_dir`` holds now (:func:`check_predicted_from`) or trained
    with other settings than params.yaml holds (:func:`check_settings`): the checks the submission and the export
    (:mod:`tpuperf.ranking.export`) both make. Raises :class:`EnsembleError` (or
    :class:`tpuperf.data.cache.CacheError` without a cache), as those do."""
    made_from = {m: r["predicted_from"] for m, r in reports.items()}
    check_predicted_from(collection, made_from, settings.cache_dir)
    check_settings(collection, made_from, settings.trained_with)


# ---------------------------------------------------------------- combining


def rank_normalise(df: pl.DataFrame) -> pl.DataFrame:
    """Replace ``pred`` by its normalised rank within each member's graph: (rank - 1) / (n - 1).

    Groups are (model, fold, split, graph_id) and, when present, collection. Ties share their
    average rank; a graph with one config gets 0.
    """
    keys = [k for k in ("collection", *MEMBER, "split", "graph_id") if k in df.columns]
    n = pl.len().over(keys)
    rank = pl.col("pred").rank("average").over(keys) - 1.0
    return df.with_columns(pred=pl.when(n > 1).then(rank / (n - 1).cast(pl.Float64)).otherwise(0.0))


def check_coverage(df: pl.DataFrame) -> None:
    """Every member of a collection must score exactly the same (graph, config) rows."""
    members = df.group_by("collection").agg(members=pl.struct(list(MEMBER)).n_unique())
    counts = df.group_by("collection", "graph_id", "config_id").agg(n=pl.len()).join(members, on="collection")
    bad = counts.filter(pl.col("n") != pl.col("members"))
    if bad.height == 0:
        return
    name, graph_id, config_id = bad.row(0)[:3]
    rows = df.filter(
        (pl.col("collection") == name) & (pl.col("graph_id") == graph_id) & (pl.col("config_id") == config_id)
    )
    have = set(rows.select(MEMBER).iter_rows())
    every = set(df.filter(pl.col("collection") == name).select(MEMBER).unique().iter_rows())
    missing = ", ".join(f"{m}/fold_{f}" for m, f in sorted(every - have))
    raise EnsembleError(
        f"{name}: graph {graph_id!r} config {config_id} has no prediction from {missing}; "
        f"{bad.height} (graph, config) rows are not predicted by every model and fold"
    )


def combine(df: pl.DataFrame, weights: Mapping[str, float]) -> pl.DataFrame:
    """Weighted mean of the members' normalised ranks, per (collection, graph_id, config_id).

    ``df``: prediction rows of one split with ``collection``, ``model``, ``fold``, ``graph_id``,
    ``config_id``, ``pred`` (and ``runtime``, kept). ``weights``: per model; each of its folds
    gets an equal share. Returns one row per config with the combined ``pred`` (lower = faster).
    """
    if df.select("split").n_unique() > 1:
        raise EnsembleError(f"combine one split at a time, got {sorted(df['split'].unique())}")
    missing = sorted(set(df["model"].unique()) - set(weights))
    if missing:
        raise EnsembleError(f"no weight for models {missing}")
    check_coverage(df)
    folds = df.group_by("collection", "model").agg(folds=pl.col("fold").n_unique())
    weight = pl.DataFrame(
        {"model": list(weights), "w": list(weights.values())}, schema={"model": pl.String, "w": pl.Float64}
    )
    ranked = rank_normalise(df).join(folds, on=["collection", "model"]).join(weight, on="model")
    ranked = ranked.with_columns(w=pl.col("w") / pl.col("folds"))
    return (
        ranked.group_by("collection", "graph_id", "config_id")
        .agg(pred=(pl.col("pred") * pl.col("w")).sum() / pl.col("w").sum(), runtime=pl.col("runtime").first())
        .sort("collection", "graph_id", "config_id")
    )


# ---------------------------------------------------------------- valid scores


def config_labels(
    cache_dir: Path, collection: Collection, splits: Iterable[str]
) -> dict[tuple[str, str], np.ndarray] | None:
    """``{(collection name, graph_id): config_first}`` (int64 (c,), indexed by config id) of the ``splits``
    (valid / test: every config kept) of a tile collection's cache at ``cache_dir``: what ranks and scores a
    top 5 of distinct configurations (:func:`score_predictions`, the submission rows). None for a collection
    without a top K (layout ranks every config). Raises :class:`tpuperf.data.cache.CacheError` for a missing
    or older cache."""
    if collection.kind.top_k is None:
        return None
    cache = CollectionCache(cache_dir, collection)
    return {(collection.name, g): ids for s in splits for g, ids in cache.config_first(s).items()}


def score_predictions(df: pl.DataFrame, first: Mapping[tuple[str, str], np.ndarray] | None = None) -> dict[str, float]:
    """Competition metric per collection of ranking each graph's configs by ``pred``.

    ``df``: prediction rows (``collection``, ``graph_id``, ``config_id``, ``pred``, ``runtime``), one per config.
    ``first``: ``{(collection name, graph_id): config_first}`` of the tile graphs, or None (no labels: every
    config its own). Rows are ranked as a submission row would be (ascending ``pred``, ties to the lower config
    id: :func:`tpuperf.submission.csv.rankings_from_predictions`) and scored on those positions by
    :func:`tpuperf.metrics.collection_score` with the tile labels (the training scores' function), whose tile
    top 5 is the row's, so the result equals ``tpuperf score`` of the file.
    """
    preds: dict[str, dict[str, np.ndarray]] = {}
    runtimes: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, dict[str, np.ndarray]] = {}
    for (name, graph_id), group in df.sort("config_id").group_by(["collection", "graph_id"], maintain_order=True):
        preds.setdefault(name, {})[graph_id] = ranking_positions(group["pred"].to_numpy())
        runtimes.setdefault(name, {})[graph_id] = group["runtime"].to_numpy()
        same = identical_labels(first, name, graph_id, group["config_id"].to_numpy())
        if same is not None:
            labels.setdefault(name, {})[graph_id] = same
    return {name: collection_score(name, preds[name], runtimes[name], labels.get(name)) for name in preds}


def evaluate(
    valid: pl.DataFrame, weights: Mapping[str, float], first: Mapping[tuple[str, str], np.ndarray] | None = None
) -> dict[str, Any]:
    """Valid-split report of one collection's ensemble against its models and single folds; ``first`` as
    :func:`score_predictions`'s (every score ranked alike)."""
    name = valid["collection"][0]
    ensemble = score_predictions(combine(valid, weights), first)[name]
    models: dict[str, Any] = {}
    singles: dict[str, float] = {}
    for model in weights:
        rows = valid.filter(pl.col("model") == model)
        folds = {
            f"fold_{f}": score_predictions(rows.filter(pl.col("fold") == f), first)[name]
            for f in sorted(rows["fold"].unique())
        }
        singles.update({f"{model}/{f}": s for f, s in folds.items()})
        models[model] = {
            "weight": weights[model],
            "fold_ensemble": score_predictions(combine(rows, {model: 1.0}), first)[name],
            "mean_fold": float(np.mean(list(folds.values()))),
            **folds,
        }
    best = max(singles, key=singles.get)
    mean_fold = float(np.mean(list(singles.values())))
    top = top_model(weights)
    configs = valid.unique(["graph_id", "config_id"])  # every member covers the same configs (combine checks)
    runtimes = {gid: group["runtime"].to_numpy() for (gid,), group in configs.group_by("graph_id")}
    return {
        "graphs": valid["graph_id"].n_unique(),
        "graphs_excluded_constant_runtime": len(unranked_graphs(runtimes)),
        "ensemble": ensemble,
        "mean_single_fold": mean_fold,
        "best_single_fold": singles[best],
        "best_single_fold_member": best,
        "ensemble_minus_mean_fold": ensemble - mean_fold,
        "ensemble_minus_best_fold": ensemble - singles[best],
        "top_model": top,
        "top_model_score": models[top]["fold_ensemble"],
        "models": models,
    }


def summarise(per_collection: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Means over the scored collections (the competition score when all five are there); a
    model's means only when every scored collection kept it (``ensemble.min_weight`` may leave
    it out of some)."""
    scored = {n: c for n, c in per_collection.items() if c.get("graphs")}
    if not scored:
        return {"collections_scored": 0}
    keys = (
        "ensemble",
        "mean_single_fold",
        "best_single_fold",
        "ensemble_minus_mean_fold",
        "ensemble_minus_best_fold",
        "top_model_score",
    )
    summary: dict[str, Any] = {
        "collections_scored": len(scored),
        **{k: float(np.mean([c[k] for c in scored.values()])) for k in keys},
    }
    models = [m for m in next(iter(scored.values()))["models"] if all(m in c["models"] for c in scored.values())]
    for model in models:
        summary[f"{model}_fold_ensemble"] = float(
            np.mean([c["models"][model]["fold_ensemble"] for c in scored.values()])
        )
        summary[f"{model}_mean_fold"] = float(np.mean([c["models"][model]["mean_fold"] for c in scored.values()]))
    return summary


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class EnsembleResult:
    submission: Path
    report_path: Path
    metrics_path: Path
    report: dict[str, Any]


def _describe_weights(weights: Mapping[str, float]) -> str:
    return ", ".join(f"{m} {w:.3f}" for m, w in weights.items())


def _why_skipped(data_dir: Path, collection: Collection, split: str) -> str:
    """Why a collection may have no ``split`` predictions (:func:`tpuperf.submission.csv.skipped_files`): ``": "``
    and its skipped files' reasons, or empty when the download stage listed none of its files as invalid."""
    skipped = skipped_files(data_dir, split, collection)
    return f": {len(skipped)} {split} file(s) skipped: {listing(list(skipped.values()))}" if skipped else ""


def run_ensemble(settings: EnsembleSettings, split: str = "test", out: Path | str | None = None) -> EnsembleResult:
    """Combine every collection's fold predictions; write the ``split`` submission and the valid report.

    Each collection's cache must have been built with ``settings.preprocess`` (CacheError otherwise,
    :meth:`tpuperf.data.cache.CollectionCache.check_built_with`), every model of a collection predicted from it as
    it is now (:func:`check_predicted_from`) and trained with the settings ``trained_with`` holds
    (:func:`check_settings`), its fold files the ones its run report describes
    (:func:`tpuperf.runs.check_prediction_digests`); :class:`EnsembleError` / :class:`~tpuperf.runs.PredictionFormatError`
    otherwise. The submission is checked against ``data_dir``'s ``split`` files (and, for test, the sample
    submission) and written only when valid (:class:`tpuperf.submission.csv.SubmissionError`
    otherwise; a missing row of a file the download listed as invalid names that file).
    :class:`~tpuperf.runs.PredictionFormatError` for a collection without ``split`` predictions, naming
    its files the download listed as invalid when there are any. One collection is held in memory at a time.
    The previous run's ``out`` and ensemble report are removed first, so a refused run leaves none of them.
    """
    if split not in SUBMISSION_FILES:
        raise EnsembleError(f"split must be one of {sorted(SUBMISSION_FILES)}, got {split!r}")
    out = Path(out) if out is not None else settings.out_dir / SUBMISSION_FILES[split]
    # a refused or killed run must not leave the previous run's files looking like its own (`tpuperf submit`
    # would send the old models' submission)
    for previous in (out, settings.out_dir / ENSEMBLE_REPORT_FILE, settings.out_dir / ENSEMBLE_METRICS_FILE):
        if previous.exists():
            previous.unlink()
            log.info(f"removed {previous} of the previous ensemble run (written again when this one succeeds)")
    rankings: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {}
    for collection in settings.collections:
        CollectionCache(settings.cache_dir, collection).check_built_with(settings.preprocess)
        df = read_fold_predictions(
            settings.runs_dir,
            settings.folds,
            collections=[collection.name],
            models=settings.models,
            splits={split, "valid"},
        )
        reports = {m: read_run_report(settings.runs_dir, collection, m, settings.folds) for m in settings.models}
        for m, r in reports.items():
            check_prediction_digests(settings.runs_dir, collection, m, r, settings.folds)
        check_reports(settings, collection, reports)
        oof = {m: float(r["oof_score"]) for m, r in reports.items()}
        weights = model_weights(oof, settings.weights, settings.temperature, min_weight=settings.min_weight)
        df = df.filter(pl.col("model").is_in(list(weights)))
        target = df.filter(pl.col("split") == split)
        if target.height == 0:
            raise PredictionFormatError(
                settings.runs_dir / collection.slug,
                f"no {split} predictions for {collection.name}{_why_skipped(settings.data_dir, collection, split)}",
            )
        first = config_labels(settings.cache_dir, collection, {split, "valid"})
        rankings.update(rankings_from_predictions(combine(target, weights), first))
        valid = df.filter(pl.col("split") == "valid")
        left_out = [m for m in settings.models if m not in weights]
        report[collection.name] = (
            {"oof_scores": oof, "left_out": left_out, **evaluate(valid, weights, first)}
            if valid.height
            else {"graphs": 0}
        )
        line = (
            f"{collection.name}: {len(weights)} models x {settings.folds} folds, weights "
            f"{settings.weights} ({_describe_weights(weights)}); {target['graph_id'].n_unique()} {split} graphs"
        )
        if left_out:
            line += f"; left out (weight < ensemble.min_weight {settings.min_weight}): {', '.join(left_out)}"
        if valid.height:
            r = report[collection.name]
            line += (
                f"; valid: ensemble {r['ensemble']:.4f}, mean fold {r['mean_single_fold']:.4f}, "
                f"best fold {r['best_single_fold']:.4f} ({r['best_single_fold_member']})"
            )
            if r["graphs_excluded_constant_runtime"]:
                line += (
                    f"; {r['graphs_excluded_constant_runtime']} valid graph(s) with fewer than 2 distinct "
                    "runtimes left out of the scores"
                )
        else:
            line += "; no valid graphs to score"
        log.info(line)

    left_out = [c.slug for c in COLLECTIONS if c not in settings.collections]
    if left_out:  # their runs/ (if any) were made by other settings or data: never reused silently
        raise EnsembleError(
            f"params.yaml collections leaves out {', '.join(left_out)}: a submission ranks all five collections; "
            "list them all (the valid scores of the others are logged above)"
        )
    sample = settings.data_dir / SAMPLE_SUBMISSION if split == "test" else None
    write_submission(rankings, out, sample=sample, data_dir=settings.data_dir, split=split)
    checked = f"{settings.data_dir} {split} files" + (f" and {sample}" if sample else "")
    log.info(f"wrote {out}: {len(rankings)} rows, checked against the {checked}")

    full = {
        "weights": settings.weights,
        "temperature": settings.temperature,
        "min_weight": settings.min_weight,
        "models": list(settings.models),
        "folds": settings.folds,
        "mean": summarise(report),
        "collections": report,
    }
    report_path, metrics_path = write_ensemble_report(settings.out_dir, full)
    mean = full["mean"]
    if mean["collections_scored"]:
        log.info(
            f"valid, mean over {mean['collections_scored']} collections: ensemble {mean['ensemble']:.4f}, "
            f"mean single fold {mean['mean_single_fold']:.4f} ({mean['ensemble_minus_mean_fold']:+.4f}), "
            f"best single fold {mean['best_single_fold']:.4f}; wrote {report_path} and {metrics_path}"
        )
    return EnsembleResult(out, report_path, metrics_path, full)
