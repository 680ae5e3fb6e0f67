"""The run artifacts: what training writes and the ensemble, export, benchmarks and Kaggle kernels
read. Their paths and file formats are defined here only.

    <train.runs_dir>/<slug>/<model>/
        predictions/fold_<k>.parquet   one fold's predictions (format below), k = 0 .. train.folds - 1
        report.json                    the run report: per-fold and mean OOF/valid scores, throughput, each
                                       fold's ``state_fingerprint`` (its state.json's ``fingerprint``: the
                                       checkpoints it describes, which the export checks),
                                       ``predicted_from`` (what its predictions were made from, which the
                                       ensemble checks: :data:`PREDICTED_FROM_KEYS`) and ``predictions``, the
                                       digest of each fold file it describes (:func:`prediction_digests`)
                                       (:func:`write_run_report`, :func:`read_run_report`)
        metrics.json                   flat summary ``{"oof": float, "valid": float | null}`` only (a plain
                                       output: ``dvc metrics show runs/*/*/metrics.json``)
        live/                          dvclive plots
    <train.checkpoints_dir>/<slug>/<model>/fold_<k>/
        state.json                     history, early stopping, ``finished``, ``fingerprint`` (data and settings),
                                       ``weights_for``; written last in an epoch
        last-<n>.*                     weights and optimizer after n epochs (n = state.json's ``epochs_done``)
        best.*                         the best epoch's weights (a tf.train.Checkpoint prefix)
        best_oof.parquet               the best epoch's OOF predictions (prediction format below)
    <ensemble.out>/
        ensemble_metrics.json          the DVC metric: valid ensemble score per collection slug + ``mean``
        ensemble_report.json           the ensemble report (:func:`write_ensemble_report`)

``<slug>`` is the collection's slug (``layout-nlp-random``), ``<model>`` a key of ``models`` in
params.yaml.

Fold prediction format (written by :mod:`tpuperf.training.trainer` from
:func:`tpuperf.training.scoring.prediction_frame`): one parquet file per fold with columns

- ``split``     str: ``oof`` (the fold's held-out train graphs, ``train.eval_configs`` sampled configs each), ``valid`` or ``test``
- ``graph_id``  str: the .npz file stem
- ``config_id`` int64: index of the config in the original .npz
- ``pred``      float64: lower = predicted faster (finite)
- ``runtime``   float64: runtime/normaliser for tile, runtime in ns for layout; 0 for test
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from tpuperf.atomic import write_json_atomic
from tpuperf.collection import COLLECTIONS, Collection, get_collection
from tpuperf.config import Config, plain
from tpuperf.errors import TpuperfError

PREDICTIONS_DIR = "predictions"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.json"
LIVE_DIR = "live"
STATE_FILE = "state.json"
BEST_CHECKPOINT = "best"
BEST_OOF_FILE = "best_oof.parquet"
ENSEMBLE_METRICS_FILE = "ensemble_metrics.json"
ENSEMBLE_REPORT_FILE = "ensemble_report.json"
#: keys every run report has (:func:`write_run_report`); ``folds`` is a list with one dict per fold
RUN_REPORT_KEYS = (
    "collection",
    "model",
    "metric",
    "folds",
    "oof_score",
    "valid_score_mean_fold",
    "predicted_from",
    "predictions",
)
#: keys of a run report's ``predicted_from``: the cache's identity (``stats`` and ``graphs``,
#: :meth:`tpuperf.data.cache.CollectionCache.identity`: every split's graphs, those predicted), ``weights_for``
#: (:func:`tpuperf.provenance.weights_provenance`), and the settings that decide the predictions: ``model``
#: (``models.<name>`` merged with ``model_base``) and ``train`` (the train settings a fold's result depends on)
PREDICTED_FROM_KEYS = ("stats", "graphs", "weights_for", "model", "train")
#: keys every ensemble report has (:func:`write_ensemble_report`)
ENSEMBLE_REPORT_KEYS = ("weights", "temperature", "models", "folds", "mean", "collections")
PREDICTION_SPLITS = ("oof", "valid", "test")
PREDICTION_COLUMNS = ("split", "graph_id", "config_id", "pred", "runtime")


class RunArtifactError(TpuperfError, ValueError):
    """A run report or metrics file that is missing, malformed or stale, naming the file."""

    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{self.path}: {problem}")


class PredictionFormatError(RunArtifactError):
    """A fold prediction file that is missing or malformed, naming the file."""


# ---------------------------------------------------------------- paths


def run_dir(runs_dir: Path | str, collection: Collection, model: str) -> Path:
    """``<runs_dir>/<slug>/<model>``: one model's outputs on one collection."""
    return Path(runs_dir, collection.slug, model)


