"""Valid (or out-of-fold) score of every subset of an ensemble's models, with both folds or one, from existing runs.

No training: reads a pipeline's fold predictions and run reports (``train.runs_dir`` of
``--params``), weights each subset as the ensemble does (``ensemble.weights`` /
``temperature`` / ``min_weight`` over the subset's out-of-fold scores,
:func:`tpuperf.submission.ensemble.model_weights`) and scores its valid predictions with
:func:`tpuperf.submission.ensemble.evaluate`, the code behind ``ensemble_report.json``.
"fold k" keeps only fold k of every model (the weights stay the models' mean-over-folds ones).
What a subset costs in ``tpuperf rank`` is the sum of its members' per-fold times
(``benchmarks/rank_speed.py --models ...``). ``--split oof`` scores each fold's held-out train
graphs instead (no fold combination: a graph is held out by one fold), to pick a subset without
looking at valid.

Usage: python benchmarks/ensemble_subsets.py [--params params.yaml] [--models chebsage sage cheb]
       [--collections layout:xla:random ...] [--split valid|oof]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import polars as pl

from tpuperf.collection import COLLECTIONS, get_collection
from tpuperf.config import load_config
from tpuperf.runs import read_fold_predictions, read_oof_score
from tpuperf.submission.ensemble import EnsembleSettings, config_labels, evaluate, model_weights


def subset_scores(
    preds: pl.DataFrame,
    oof: dict[str, float],
    settings: EnsembleSettings,
    models: list[str],
    split: str = "valid",
    first: dict[tuple[str, str], np.ndarray] | None = None,
) -> list[tuple[tuple[str, ...], str, float]]:
    """(subset, folds label, score) for every non-empty subset of ``models``. ``preds``: one
    collection's prediction rows of ``split`` (``read_fold_predictions`` columns); ``oof``:
    out-of-fold score per model. ``valid``: all folds combined, then each single fold. ``oof``
    (each fold's held-out train graphs, scored by that fold's members only): each fold, then
    their mean. ``first``: the tile labels :func:`tpuperf.submission.ensemble.evaluate` takes (valid; train
    graphs are deduplicated, so their configs are all distinct). Raises what ``model_weights`` / ``evaluate`` raise."""
    folds = sorted(preds["fold"].unique())
    rows = []
    for size in range(1, len(models) + 1):
        for subset in itertools.combinations(models, size):
            weights = model_weights(
                {m: oof[m] for m in subset}, settings.weights, settings.temperature, min_weight=settings.min_weight
            )
            members = preds.filter(pl.col("model").is_in(list(weights)))
            single = {f: evaluate(members.filter(pl.col("fold") == f), weights, first)["ensemble"] for f in folds}
            if split == "valid":
                rows.append((subset, f"{len(folds)} folds", evaluate(members, weights, first)["ensemble"]))
            rows += [(subset, f"fold {f}", score) for f, score in single.items()]
            if split == "oof":
                rows.append((subset, "fold mean", sum(single.values()) / len(single)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params of the pipeline whose runs are read")
    parser.add_argument("--models", nargs="+", default=["chebsage", "sage", "cheb"])
    parser.add_argument(
        "--split", choices=("valid", "oof"), default="valid", help="oof: each fold's held-out train graphs"
    )
    parser.add_argument("--collections", nargs="+", default=[c.name for c in COLLECTIONS if c.kind.name == "layout"])
    args = parser.parse_args(argv)
    settings = EnsembleSettings.from_config(load_config(args.params))
    for name in args.collections:
        collection = get_collection(name)
        preds = read_fold_predictions(
            settings.runs_dir, settings.folds, collections=[collection.name], models=args.models, splits={args.split}
        )
        oof = {m: read_oof_score(settings.runs_dir, collection, m, settings.folds) for m in args.models}
        first = config_labels(settings.cache_dir, collection, ["valid"]) if args.split == "valid" else None
        for subset, label, score in subset_scores(preds, oof, settings, args.models, args.split, first):
            print(f"{collection.name}\t{'+'.join(subset)}\t{label}\t{score:.4f}")


if __name__ == "__main__":
    main()
