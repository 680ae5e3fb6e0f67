import numpy as np
import pytest
from scipy.stats import kendalltau

from tpuperf.metrics import (
    collection_score,
    competition_score,
    graph_score,
    kendall_tau,
    rank_configs,
    tile_score,
    tile_score_of_ranking,
)


def test_kendall_tau_hand_computed():
    # pairs: (0,1)c (0,2)c (0,3)c (1,2)d (1,3)c (2,3)c -> (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([3, 2, 1], [10, 20, 30]) == pytest.approx(-1.0)


def test_kendall_tau_is_tau_b_with_ties():
    # one tie in pred: concordant 2, discordant 0, n0 = 3, ties_x = 1 -> 2 / sqrt(2 * 3)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / np.sqrt(6))
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, 200).astype(float)  # many ties
    runtime = pred + rng.normal(0, 2, 200) + 10
    assert kendall_tau(pred, runtime) == pytest.approx(kendalltau(pred, runtime).statistic)


def test_kendall_tau_undefined_cases_are_zero():
    assert kendall_tau([5, 5, 5], [1, 2, 3]) == 0.0  # constant predictions
    assert kendall_tau([1, 2, 3], [7, 7, 7]) == 0.0  # constant runtimes
    assert kendall_tau([1.0], [3.0]) == 0.0  # single config


def test_kendall_tau_rejects_bad_input():
    with pytest.raises(ValueError, match="non-finite"):
        kendall_tau([1, np.nan, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="positive"):
        kendall_tau([1, 2, 3], [0, 0, 0])  # a test file's zeroed runtimes


def test_tile_score_hand_computed():
    runtime = np.array([4, 2, 5, 3, 6, 8, 7], dtype=float)  # best is config 1 (2.0)
    pred_misses_best = np.array([0, 9, 1, 2, 3, 4, 5], dtype=float)  # top5 = 0,2,3,4,5 -> best 3.0
    assert tile_score(pred_misses_best, runtime) == pytest.approx(2 - 3 / 2)
    assert tile_score(runtime, runtime) == pytest.approx(1.0)
    assert tile_score(pred_misses_best, runtime, k=1) == pytest.approx(2 - 4 / 2)
    assert tile_score(pred_misses_best, runtime, k=7) == pytest.approx(1.0)


def test_tile_score_ties_broken_by_index():
    runtime = np.array([9, 9, 9, 9, 9, 1], dtype=float)
    assert tile_score(np.zeros(6), runtime) == pytest.approx(2 - 9)  # top5 = 0..4
    assert tile_score_of_ranking(np.array([5, 0]), runtime) == pytest.approx(1.0)
    assert tile_score_of_ranking(np.array([1, 2, 3]), runtime) == pytest.approx(2 - 9)


def test_tile_score_of_ranking_rejects_bad_ids():
    with pytest.raises(ValueError, match="outside"):
        tile_score_of_ranking(np.array([0, 3]), np.ones(3))
    with pytest.raises(ValueError, match="integer"):
        tile_score_of_ranking(np.array([0.0, 1.0]), np.ones(3))


def test_rank_configs():
    np.testing.assert_array_equal(rank_configs([0.3, 0.1, 0.3, -1.0]), [3, 1, 0, 2])
    with pytest.raises(ValueError, match="non-finite"):
        rank_configs([0.0, np.inf])


def test_collection_and_competition_score():
    preds = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([3.0, 2.0, 1.0])}
    runtimes = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 2.0, 3.0])}
    assert collection_score("layout:xla:random", preds, runtimes) == pytest.approx(0.0)  # (1 + -1) / 2
    assert graph_score("tile:xla", preds["b"], runtimes["b"]) == pytest.approx(1.0)  # top5 holds all 3
    with pytest.raises(ValueError, match="graph ids differ"):
        collection_score("tile:xla", preds, {"a": runtimes["a"]})
    scores = {"tile:xla": 0.9, "layout:xla:random": 0.5, "layout:xla:default": 0.3,
              "layout:nlp:random": 0.8, "layout:nlp:default": 0.5}
    assert competition_score(scores) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown collections"):
        competition_score({"tile": 1.0})
