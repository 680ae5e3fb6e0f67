import numpy as np
import pytest
from scipy.stats import kendalltau

from tpuperf.collection import COLLECTIONS, LAYOUT, TILE, get_kind
from tpuperf.metrics import (
    collection_score,
    competition_score,
    graph_score,
    has_ranking,
    kendall_tau,
    rank_configs,
    tile_score,
    tile_score_of_ranking,
    unranked_graphs,
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


def test_kendall_tau_constant_predictions_zero_constant_runtimes_undefined():
    assert kendall_tau([5, 5, 5], [1, 2, 3]) == 0.0  # constant predictions: no ordering information
    with pytest.raises(ValueError, match="fewer than 2 distinct runtimes"):
        kendall_tau([1, 2, 3], [7, 7, 7])  # constant runtimes
    with pytest.raises(ValueError, match="fewer than 2 distinct runtimes"):
        kendall_tau([1.0], [3.0])  # single config


def test_has_ranking_and_unranked_graphs():
    assert has_ranking([1.0, 2.0]) and has_ranking([3, 3, 3, 4])
    assert not has_ranking([3.0]) and not has_ranking([5, 5, 5]) and not has_ranking(np.array([]))
    assert unranked_graphs({"b": np.ones(4), "a": np.array([2.0]), "c": np.arange(1.0, 4.0)}) == ["a", "b"]


@pytest.mark.parametrize("collection", ["layout:xla:random", "tile:xla"])
def test_collection_score_leaves_out_constant_runtime_graphs(collection):
    # "a" is ranked perfectly, "b" reversed; "flat" (all equal) and "one" (a single config) have no order
    preds = {"a": np.arange(7.0), "b": -np.arange(7.0), "flat": np.arange(7.0)[::-1], "one": np.array([0.5])}
    runtimes = {"a": np.arange(1.0, 8.0), "b": np.arange(1.0, 8.0), "flat": np.full(7, 4.0), "one": np.array([9.0])}
    expected = np.mean([graph_score(collection, preds[g], runtimes[g]) for g in ("a", "b")])
    assert expected == pytest.approx(0.0 if collection != "tile:xla" else (1.0 + (2 - 3 / 1)) / 2)
    assert collection_score(collection, preds, runtimes) == pytest.approx(expected)
    with pytest.raises(ValueError, match="none of the 2 graph\\(s\\) has 2 distinct runtimes"):
        collection_score(collection, {g: preds[g] for g in ("flat", "one")}, {g: runtimes[g] for g in ("flat", "one")})


def test_real_file_with_identical_configs_is_left_out(shared_data, tmp_path):
    """The real layout:xla:random train file openai_v0_rnn_optimized: 20 identical configs."""
    from conftest import config_with

    from tpuperf.collection import get_collection
    from tpuperf.data.cache import CollectionCache
    from tpuperf.data.preprocess import preprocess_collection

    col = get_collection("layout:xla:random")
    source = col.split_dir(shared_data, "train") / "openai_v0_rnn_optimized.npz"
    if not source.exists():
        pytest.skip(f"{source} not in the shared real files")
    raw = tmp_path / "raw"
    col.split_dir(raw, "train").mkdir(parents=True)
    (col.split_dir(raw, "train") / source.name).symlink_to(source)  # read in place, never copied
    settings = config_with({"preprocess": {"out": str(tmp_path / "cache"), "hops": 1, "jobs": 1}}).preprocess
    preprocess_collection(raw, tmp_path / "cache", col, settings, progress=False)
    graph = CollectionCache(tmp_path / "cache", col).load("train", "openai_v0_rnn_optimized")
    assert graph.num_configs == 1 and not has_ranking(graph.runtime)
    assert unranked_graphs({graph.graph_id: graph.runtime}) == [graph.graph_id]
    ranked = np.array([1.0, 2.0, 3.0])
    preds = {graph.graph_id: np.zeros(1), "other": ranked}
    runtimes = {graph.graph_id: np.asarray(graph.runtime), "other": ranked}
    assert collection_score(col, preds, runtimes) == pytest.approx(1.0)  # the one-config graph is not a 0 in the mean


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


def test_rank_configs_puts_each_distinct_configuration_before_any_repeat():
    """Identical configurations score alike, so a top 5 spent slots on one configuration several times (a real tile
    file holds 25 identical configs): with labels of identity, each distinct one comes first, repeats after."""
    pred = [0.1, 0.2, 0.1, 0.3, 0.2, 0.5, 0.4, 0.6]
    same = [0, 1, 0, 3, 1, 5, 6, 7]  # 2 repeats 0, 4 repeats 1
    np.testing.assert_array_equal(rank_configs(pred), [0, 2, 1, 4, 3, 6, 5, 7])
    np.testing.assert_array_equal(rank_configs(pred, same), [0, 1, 3, 6, 5, 7, 2, 4])
    runtime = np.array([5.0, 4.0, 5.0, 3.0, 4.0, 9.0, 1.0, 2.0])  # the fastest (6) was past the top 5
    assert tile_score_of_ranking(rank_configs(pred), runtime) == pytest.approx(2 - 3.0)
    assert tile_score_of_ranking(rank_configs(pred, same), runtime) == pytest.approx(1.0)
    np.testing.assert_array_equal(rank_configs([0.2, 0.1, 0.3], [0, 0, 0]), [1, 0, 2])  # fewer distinct than 5
    with pytest.raises(ValueError, match=r"same has shape \(2,\), pred \(3,\)"):
        rank_configs([0.2, 0.1, 0.3], [0, 0])


def test_collection_and_competition_score():
    preds = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([3.0, 2.0, 1.0])}
    runtimes = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 2.0, 3.0])}
    assert collection_score("layout:xla:random", preds, runtimes) == pytest.approx(0.0)  # (1 + -1) / 2
    assert graph_score("tile:xla", preds["b"], runtimes["b"]) == pytest.approx(1.0)  # top5 holds all 3
    with pytest.raises(ValueError, match="graph ids differ"):
        collection_score("tile:xla", preds, {"a": runtimes["a"]})
    scores = {
        "tile:xla": 0.9,
        "layout:xla:random": 0.5,
        "layout:xla:default": 0.3,
        "layout:nlp:random": 0.8,
        "layout:nlp:default": 0.5,
    }
    assert competition_score(scores) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown collections"):
        competition_score({"tile": 1.0})