def predictions_dir(runs_dir: Path | str, collection: Collection, model: str) -> Path:
    return run_dir(runs_dir, collection, model) / PREDICTIONS_DIR


def fold_file(fold: int) -> str:
    """``fold_<k>.parquet``: the name of fold ``k``'s predictions in its predictions dir."""
    return f"fold_{fold}.parquet"


def prediction_path(runs_dir: Path | str, collection: Collection, model: str, fold: int) -> Path:
    """Where training writes one fold's predictions."""
    return predictions_dir(runs_dir, collection, model) / fold_file(fold)


def metrics_path(runs_dir: Path | str, collection: Collection, model: str) -> Path:
    """The run's flat summary file (``{"oof", "valid"}``)."""
    return run_dir(runs_dir, collection, model) / METRICS_FILE


def report_path(runs_dir: Path | str, collection: Collection, model: str) -> Path:
    """The run's detailed report (not a DVC metric)."""
    return run_dir(runs_dir, collection, model) / REPORT_FILE


def live_dir(runs_dir: Path | str, collection: Collection, model: str) -> Path:
    """Where dvclive writes the run's learning curves."""
    return run_dir(runs_dir, collection, model) / LIVE_DIR


def fold_checkpoint_dir(checkpoints_dir: Path | str, collection: Collection, model: str, fold: int) -> Path:
    """``<checkpoints_dir>/<slug>/<model>/fold_<k>``: the fold's resume state and best weights
    (:data:`STATE_FILE`, :data:`BEST_CHECKPOINT`)."""
    return Path(checkpoints_dir, collection.slug, model, f"fold_{fold}")


# ---------------------------------------------------------------- which settings a report records

#: train settings that cannot change what a fold learns: left out of the checkpoints' fingerprint and of what a run
#: report records (:func:`trained_with`)
TRAIN_COSMETIC_KEYS = ("verbose", "live", "runs_dir", "checkpoints_dir")


def trained_with(config: Config, model: str) -> dict[str, dict[str, Any]]:
    """``{"model": ..., "train": ...}``: what a run report's ``predicted_from`` records of the settings a run of
    ``model`` was made with (``config.model(model)`` and ``config.train`` as params.yaml holds them, without
    :data:`TRAIN_COSMETIC_KEYS`), as JSON reads them back (:func:`tpuperf.config.plain`). ConfigError for an
    unknown model."""
    train = {k: v for k, v in plain(config.train).items() if k not in TRAIN_COSMETIC_KEYS}
    return {"model": plain(config.model(model)), "train": train}


# ---------------------------------------------------------------- which predictions a report describes


def prediction_digests(runs_dir: Path | str, collection: Collection, model: str) -> dict[str, str]:
    """``{fold_<k>.parquet: sha256 of its bytes (16 hex chars)}`` of every fold file in the run's predictions dir
    (none when it is missing): what a run report's ``predictions`` records, written once every fold is."""
    pred_dir = predictions_dir(runs_dir, collection, model)
    return {p.name: _digest(p) for p in sorted(pred_dir.glob("fold_*.parquet"))}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def check_prediction_digests(
    runs_dir: Path | str, collection: Collection, model: str, report: Mapping[str, Any], folds: int
) -> None:
    """Refuse fold files 0..``folds``-1 that are not the ones ``report`` (the run's :func:`read_run_report`)
    describes: a ``tpuperf train`` stopped after some folds leaves new files beside the previous run's others
    and report, and so does copying a kernel's partial ``runs/`` over local ones. Raises
    :class:`PredictionFormatError` naming the file."""
    recorded = report["predictions"]
    for fold in range(folds):
        path = prediction_path(runs_dir, collection, model, fold)
        digest = _digest(path)
        if recorded.get(path.name) != digest:
            raise PredictionFormatError(
                path,
                f"not the predictions {report_path(runs_dir, collection, model)} describes (sha256 {digest}, "
                f"the report records {recorded.get(path.name, 'none')}): written by another run of train (one "
                f"stopped after some folds, or a partial copy of a kernel's runs/); train {model} on "
                f"{collection.name} again",
            )


