"""benchmarks/ensemble_subsets.py: every model subset x fold choice scored as the ensemble scores it."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import config_with
from test_ensemble import members_frame

from tpuperf.submission.ensemble import EnsembleSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from ensemble_subsets import subset_scores  # noqa: E402


def settings(min_weight: float) -> EnsembleSettings:
    return EnsembleSettings(
        models=("a", "b"),
        trained_with={"a": {"model": {}, "train": {}}, "b": {"model": {}, "train": {}}},
        preprocess=config_with({}).preprocess,
        collections=(),
        weights="oof",
        temperature=0.1,
        min_weight=min_weight,
        folds=2,
        runs_dir=Path("runs"),
        data_dir=Path("data"),
        cache_dir=Path("cache"),
        out_dir=Path("out"),
    )


def test_subsets_and_folds_scored_by_hand():
    runtime = [30, 10, 40, 20]
    perfect, reversed_ = [3.0, 1.0, 4.0, 2.0], [-3.0, -1.0, -4.0, -2.0]
    valid = members_frame(runtime, {("a", 0): perfect, ("a", 1): reversed_, ("b", 0): perfect, ("b", 1): perfect})
    oof = {"a": 0.6, "b": 0.4}  # weights a e^2 / (1 + e^2) ~ 0.88, b ~ 0.12 at temperature 0.1
    got = {(s, label): score for s, label, score in subset_scores(valid, oof, settings(0.0), ["a", "b"])}
    # a's folds cancel (tau 0), fold 0 is perfect (1), fold 1 reversed (-1); b is perfect throughout;
    # together: a's two folds add a constant, so b orders the configs; on fold 1 a's weight wins
    assert got == pytest.approx(
        {
            (("a",), "2 folds"): 0.0,
            (("a",), "fold 0"): 1.0,
            (("a",), "fold 1"): -1.0,
            (("b",), "2 folds"): 1.0,
            (("b",), "fold 0"): 1.0,
            (("b",), "fold 1"): 1.0,
            (("a", "b"), "2 folds"): 1.0,
            (("a", "b"), "fold 0"): 1.0,
            (("a", "b"), "fold 1"): -1.0,
        }
    )
    # ensemble.min_weight applies within a subset: b (~0.12) is left out of a + b, which scores as a
    kept = {(s, label): score for s, label, score in subset_scores(valid, oof, settings(0.2), ["a", "b"])}
    assert [kept[(("a", "b"), f)] for f in ("2 folds", "fold 0", "fold 1")] == pytest.approx([0.0, 1.0, -1.0])


def test_oof_split_scores_each_fold_on_its_own_held_out_graphs():
    runtime = [30, 10, 40, 20]
    perfect, reversed_ = [3.0, 1.0, 4.0, 2.0], [-3.0, -1.0, -4.0, -2.0]
    fold0 = members_frame(runtime, {("a", 0): perfect, ("b", 0): perfect}, split="oof")
    fold1 = members_frame(runtime, {("a", 1): reversed_, ("b", 1): perfect}, split="oof")
    oof_rows = pl.concat([fold0, fold1.with_columns(graph_id=pl.lit("h"))])  # one held-out graph per fold
    got = {
        (s, label): v for s, label, v in subset_scores(oof_rows, {"a": 0.6, "b": 0.4}, settings(0.0), ["a", "b"], "oof")
    }
    assert got == pytest.approx(
        {
            (("a",), "fold 0"): 1.0,
            (("a",), "fold 1"): -1.0,
            (("a",), "fold mean"): 0.0,
            (("b",), "fold 0"): 1.0,
            (("b",), "fold 1"): 1.0,
            (("b",), "fold mean"): 1.0,
            (("a", "b"), "fold 0"): 1.0,
            (("a", "b"), "fold 1"): -1.0,  # a's weight ~0.88 wins
            (("a", "b"), "fold mean"): 0.0,
        }
    )