def test_each_collection_kind_holds_its_metric_submission_rule_and_config_layout():
    assert {c.name: c.kind for c in COLLECTIONS} == {
        "tile:xla": TILE,
        "layout:xla:random": LAYOUT,
        "layout:xla:default": LAYOUT,
        "layout:nlp:random": LAYOUT,
        "layout:nlp:default": LAYOUT,
    }
    runtime = np.arange(2.0, 9.0)  # 2..8
    pred = -runtime  # slowest predicted fastest: the top 5 hold runtimes 8..4
    assert graph_score("tile:xla", pred, runtime) == pytest.approx(2 - 4 / 2)
    assert graph_score("layout:nlp:random", pred, runtime) == pytest.approx(-1.0)
    assert (TILE.metric, LAYOUT.metric) == ("tile_score", "kendall_tau")
    assert [TILE.row_length(n) for n in (3, 5, 7)] == [3, 5, 5] and LAYOUT.row_length(7) == 7
    assert (TILE.config_per_node, LAYOUT.config_per_node) == (False, True)
    assert (TILE.normalised_runtime, LAYOUT.normalised_runtime) == (True, False)
    assert get_kind("layout") is LAYOUT
    with pytest.raises(ValueError, match="must be one of tile, layout, got 'tiles'"):
        get_kind("tiles")


def test_collection_score_ranks_a_tile_top_5_with_same_labels():
    """Configs 1 and 2 are config 0 again: by pred the plain top 5 (0..4) misses config 5, the fastest; with the
    labels it holds 0, 3, 4, 5, 6 (the submission's row)."""
    runtime = np.array([3.0, 3.0, 3.0, 4.0, 5.0, 1.0, 6.0])
    pred, same = np.arange(7.0), np.array([0, 0, 0, 3, 4, 5, 6])
    assert tile_score(pred, runtime) == pytest.approx(2 - 3.0)
    assert tile_score(pred, runtime, same=same) == pytest.approx(1.0)
    assert graph_score("tile:xla", pred, runtime, same) == pytest.approx(1.0)
    flat = {"g": pred, "h": pred}
    assert collection_score("tile:xla", flat, {"g": runtime, "h": runtime}, {"g": same, "h": np.arange(7)}) == (
        pytest.approx((1.0 + 2 - 3.0) / 2)
    )
    with pytest.raises(ValueError, match=r"same labels for other graphs: missing \['h'\]"):
        collection_score("tile:xla", flat, {"g": runtime, "h": runtime}, {"g": same})
    with pytest.raises(ValueError, match="layout:xla:random ranks every config"):
        graph_score("layout:xla:random", pred, runtime, same)