# ---------------------------------------------------------------- run reports and metrics


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path: Path, to_make_it: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunArtifactError(path, f"missing: {to_make_it}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RunArtifactError(path, f"unreadable ({exc})") from exc


def _check_run_report(path: Path, report: Any, collection: Collection, model: str, folds: int | None) -> dict:
    if not isinstance(report, dict):
        raise RunArtifactError(path, f"expected a JSON object, got {type(report).__name__}")
    missing = [k for k in RUN_REPORT_KEYS if k not in report]
    if missing:
        raise RunArtifactError(path, f"missing keys {missing} (written by an older tpuperf? re-run train)")
    if (report["collection"], report["model"]) != (collection.name, model):
        raise RunArtifactError(
            path, f"written for {report['collection']} / {report['model']}, not {collection.name} / {model}"
        )
    if not isinstance(report["folds"], list) or (folds is not None and len(report["folds"]) != folds):
        have = len(report["folds"]) if isinstance(report["folds"], list) else report["folds"]
        raise RunArtifactError(path, f"has {have} folds but train.folds is {folds} (stale report?)")
    if not isinstance(report["predictions"], dict):
        raise RunArtifactError(path, f"predictions must map fold files to digests, got {report['predictions']!r}")
    made_from = report["predicted_from"]
    if not isinstance(made_from, dict) or any(k not in made_from for k in PREDICTED_FROM_KEYS):
        raise RunArtifactError(path, f"predicted_from needs keys {list(PREDICTED_FROM_KEYS)}, got {made_from!r}")
    if not _finite(report["oof_score"]):
        raise RunArtifactError(path, f"oof_score is {report['oof_score']!r}, not a finite number")
    valid = report["valid_score_mean_fold"]
    if valid is not None and not _finite(valid):
        raise RunArtifactError(path, f"valid_score_mean_fold is {valid!r}, not a finite number or null")
    return report


def write_run_report(runs_dir: Path | str, collection: Collection, model: str, report: Mapping[str, Any]) -> Path:
    """Write one run's report (keys :data:`RUN_REPORT_KEYS` at least) and its flat summary
    ``{"oof": oof_score, "valid": valid_score_mean_fold}``, each atomically. Returns the report path.

    Raises :class:`RunArtifactError` when the report does not validate (nothing is written then).
    """
    path = report_path(runs_dir, collection, model)
    report = _check_run_report(path, dict(report), collection, model, None)
    write_json_atomic(path, report, sort_keys=True)
    write_json_atomic(
        metrics_path(runs_dir, collection, model),
        {"oof": report["oof_score"], "valid": report["valid_score_mean_fold"]},
        sort_keys=True,
    )
    return path


def read_run_report(runs_dir: Path | str, collection: Collection, model: str, folds: int | None = None) -> dict:
    """One run's report, checked to belong to ``collection`` / ``model`` and (with ``folds``) to
    have exactly ``folds`` folds. ``oof_score`` is a finite float, ``valid_score_mean_fold`` a float or None.

    Raises :class:`RunArtifactError` naming the file when it is missing, unreadable or does not match.
    """
    path = report_path(runs_dir, collection, model)
    return _check_run_report(
        path, _read_json(path, f"train {model} on {collection.name} first"), collection, model, folds
    )


def read_oof_score(runs_dir: Path | str, collection: Collection, model: str, folds: int) -> float:
    """``oof_score`` (mean over folds of the held-out-fold score) of one model's run report
    (:func:`read_run_report`, same errors)."""
    return float(read_run_report(runs_dir, collection, model, folds)["oof_score"])


def write_ensemble_report(out_dir: Path | str, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write the ensemble report (keys :data:`ENSEMBLE_REPORT_KEYS`; ``collections`` maps a collection
    name to its valid scores, ``ensemble`` among them when it has valid graphs; ``mean`` has
    ``ensemble``) and the flat DVC metric: ``{<slug>: ensemble valid score, ..., "mean": ...}``
    (collections without valid graphs and an unscored mean left out). Returns (report, metrics) paths.

    Raises :class:`RunArtifactError` when the report lacks a key (nothing is written then).
    """
    report_file, metrics_file = Path(out_dir, ENSEMBLE_REPORT_FILE), Path(out_dir, ENSEMBLE_METRICS_FILE)
    missing = [k for k in ENSEMBLE_REPORT_KEYS if k not in report]
    if missing:
        raise RunArtifactError(report_file, f"missing keys {missing}")
    flat = {
        get_collection(name).slug: scores["ensemble"]
        for name, scores in report["collections"].items()
        if "ensemble" in scores
    }
    if "ensemble" in report["mean"]:
        flat["mean"] = report["mean"]["ensemble"]
    write_json_atomic(report_file, dict(report))
    write_json_atomic(metrics_file, flat)
    return report_file, metrics_file


def read_ensemble_report(out_dir: Path | str) -> dict:
    """The ensemble report :func:`write_ensemble_report` wrote under ``out_dir``.

    Raises :class:`RunArtifactError` naming the file when it is missing, unreadable or lacks a key.
    """
    path = Path(out_dir, ENSEMBLE_REPORT_FILE)
    report = _read_json(path, "run tpuperf ensemble first")
    missing = [k for k in ENSEMBLE_REPORT_KEYS if not isinstance(report, dict) or k not in report]
    if missing:
        raise RunArtifactError(path, f"missing keys {missing} (written by an older tpuperf? re-run ensemble)")
    return report


# ---------------------------------------------------------------- fold predictions


def _check_predictions(path: Path, df: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise PredictionFormatError(path, f"missing columns {missing} (has {df.columns})")
    if df.height == 0:
        raise PredictionFormatError(path, "no rows")
    kinds = {"split": "string", "graph_id": "string", "config_id": "integer", "pred": "numeric", "runtime": "numeric"}
    for col, kind in kinds.items():
        dtype = df.schema[col]
        ok = {"string": dtype == pl.String, "integer": dtype.is_integer(), "numeric": dtype.is_numeric()}[kind]
        if not ok:
            raise PredictionFormatError(path, f"column {col} has dtype {dtype}, expected {kind}")
    df = df.select(
        pl.col("split"),
        pl.col("graph_id"),
        pl.col("config_id").cast(pl.Int64),
        pl.col("pred").cast(pl.Float64),
        pl.col("runtime").cast(pl.Float64),
    )
    nulls = {c: n for c, n in zip(df.columns, df.null_count().row(0)) if n}
    if nulls:
        raise PredictionFormatError(path, f"null values {nulls}")
    bad_splits = sorted(set(df["split"].unique()) - set(PREDICTION_SPLITS))
    if bad_splits:
        raise PredictionFormatError(path, f"unknown split values {bad_splits}; expected {list(PREDICTION_SPLITS)}")
    bad_pred = df.filter(~pl.col("pred").is_finite())
    if bad_pred.height:
        graphs = sorted(set(bad_pred["graph_id"]))[:5]
        raise PredictionFormatError(path, f"{bad_pred.height} NaN/inf preds (graphs {graphs})")
    if (df["config_id"] < 0).any():
        raise PredictionFormatError(path, "negative config_id")
    unlabelled = df.filter((pl.col("split") != "test") & ~(pl.col("runtime") > 0))
    if unlabelled.height:
        raise PredictionFormatError(path, f"{unlabelled.height} oof/valid rows without a positive runtime")
    dups = df.height - df.select("split", "graph_id", "config_id").n_unique()
    if dups:
        raise PredictionFormatError(path, f"{dups} duplicate (split, graph_id, config_id) rows")
    return df


def _prediction_dirs(
    runs_dir: Path, collections: Sequence[Collection] | None, models: Sequence[str] | None
) -> list[tuple[Collection, str, Path]]:
    """(collection, model, predictions dir) to read: the required ones, or those that exist."""
    if models is not None:
        found = []
        for col in collections or COLLECTIONS:
            for model in models:
                pred_dir = predictions_dir(runs_dir, col, model)
                if not pred_dir.is_dir():
                    raise PredictionFormatError(pred_dir, f"missing: train {model} on {col.name} first")
                found.append((col, model, pred_dir))
        return found
    slugs = [c.slug for c in collections] if collections is not None else ["*"]
    dirs = sorted(p for slug in slugs for p in runs_dir.glob(f"{slug}/*/{PREDICTIONS_DIR}") if p.is_dir())
    if not dirs:
        raise FileNotFoundError(
            f"{runs_dir}: no <collection>/<model>/{PREDICTIONS_DIR}/ directories (train models first)"
        )
    found = []
    for pred_dir in dirs:
        try:
            found.append((get_collection(pred_dir.parent.parent.name), pred_dir.parent.name, pred_dir))
        except ValueError as exc:
            raise PredictionFormatError(pred_dir, str(exc)) from exc
    return found


def _fold_files(pred_dir: Path, collection: Collection, model: str, folds: int | None) -> dict[int, Path]:
    """fold -> file in one predictions dir; with ``folds``, exactly folds 0..folds-1."""
    files = {}
    for path in sorted(pred_dir.glob("fold_*.parquet")):
        suffix = path.stem.removeprefix("fold_")
        if not suffix.isdigit():
            raise PredictionFormatError(path, "file name is not fold_<integer>.parquet")
        files[int(suffix)] = path
    if folds is None:
        if not files:
            raise PredictionFormatError(pred_dir, "no fold_<k>.parquet files (training did not finish)")
        return files
    have = ", ".join(p.name for p in files.values()) or "none"
    for fold in range(folds):
        if fold not in files:
            raise PredictionFormatError(
                pred_dir / fold_file(fold),
                f"missing: {collection.name} / {model} has {have} but train.folds is {folds} "
                "(training stopped early, or ran with fewer folds)",
            )
    extra = sorted(set(files) - set(range(folds)))
    if extra:
        raise PredictionFormatError(
            files[extra[0]], f"unexpected: train.folds is {folds}, so folds are 0..{folds - 1} (stale file?)"
        )
    return files


def read_fold_predictions(
    runs_dir: Path | str,
    folds: int | None = None,
    *,
    collections: Iterable[str] | None = None,
    models: Sequence[str] | None = None,
    splits: Iterable[str] | None = None,
) -> pl.DataFrame:
    """Fold predictions under ``runs_dir``, with ``collection`` (name), ``model`` and ``fold`` columns.

    ``collections`` (names or slugs) restricts what is read. With ``models``, every
    collection (all five unless restricted) x model must have a predictions directory; without,
    whatever exists is read. With ``folds`` (``train.folds``), each collection x model must have
    exactly ``fold_0 .. fold_<folds-1>``: a missing file is an error naming it, since an
    ensemble silently missing folds would still look like a valid submission. ``splits`` keeps
    only those rows (after the whole file is checked), bounding memory.

    Raises FileNotFoundError when nothing was found to read and :class:`PredictionFormatError`
    (naming the file) for missing or malformed predictions.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: no such directory (train models first)")
    wanted = None if collections is None else [get_collection(c) for c in collections]
    keep = None if splits is None else list(splits)
    frames = []
    for collection, model, pred_dir in _prediction_dirs(runs_dir, wanted, models):
        for fold, path in _fold_files(pred_dir, collection, model, folds).items():
            try:
                df = pl.read_parquet(path)
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise PredictionFormatError(path, f"unreadable parquet ({exc})") from exc
            df = _check_predictions(path, df)
            if keep is not None:
                df = df.filter(pl.col("split").is_in(keep))
            frames.append(df.with_columns(collection=pl.lit(collection.name), model=pl.lit(model), fold=pl.lit(fold)))
    return pl.concat(frames).select("collection", "model", "fold", *PREDICTION_COLUMNS)
