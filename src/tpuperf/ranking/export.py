"""The ``export`` stage: one collection's trained ensemble -> a self-contained model directory.

    tpuperf export --collection tile:xla      # writes <export.out>/tile-xla/ (format: tpuperf.ranking.ranker)

What goes in is what ``ensemble.py`` combines for the submission: the ``ensemble.models`` whose
weight reaches ``ensemble.min_weight``, each with its ``train.folds`` best-epoch checkpoints
(``checkpoints/<slug>/<model>/fold_<k>/best``; each must have been trained for the current cache and model
settings, its state.json's ``weights_for``: :func:`tpuperf.provenance.weights_provenance`), weighted by
:func:`tpuperf.submission.ensemble.model_weights` from their out-of-fold scores. Those come from the run reports,
refused as the submission refuses them (:func:`tpuperf.submission.ensemble.check_reports`: another cache, edited
settings), and each fold's checkpoint must be the one its report describes (state.json's ``fingerprint`` = the
report's fold ``state_fingerprint``): a ``tpuperf train`` stopped after a fold finished leaves that fold's new
weights beside the previous run's report, its OOF scores and its other folds. The cache's
``stats.json`` (feature transform, pruning mode and hops); the models' agreement on the valid programs
(:func:`valid_member_agreement`, from the runs' valid predictions), which ``tpuperf rank`` shows beside a file's;
``export.outlier_sigma``; and the batch planning the pipeline scored
with (``train.graphs_per_batch``, ``train.batch_slack``, ``train.buckets`` and
``train.predict_configs_per_graph``: :class:`tpuperf.training.batches.BucketPlan`), so that
ranking a test file scores it as its submission row was scored.

A separate stage rather than part of ``ensemble``: it reads the checkpoints and one
collection's cache, so it runs per collection, only when that collection's models or
cache change, and the ensemble stays a cheap pass over parquet files. Weights are stored as
plain arrays (``model.get_weights()`` order) rather than a Keras SavedModel: the subclassed
model is rebuilt from its params.yaml settings, which survives tf-keras upgrades.
The directory is written under a temp name and renamed into place: a failure leaves the
previous export untouched and nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

import tpuperf
from tpuperf.atomic import replaced_dir
from tpuperf.collection import Collection
from tpuperf.config import Config
from tpuperf.data.cache import INDEX_FILE, STATS_FILE, CollectionCache
from tpuperf.errors import TpuperfError
from tpuperf.metrics import has_ranking
from tpuperf.provenance import weights_for_cache
from tpuperf.ranking.ranker import (
    EXPORT_FORMAT,
    MANIFEST,
    build_member_model,
    code_fingerprint,
    graph_agreements,
)
from tpuperf.runs import (
    BEST_CHECKPOINT,
    STATE_FILE,
    check_prediction_digests,
    fold_checkpoint_dir,
    read_fold_predictions,
    read_run_report,
    report_path,
)
from tpuperf.submission.ensemble import EnsembleSettings, check_coverage, check_reports, model_weights

log = logging.getLogger(__name__)


class ExportError(TpuperfError, RuntimeError):
    """The trained models cannot be exported (missing or unfinished checkpoints); names the path."""


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(cache_dir: Path) -> dict[str, str]:
    """``data``: hash of the cache's stats.json and index.parquet (the transform and the graphs it
    was fitted on); ``code``: :func:`tpuperf.ranking.ranker.code_fingerprint`, which the ranker requires of an export."""
    return {"data": _sha256([cache_dir / STATS_FILE, cache_dir / INDEX_FILE]), "code": code_fingerprint()}


def train_opcodes(cache: CollectionCache) -> list[int]:
    """Sorted opcode ids of the (pruned) nodes of the train graphs training learns from: the manifest's
    ``train_opcodes``; the embedding rows of the others were never trained (``tpuperf rank`` warns). A train graph
    without 2 distinct runtimes is left out of training (:func:`tpuperf.metrics.has_ranking`), so of this too."""
    trained = (g for g in cache.graphs("train") if has_ranking(g.runtime))
    return sorted(set().union(*(np.unique(g.node_opcode).tolist() for g in trained)))


def valid_member_agreement(
    runs_dir: Path | str, collection: Collection, models: list[str], reports: dict, folds: int
) -> dict[str, float | int] | None:
    """The manifest's ``valid_member_agreement``: ``{"mean": the mean over the collection's valid graphs of
    :func:`tpuperf.ranking.ranker.member_agreement` of ``models``' valid predictions (each model's ``folds`` combined,
    as ``tpuperf rank`` combines them), "graphs": how many}``, the reference for a ranked file's agreement; None for
    one model or no valid graph with 2 configs. The fold files must be the ones the run ``reports`` describe
    (:class:`tpuperf.runs.PredictionFormatError` otherwise), and every model and fold must score the same valid
    (graph, config) rows (:class:`tpuperf.submission.ensemble.EnsembleError` otherwise)."""
    if len(models) < 2:
        return None
    for m in models:
        check_prediction_digests(runs_dir, collection, m, reports[m], folds)
    valid = read_fold_predictions(runs_dir, folds, collections=[collection.name], models=models, splits={"valid"})
    check_coverage(valid)
    taus = [t for t in graph_agreements(valid, models).values() if t is not None]
    return {"mean": float(np.mean(taus)), "graphs": len(taus)} if taus else None


def _fold_checkpoint(
    checkpoints_dir: Path | str,
    collection: Collection,
    model: str,
    fold: int,
    weights_for: str,
    recorded: str | None,
    report: Path,
) -> Path:
    """The fold's best checkpoint, when its training finished for ``weights_for`` in the run whose ``report`` (the
    model's run report) records ``recorded`` as the fold's ``state_fingerprint`` (else ExportError)."""
    fold_dir = fold_checkpoint_dir(checkpoints_dir, collection, model, fold)
    state_path = fold_dir / STATE_FILE
    again = f"`dvc repro train@{collection.slug}-{model}`"
    if not state_path.is_file():
        raise ExportError(f"{state_path}: missing: train {model} first ({again})")
    state = json.loads(state_path.read_text())
    if not state.get("finished"):
        raise ExportError(f"{state_path}: fold {fold} of {model} has not finished training")
    if state.get("weights_for") != weights_for:
        raise ExportError(
            f"{state_path}: fold {fold} of {model} was trained for other data, model settings or tpuperf sources "
            f"than the cache and params.yaml now hold: train it again ({again})"
        )
    if recorded is None:
        raise ExportError(
            f"{report}: records no state_fingerprint for fold {fold} (an older tpuperf): train again ({again})"
        )
    if state.get("fingerprint") != recorded:
        raise ExportError(
            f"{state_path}: fold {fold} of {model} is not the checkpoint {report} describes (fingerprint "
            f"{str(state.get('fingerprint'))[:12]}, the report records {recorded[:12]}): a train run stopped "
            f"after this fold finished, or run reports copied from elsewhere (a Kaggle kernel's runs/, whose "
            f"checkpoints stay there), so the report's out-of-fold score is another run's; train {model} here "
            f"again ({again})"
        )
    best = fold_dir / BEST_CHECKPOINT
    if not Path(f"{best}.index").is_file():
        raise ExportError(f"{best}.index: missing: fold {fold} of {model} has no best checkpoint")
    return best


def export_collection(config: Config, collection: Collection) -> Path:
    """Write ``<export.out>/<slug>/`` for ``collection`` from params.yaml's settings; returns it.

    Raises :class:`ExportError` for a missing or unfinished fold, or one its run report does not describe, and the
    cache's and ensemble's errors (:class:`tpuperf.data.cache.CacheError`, :class:`tpuperf.runs.RunArtifactError`,
    :class:`tpuperf.submission.ensemble.EnsembleError`) for a missing cache or run report, or a report of another
    cache or settings than params.yaml holds (:func:`tpuperf.submission.ensemble.check_reports`), and
    :class:`tpuperf.runs.PredictionFormatError` for fold predictions the run reports do not describe.
    """
    import tensorflow as tf

    from tpuperf.training.strategy import initialize_devices

    initialize_devices()
    ens = EnsembleSettings.from_config(config)
    train = config.train
    out_root = Path(config.export.out)
    cache = CollectionCache(config.preprocess.out, collection)
    cache.check_built_with(config.preprocess)
    reports = {m: read_run_report(ens.runs_dir, collection, m, ens.folds) for m in ens.models}
    check_reports(ens, collection, reports)
    oof = {m: float(r["oof_score"]) for m, r in reports.items()}
    weights = model_weights(oof, ens.weights, ens.temperature, min_weight=ens.min_weight)

    final = out_root / collection.slug
    with replaced_dir(final) as tmp:
        models = {}
        for name in weights:  # the models ensemble.min_weight keeps, as in the submission
            model_config = config.model(name)
            model = build_member_model(collection.kind.name, model_config, cache.node_feat_dim)
            weights_for = weights_for_cache(asdict(model_config), cache)
            (tmp / name).mkdir()
            for fold in range(ens.folds):
                recorded = reports[name]["folds"][fold].get("state_fingerprint")
                report = report_path(ens.runs_dir, collection, name)
                best = _fold_checkpoint(train.checkpoints_dir, collection, name, fold, weights_for, recorded, report)
                # the best checkpoint also holds the optimizer slots the compiled model tracked: not needed
                tf.train.Checkpoint(model=model).read(str(best)).assert_existing_objects_matched().expect_partial()
                np.savez(tmp / name / f"fold_{fold}.npz", **{f"{i:04d}": w for i, w in enumerate(model.get_weights())})
            models[name] = {
                "params": asdict(model_config),
                "weight": weights[name],
                "oof_score": oof[name],
                "folds": list(range(ens.folds)),
            }
        manifest = {
            "format_version": EXPORT_FORMAT,
            "tpuperf_version": tpuperf.__version__,
            "collection": collection.name,
            "models": models,
            "ensemble": {"weights": ens.weights, "temperature": ens.temperature, "min_weight": ens.min_weight},
            "loss": train.loss,
            "planning": {
                "graphs_per_batch": train.graphs_per_batch,
                "batch_slack": train.batch_slack,
                "predict_configs_per_graph": train.predict_configs_per_graph,
                "buckets": asdict(train.buckets),
            },
            "jit_compile": train.jit_compile,
            "stats": cache.stats,
            "train_opcodes": train_opcodes(cache),
            "outlier_sigma": config.export.outlier_sigma,
            "valid_member_agreement": valid_member_agreement(
                ens.runs_dir, collection, list(weights), reports, ens.folds
            ),
            "fingerprint": fingerprint(cache.dir),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info(
        "wrote %s: %s x %d folds, weights %s, batch planning %s",
        final,
        ", ".join(weights),
        ens.folds,
        ", ".join(f"{m} {w:.3f}" for m, w in weights.items()),
        manifest["planning"],
    )
    return final
