import json
import logging
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import params_with

from tpuperf.collection import COLLECTIONS, get_collection
from tpuperf.config import Config, ConfigError, deep_merge
from tpuperf.data.cache import FORMAT_VERSION, INDEX_FILE, PREPROCESS_KEYS, STATS_FILE, CacheError, CollectionCache
from tpuperf.data.download import MANIFEST_NAME, build_manifest
from tpuperf.data.preprocess import first_identical
from tpuperf.provenance import weights_for_cache
from tpuperf.runs import (
    ENSEMBLE_METRICS_FILE,
    ENSEMBLE_REPORT_FILE,
    PredictionFormatError,
    RunArtifactError,
    prediction_digests,
    read_ensemble_report,
    read_oof_score,
    report_path,
    trained_with,
    write_run_report,
)
from tpuperf.submission.csv import SubmissionError, check_submission, score_submission
from tpuperf.submission.ensemble import (
    EnsembleError,
    EnsembleSettings,
    combine,
    evaluate,
    model_weights,
    rank_normalise,
    run_ensemble,
    score_predictions,
    summarise,
)

REPO = Path(__file__).resolve().parents[1]
FOLDS = 2
MODELS = ("good", "bad")
TEST_CONFIGS = {
    "tile:xla": 7,
    "layout:xla:random": 4,
    "layout:xla:default": 4,
    "layout:nlp:random": 4,
    "layout:nlp:default": 4,
}
VALID_RUNTIME = {"tile": [30, 10, 40, 20, 50, 60, 70], "layout": [30, 10, 40, 20]}


def members_frame(runtime, preds: dict[tuple[str, int], list[float]], collection="layout:xla:random", split="valid"):
    """Prediction rows of one graph ``g``: ``preds[(model, fold)]`` scores its configs."""
    frames = [
        pl.DataFrame(
            {
                "collection": collection,
                "model": model,
                "fold": fold,
                "split": split,
                "graph_id": "g",
                "config_id": np.arange(len(runtime), dtype=np.int64),
                "pred": np.asarray(p, float),
                "runtime": np.asarray(runtime, float),
            }
        )
        for (model, fold), p in preds.items()
    ]
    return pl.concat(frames)


# ---------------------------------------------------------------- pieces


def test_rank_normalise_ties_averaged_and_monotone_invariant():
    pred = np.array([0.3, -2.0, 0.3, 5.0, 1.0])
    df = members_frame(np.arange(1, 6), {("m", 0): pred})
    # ranks (ties averaged) 2.5, 1, 2.5, 5, 4 -> (rank - 1) / 4
    assert rank_normalise(df)["pred"].to_list() == pytest.approx([0.375, 0.0, 0.375, 1.0, 0.75])
    for transform in (lambda x: 3 * np.exp(x) + 7, lambda x: x**3, lambda x: np.arctan(x) - 100):
        again = rank_normalise(members_frame(np.arange(1, 6), {("m", 0): transform(pred)}))
        assert again["pred"].to_list() == rank_normalise(df)["pred"].to_list()
    one = members_frame([5], {("m", 0): [42.0]})
    assert rank_normalise(one)["pred"].to_list() == [0.0]


def test_folds_perfect_and_reversed_by_hand():
    runtime = [30, 10, 40, 20]  # true order: 1, 3, 0, 2
    perfect = [3.0, 1.0, 4.0, 2.0]
    reversed_ = [-3.0, -1.0, -4.0, -2.0]
    df = members_frame(runtime, {("m", 0): perfect, ("m", 1): reversed_})
    # normalised ranks: perfect r = [2/3, 0, 1, 1/3], reversed 1 - r: every config averages 1/2
    combined = combine(df, {"m": 1.0})
    assert combined["pred"].to_list() == pytest.approx([0.5] * 4)
    # all tied -> submission order 0, 1, 2, 3; against true order: pairs (0,2), (1,2), (1,3) agree,
    # (0,1), (0,3), (2,3) disagree -> tau 0, the mean of the folds' +1 and -1
    assert score_predictions(combined) == pytest.approx({"layout:xla:random": 0.0})
    assert score_predictions(df.filter(pl.col("fold") == 0)) == pytest.approx({"layout:xla:random": 1.0})
    assert score_predictions(df.filter(pl.col("fold") == 1)) == pytest.approx({"layout:xla:random": -1.0})
    # two models weighted 3:1 (perfect one first): 0.75 r + 0.25 (1 - r) = 0.25 + 0.5 r
    two = members_frame(runtime, {("a", 0): perfect, ("b", 0): reversed_})
    combined = combine(two, {"a": 0.75, "b": 0.25})
    assert combined["pred"].to_list() == pytest.approx([0.25 + 0.5 * r for r in (2 / 3, 0, 1, 1 / 3)])
    assert score_predictions(combined) == pytest.approx({"layout:xla:random": 1.0})
    # within a model, folds share its weight: a's 2 folds count 0.75 / 2 each
    three = members_frame(runtime, {("a", 0): perfect, ("a", 1): perfect, ("b", 0): reversed_})
    assert combine(three, {"a": 0.75, "b": 0.25})["pred"].to_list() == pytest.approx(combined["pred"].to_list())


def test_tile_ensemble_scored_on_its_top_5():
    runtime = [30, 10, 40, 20, 50, 60, 5]  # best is config 6
    df = members_frame(runtime, {("m", 0): [0, 1, 2, 3, 4, 5, 6]}, collection="tile:xla")
    # top 5 by pred: configs 0..4, best of them 10 -> 2 - 10 / 5 = 0
    assert score_predictions(df) == pytest.approx({"tile:xla": 0.0})
    df = members_frame(runtime, {("m", 0): [0, 1, 2, 3, 9, 9, -1]}, collection="tile:xla")
    assert score_predictions(df) == pytest.approx({"tile:xla": 1.0})


def test_oof_weights_favour_the_better_model():
    assert model_weights({"a": 0.6, "b": 0.4}, "equal", min_weight=0.0) == {"a": 0.5, "b": 0.5}
    w = model_weights({"a": 0.6, "b": 0.4}, "oof", temperature=0.1, min_weight=0.0)
    assert w["a"] == pytest.approx(np.exp(2) / (1 + np.exp(2))) and w["a"] + w["b"] == pytest.approx(1.0)
    # shift-invariant, negative taus fine, small temperature ~ picks the best, large ~ equal
    assert model_weights({"a": -0.4, "b": -0.6}, "oof", 0.1, min_weight=0.0) == pytest.approx(w)
    assert model_weights({"a": 0.6, "b": 0.4}, "oof", 1e-3, min_weight=0.0)["a"] == pytest.approx(1.0)
    assert model_weights({"a": 0.6, "b": 0.4}, "oof", 1e3, min_weight=0.0)["a"] == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(EnsembleError, match="temperature must be > 0"):
        model_weights({"a": 0.6}, "oof", 0.0, min_weight=0.0)
    with pytest.raises(EnsembleError, match="unknown weight scheme 'best'"):
        model_weights({"a": 0.6}, "best", min_weight=0.0)
    with pytest.raises(EnsembleError, match="finite"):
        model_weights({"a": float("nan"), "b": 0.1}, "oof", 0.1, min_weight=0.0)


def test_min_weight_leaves_out_models_and_renormalises():
    w = model_weights({"a": 0.6, "b": 0.4, "c": 0.55}, "oof", 0.1, min_weight=0.0)
    assert w["b"] == pytest.approx(np.exp(-2) / (1 + np.exp(-2) + np.exp(-0.5)))  # ~0.08
    kept = model_weights({"a": 0.6, "b": 0.4, "c": 0.55}, "oof", 0.1, min_weight=0.1)
    assert kept == pytest.approx({"a": w["a"] / (w["a"] + w["c"]), "c": w["c"] / (w["a"] + w["c"])})
    assert model_weights({"a": 0.6, "b": 0.4}, "equal", min_weight=0.5) == {"a": 0.5, "b": 0.5}  # at the bound: kept
    with pytest.raises(
        EnsembleError, match=r"ensemble.min_weight 0.6 is above every model's weight \(a 0.500, b 0.500\)"
    ):
        model_weights({"a": 0.6, "b": 0.4}, "equal", min_weight=0.6)


def test_run_ensemble_leaves_out_models_below_min_weight(world):
    result = run_ensemble(settings_of(world, min_weight=0.01))  # weights ~ (1, 6e-6): bad is left out
    report = result.report
    assert report["min_weight"] == 0.01
    for name in TEST_CONFIGS:
        col = report["collections"][name]
        assert col["left_out"] == ["bad"] and list(col["models"]) == ["good"]
        assert col["models"]["good"]["weight"] == 1.0 and col["ensemble"] == pytest.approx(1.0)
    assert report["mean"]["mean_single_fold"] == pytest.approx(1.0)  # the good folds only
    full = run_ensemble(settings_of(world), out=result.submission.parent / "full.csv")
    assert full.report["collections"]["tile:xla"]["left_out"] == []
    assert result.submission.read_text() == full.submission.read_text()  # bad's weight was ~6e-6


def test_summary_of_models_left_out_of_some_collections():
    """min_weight may keep a model in one collection and not another: its means are not reported
    (a mean over some collections would not compare), the ensemble's are."""
    tile = {
        "graphs": 3,
        "ensemble": 0.9,
        "models": {"a": {"fold_ensemble": 0.8, "mean_fold": 0.7}, "b": {"fold_ensemble": 0.6, "mean_fold": 0.5}},
    }
    layout = {"graphs": 2, "ensemble": 0.5, "models": {"a": {"fold_ensemble": 0.4, "mean_fold": 0.3}}}
    for c in (tile, layout):
        c.update(
            mean_single_fold=0.0,
            best_single_fold=0.0,
            ensemble_minus_mean_fold=0.0,
            ensemble_minus_best_fold=0.0,
            top_model_score=c["models"]["a"]["fold_ensemble"],
        )
    summary = summarise({"tile:xla": tile, "layout:xla:random": layout})
    assert summary["ensemble"] == pytest.approx(0.7) and summary["collections_scored"] == 2
    assert summary["top_model_score"] == pytest.approx(0.6)
    assert summary["a_fold_ensemble"] == pytest.approx(0.6) and summary["a_mean_fold"] == pytest.approx(0.5)
    assert not any(k.startswith("b_") for k in summary)


def test_members_must_cover_the_same_configs():
    df = members_frame([1, 2, 3], {("a", 0): [1, 2, 3], ("a", 1): [1, 2, 3], ("b", 0): [3, 2, 1]})
    holed = df.filter(~((pl.col("model") == "a") & (pl.col("fold") == 1) & (pl.col("config_id") == 2)))
    with pytest.raises(EnsembleError, match=r"graph 'g' config 2 has no prediction from a/fold_1; 1 \(graph, config\)"):
        combine(holed, {"a": 0.5, "b": 0.5})
    with pytest.raises(EnsembleError, match=r"no weight for models \['b'\]"):
        combine(df, {"a": 1.0})


def test_constant_runtime_valid_graph_left_out_of_the_report():
    ranked = members_frame([30, 10, 40, 20], {("a", 0): [3, 1, 4, 2], ("a", 1): [4, 1, 3, 2]})
    flat = members_frame([5, 5, 5, 5], {("a", 0): [1, 2, 3, 4], ("a", 1): [4, 3, 2, 1]}).with_columns(
        graph_id=pl.lit("flat")
    )
    report = evaluate(pl.concat([ranked, flat]), {"a": 1.0})
    assert report["graphs"] == 2 and report["graphs_excluded_constant_runtime"] == 1
    # scored on the ranked graph only: fold 0 is its true order; fold 1 has 5 of 6 pairs concordant
    assert report["models"]["a"]["fold_0"] == pytest.approx(1.0)
    assert report["models"]["a"]["fold_1"] == pytest.approx(4 / 6)
    assert report["mean_single_fold"] == pytest.approx(5 / 6)


# ---------------------------------------------------------------- whole runs on a tiny world


def write_fold(runs: Path, collection: str, model: str, fold: int, frame: pl.DataFrame) -> None:
    """One fold's predictions, recorded in the model's run report when there is one (as a finished train run)."""
    path = runs / get_collection(collection).slug / model / "predictions" / f"fold_{fold}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    col = get_collection(collection)
    if report_path(runs, col, model).is_file():
        report = json.loads(report_path(runs, col, model).read_text())
        write_run_report(runs, col, model, {**report, "predictions": prediction_digests(runs, col, model)})


def world_graphs(collection: str) -> dict[tuple[str, str], int]:
    """``{(split, graph_id): configs}`` of :func:`world`'s graphs of one collection."""
    big = {("test", "big"): 1001} if collection == "layout:nlp:default" else {}
    kind = get_collection(collection).kind.name
    return {("train", "o"): 2, ("valid", "v"): len(VALID_RUNTIME[kind]), ("test", "t"): TEST_CONFIGS[collection], **big}


def write_cache(
    runs: Path,
    collection: str,
    hops: int | None = None,
    label: str = "",
    first: dict[tuple[str, str], np.ndarray] | None = None,
) -> Path:
    """What the ensemble reads of a cache beside ``runs``: stats.json and index.parquet's content hashes (``hops`` and
    ``label`` vary them) and, for tile, each graph's config_first (``first``: ``{(split, graph_id): config_first}``;
    default: :func:`world`'s graphs, no two configs identical)."""
    col = get_collection(collection)
    root = runs.parent / "cache"
    (root / col.slug).mkdir(parents=True, exist_ok=True)
    built_with = {k: getattr(Config.from_dict(params_with({})).preprocess, k) for k in PREPROCESS_KEYS}
    stats = {"format_version": FORMAT_VERSION, "collection": col.name, **built_with}
    if hops is not None:
        stats["hops"] = hops
    (root / col.slug / STATS_FILE).write_text(json.dumps(stats))
    if first is None:
        first = {key: np.arange(c, dtype=np.int64) for key, c in world_graphs(collection).items()}
    for split, graph in first:
        (root / col.slug / split / graph).mkdir(parents=True, exist_ok=True)
        if col.is_tile:
            np.save(root / col.slug / split / graph / "config_first.npy", first[split, graph])
    pl.DataFrame(
        {
            "split": [s for s, _ in first],
            "graph_id": [g for _, g in first],
            "content_hash": [g + label for _, g in first],
            "path": [f"{s}/{g}" for s, g in first],
        }
    ).write_parquet(root / col.slug / INDEX_FILE)
    return root


def write_metrics(runs: Path, collection: str, model: str, oof: float, folds: int = FOLDS) -> Path:
    """The run report of ``model``, predicted from the cache beside ``runs`` (:func:`write_cache` when none)."""
    cache = runs.parent / "cache" / get_collection(collection).slug
    if not cache.is_dir():
        write_cache(runs, collection)
    config = Config.from_dict(ensemble_params(runs, runs, {}))  # the settings as params.yaml has them
    made_from = {
        "weights_for": "w",
        **trained_with(config, model),
        **CollectionCache(cache.parent, collection).identity(),
    }
    return write_run_report(
        runs,
        get_collection(collection),
        model,
        {
            "collection": collection,
            "model": model,
            "metric": "x",
            "oof_score": oof,
            "folds": [{"fold": k, "oof_score": oof} for k in range(folds)],
            "valid_score_mean_fold": None,
            "predicted_from": made_from,
            "predictions": prediction_digests(runs, get_collection(collection), model),
        },
    )


def graph_rows(split: str, graph_id: str, pred, runtime) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "split": split,
            "graph_id": graph_id,
            "config_id": np.arange(len(pred), dtype=np.int64),
            "pred": np.asarray(pred, np.float64),
            "runtime": np.asarray(runtime, np.float64),
        }
    )


@pytest.fixture
def world(tmp_path, write_graph) -> dict:
    """Data (one valid, one test graph per collection, plus a 1,001-config layout:nlp:default test
    file), a sample submission, and fold predictions of a perfect model ``good`` (OOF 0.8) and a
    reversed one ``bad`` (OOF 0.2). Returns the params; paths are absolute."""
    data, runs = tmp_path / "data", tmp_path / "runs"

    def npz(name: str, split: str, graph: str, runtime) -> None:
        c = len(runtime)
        extra = (
            {"config_feat": np.zeros((c, 24), np.float32), "config_runtime_normalizers": np.ones(c, np.int64)}
            if get_collection(name).is_tile
            else {"node_config_feat": np.zeros((c, 2, 18), np.float32)}
        )
        write_graph(data, name, split, name=graph, config_runtime=np.asarray(runtime, np.int64), **extra)

    sample = ["ID,TopConfigs"]
    for col in COLLECTIONS:
        valid_rt = np.array(VALID_RUNTIME[col.kind.name])
        npz(col.name, "valid", "v", valid_rt)
        tests = {"t": TEST_CONFIGS[col.name], **({"big": 1001} if col.name == "layout:nlp:default" else {})}
        for graph, c in tests.items():
            npz(col.name, "test", graph, np.zeros(c))
            sample.append(f"{col.submission_id(graph)},{';'.join(map(str, range(5 if col.is_tile else min(c, 1000))))}")
        for model, sign, oof in (("good", 1.0, 0.8), ("bad", -1.0, 0.2)):
            write_metrics(runs, col.name, model, oof)
            for fold in range(FOLDS):
                # test scores: good ranks configs by id, bad by reversed id; fold 1 a monotone transform
                frames = [graph_rows("valid", "v", sign * valid_rt * (fold + 1), valid_rt)]
                frames += [
                    graph_rows("test", g, sign * np.exp(np.arange(c) / 100.0 * (fold + 1)), np.zeros(c))
                    for g, c in tests.items()
                ]
                frames.append(graph_rows("oof", "o", [1.0, 2.0], [1.0, 2.0]))
                write_fold(runs, col.name, model, fold, pl.concat(frames))
    (data / "sample_submission.csv").write_text("\n".join(sample) + "\n")
    # min_weight 0: both models take part (the reports of bad); test_run_ensemble_leaves_out_... raises it
    return ensemble_params(data, runs, {"weights": "oof", "min_weight": 0.0, "out": str(tmp_path / "submissions")})


def ensemble_params(data: Path, runs: Path, ensemble: dict) -> dict:
    """The repo's params with only the models ``good`` and ``bad`` and this test's paths."""
    params = params_with(
        {
            "data": {"out": str(data)},
            "train": {"folds": FOLDS, "runs_dir": str(runs)},
            "preprocess": {"out": str(runs.parent / "cache")},
            "ensemble": {"models": None, "temperature": 0.05, **ensemble},
            "kernels": {"models": list(MODELS)},
        }
    )
    return {**params, "models": {m: params["model_base"] for m in MODELS}}


def settings_of(params: dict, **ensemble) -> EnsembleSettings:
    return EnsembleSettings.from_config(Config.from_dict(deep_merge(params, {"ensemble": ensemble})))


def test_collections_left_out_of_params_are_not_combined_from_stale_runs(world, caplog):
    """runs/ of every collection exist (e.g. from before `collections` was cut to one): the ensemble
    combines only the listed one and refuses to write a submission that would reuse the others."""
    params = {**world, "collections": ["tile-xla"]}
    settings = settings_of(params)
    assert [c.name for c in settings.collections] == ["tile:xla"]
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(
            EnsembleError,
            match=r"params.yaml collections leaves out layout-xla-random, layout-xla-default, layout-nlp-random, "
            r"layout-nlp-default: a submission ranks all five collections; list them all",
        ),
    ):
        run_ensemble(settings)
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("tile:xla: ") for m in logged) and not any(m.startswith("layout:") for m in logged)
    assert not (Path(world["ensemble"]["out"]) / "submission.csv").exists()


def test_run_ensemble_writes_a_checked_submission_and_report(world):
    settings = settings_of(world)
    assert settings.models == MODELS  # null: every key of models
    result = run_ensemble(settings)
    data = settings.data_dir
    assert result.submission == settings.out_dir / "submission.csv"
    assert check_submission(result.submission, sample=data / "sample_submission.csv", data_dir=data) == []
    rows = dict(line.split(",") for line in result.submission.read_text().splitlines()[1:])
    assert len(rows) == 6
    # weights: softmax((0.8, 0.2) / 0.05) ~ (1, 6e-6): the good model's order, configs by id
    assert rows["tile:xla:t"] == "0;1;2;3;4"
    assert rows["layout:xla:random:t"] == "0;1;2;3"
    big = rows["layout:nlp:default:big"].split(";")
    assert big == [str(i) for i in range(1001)]  # the 1,001-config file: every config ranked

    report = read_ensemble_report(settings.out_dir)
    assert report == result.report
    # the DVC metric: flat, the valid ensemble score per collection slug and their mean
    assert json.loads(result.metrics_path.read_text()) == pytest.approx(
        {**{c.slug: report["collections"][c.name]["ensemble"] for c in COLLECTIONS}, "mean": report["mean"]["ensemble"]}
    )
    for name in TEST_CONFIGS:
        col = report["collections"][name]
        good = col["models"]["good"]
        assert good["weight"] == pytest.approx(1 / (1 + np.exp(-12)))
        assert good["fold_0"] == good["fold_1"] == good["fold_ensemble"] == good["mean_fold"] == pytest.approx(1.0)
        assert col["ensemble"] == pytest.approx(1.0) and col["best_single_fold"] == pytest.approx(1.0)
        assert col["best_single_fold_member"] == "good/fold_0"
        assert col["top_model"] == "good" and col["top_model_score"] == pytest.approx(1.0)  # rank --members best
    layout = report["collections"]["layout:xla:random"]
    assert layout["models"]["bad"]["mean_fold"] == pytest.approx(-1.0)
    assert layout["mean_single_fold"] == pytest.approx(0.0) and layout["ensemble_minus_mean_fold"] == pytest.approx(1.0)
    # tile, bad model: its top 5 are the slowest, configs 6, 5, 4, 2, 0 (70, 60, 50, 40, 30): 2 - 30 / 10
    tile = report["collections"]["tile:xla"]
    assert tile["models"]["bad"]["fold_0"] == pytest.approx(-1.0)
    assert tile["mean_single_fold"] == pytest.approx(0.0)
    assert report["mean"]["ensemble"] == pytest.approx(1.0)
    assert report["mean"]["mean_single_fold"] == pytest.approx(0.0)
    assert report["mean"]["good_fold_ensemble"] == pytest.approx(1.0) and report["mean"][
        "bad_mean_fold"
    ] == pytest.approx(-1.0)
    assert report["mean"]["collections_scored"] == 5 and report["mean"]["top_model_score"] == pytest.approx(1.0)


@pytest.mark.parametrize("mask, mode", [(0o022, "0o644"), (0o077, "0o600")])
def test_outputs_follow_the_umask(world, umask, file_modes, mask, mode):
    umask(mask)
    result = run_ensemble(settings_of(world))
    assert file_modes(result.submission.parent) == {mode}
    assert {result.submission.name, result.metrics_path.name, result.report_path.name} <= {
        p.name for p in result.submission.parent.iterdir()
    }


def test_valid_submission_scores_as_reported(world):
    settings = settings_of(world, weights="equal")
    result = run_ensemble(settings, split="valid")
    assert result.submission == settings.out_dir / "valid_submission.csv"
    scores = score_submission(result.submission, settings.data_dir, split="valid")
    report = result.report["collections"]
    assert {n: scores[n] for n in TEST_CONFIGS} == pytest.approx({n: report[n]["ensemble"] for n in TEST_CONFIGS})
    # equal weights of perfect and reversed: every config ties at 1/2 -> order by id, as by hand
    assert report["layout:xla:random"]["ensemble"] == pytest.approx(0.0)
    assert report["tile:xla"]["ensemble"] == pytest.approx(1.0)  # configs 0..4 hold the best, 10


@pytest.mark.parametrize("retrained", [("bad",), ()], ids=["one model re-trained", "none re-trained"])
def test_models_predicted_from_another_cache_refused(world, retrained):
    """`tpuperf ensemble` by hand after `tpuperf preprocess` with other hops: the runs re-trained since and those
    not (here: none) were combined as one ensemble; each run report says what it was predicted from."""
    runs = Path(world["train"]["runs_dir"])
    write_cache(runs, "layout:xla:default", hops=3)  # preprocess again, other settings
    with pytest.raises(
        CacheError, match=r"layout-xla-default/stats.json: built with preprocess.hops 3 \(params.yaml: "
    ):
        run_ensemble(settings_of(world))  # params.yaml not edited to match: the cache's settings are not its
    # params.yaml says so too (its other collections' caches are left as they were: combine this one)
    edited = deep_merge(world, {"preprocess": {"hops": 3}, "collections": ["layout-xla-default"]})
    for model in retrained:
        write_metrics(runs, "layout:xla:default", model, 0.2)
    problem = (
        r"its models were predicted from different caches: bad from the one in .*cache/layout-xla-default, "
        r"good from another \(good: stats differ\)"
        if retrained
        else r"every model \(good, bad\) was predicted from another cache than .*cache/layout-xla-default holds now "
        r"\(good: stats differ; bad: stats differ; preprocess ran after train\?\)"
    )
    stale = "dvc repro train@layout-xla-default-good" + (
        "" if retrained else ", dvc repro train@layout-xla-default-bad"
    )
    with pytest.raises(EnsembleError, match=rf"^layout:xla:default: {problem}; .*: train them again \({stale}\)$"):
        run_ensemble(settings_of(edited))
    assert not (Path(world["ensemble"]["out"]) / "submission.csv").exists()
    write_cache(runs, "layout:xla:default", label="-relabelled")  # params.yaml's settings, other graph contents
    bad = "stats and graphs" if retrained else "graphs"
    with pytest.raises(EnsembleError, match=rf"\(good: graphs differ; bad: {bad} differ"):
        run_ensemble(settings_of(world))


@pytest.mark.parametrize(
    "edit, differs",
    [
        ({"models": {"bad": {"units": 16}}}, r"models.bad.units: {units} in its run report, 16 in params.yaml"),
        ({"train": {"epochs": 99}}, r"train.epochs: {epochs} in its run report, 99 in params.yaml"),
    ],
    ids=["model setting", "train setting"],
)
def test_models_trained_with_other_settings_than_params_refused(world, edit, differs):
    """`tpuperf ensemble` by hand after editing a model's section or the train section of params.yaml without
    training again: the old predictions (and out-of-fold weights) were combined, which `tpuperf export` refuses;
    the ensemble now names the model, the key and both values, and writes no submission. How a run executes
    (train.strategy, cpu_replicas, jit_compile, predict_configs_per_graph: Kaggle kernels override them) is not
    compared."""
    differs = differs.format(units=world["models"]["bad"]["units"], epochs=world["train"]["epochs"])
    stale = "bad" if "models" in edit else "good"  # a train edit: every model, the first named
    with pytest.raises(
        EnsembleError,
        match=rf"^tile:xla: {stale} was trained with other settings than params.yaml holds \({differs}\)",
    ):
        run_ensemble(settings_of(deep_merge(world, edit)))
    assert not (Path(world["ensemble"]["out"]) / "submission.csv").exists()
    execution = {
        "train": {
            "strategy": "cpus",
            "cpu_replicas": 2,
            "jit_compile": not world["train"]["jit_compile"],
            "predict_configs_per_graph": world["train"]["predict_configs_per_graph"] + 5,
        }
    }
    run_ensemble(settings_of(deep_merge(world, execution)))  # the settings the runs were trained with: accepted


def test_a_refused_run_leaves_no_previous_submission_behind(world, caplog):
    """A successful `tpuperf ensemble`, then params.yaml edited and the ensemble run again by hand: it is refused,
    but the previous run's submission.csv and reports stayed beside the error, so `tpuperf submit` would have sent
    the old models' submission as if it were this run's. A run now removes them first (saying so)."""
    out = Path(world["ensemble"]["out"])
    run_ensemble(settings_of(world))
    previous = [out / "submission.csv", out / ENSEMBLE_REPORT_FILE, out / ENSEMBLE_METRICS_FILE]
    assert all(path.exists() for path in previous)
    with caplog.at_level(logging.INFO, logger="tpuperf.submission.ensemble"), pytest.raises(EnsembleError):
        run_ensemble(settings_of(deep_merge(world, {"models": {"bad": {"units": 16}}})))
    assert [path for path in previous if path.exists()] == []
    assert f"removed {out / 'submission.csv'}" in caplog.text


def test_the_same_files_from_another_source_are_the_same_cache(world):
    """Kaggle kernels preprocess with data.source local; the ensemble after them runs where the same files came
    through data.source kaggle: the caches differ only in stats.json's data_source, so the runs are accepted.
    Another transform or setting still is another cache."""
    runs = Path(world["train"]["runs_dir"])
    root = runs.parent / "cache"
    weights = weights_for_cache({"units": 8}, CollectionCache(root, "layout:xla:default"))
    for stats_path in root.glob(f"*/{STATS_FILE}"):
        stats = json.loads(stats_path.read_text())
        stats_path.write_text(json.dumps({**stats, "data_source": "kaggle"}))
    run_ensemble(settings_of(world))  # the runs were predicted from caches without a data_source: accepted
    assert weights_for_cache({"units": 8}, CollectionCache(root, "layout:xla:default")) == weights  # export takes them
    stats_path = root / "layout-xla-default" / STATS_FILE
    stats_path.write_text(json.dumps({**json.loads(stats_path.read_text()), "hops": 5}))
    with pytest.raises(EnsembleError, match="stats differ"):
        run_ensemble(settings_of(deep_merge(world, {"preprocess": {"hops": 5}, "collections": ["layout-xla-default"]})))
    assert weights_for_cache({"units": 8}, CollectionCache(root, "layout:xla:default")) != weights


def test_tile_row_spends_its_5_slots_on_distinct_configurations(world):
    """Configs 0, 1, 2 of the tile test graph are one configuration (identical features: config_first), so good's
    ranking by id spent 3 of the 5 slots on it; the row now holds 5 distinct ones. The valid row too, and the
    reported valid score is the one of that row."""
    runs = Path(world["train"]["runs_dir"])
    first = {key: np.arange(c, dtype=np.int64) for key, c in world_graphs("tile:xla").items()}
    first["test", "t"] = np.array([0, 0, 0, 3, 4, 5, 6])
    first["valid", "v"] = np.array([0, 0, 2, 0, 4, 5, 6])  # good's order 1, 3, 0, 2, 4, ...: 3 and 0 repeat 1
    write_cache(runs, "tile:xla", first=first)
    for model, oof in (("good", 0.8), ("bad", 0.2)):  # trained again on this cache
        write_metrics(runs, "tile:xla", model, oof)
    result = run_ensemble(settings_of(world))
    rows = dict(line.split(",") for line in result.submission.read_text().splitlines()[1:])
    assert rows["tile:xla:t"] == "0;3;4;5;6"
    valid = run_ensemble(settings_of(world), split="valid")
    rows = dict(line.split(",") for line in valid.submission.read_text().splitlines()[1:])
    assert rows["tile:xla:v"] == "1;2;4;5;6"  # runtimes 10, 40, 50, 60, 70: best 10, score 1
    tile = valid.report["collections"]["tile:xla"]
    assert score_submission(valid.submission, world["data"]["out"], split="valid")["tile:xla"] == tile["ensemble"]


def rewrite_fold(world: dict, collection: str, model: str, fold: int, change) -> None:
    """Fold ``fold``'s predictions changed by ``change`` (a train run that wrote them so: its report records them)."""
    runs = Path(world["train"]["runs_dir"])
    path = runs / get_collection(collection).slug / model / "predictions" / f"fold_{fold}.parquet"
    write_fold(runs, collection, model, fold, change(pl.read_parquet(path)))


def test_missing_fold_and_metrics_caught(world):
    runs = Path(world["train"]["runs_dir"])
    (runs / "layout-nlp-random" / "bad" / "predictions" / "fold_1.parquet").unlink()
    with pytest.raises(
        PredictionFormatError,
        match=r"layout-nlp-random/bad/predictions/fold_1.parquet: missing: "
        r"layout:nlp:random / bad has fold_0.parquet but train.folds is 2",
    ):
        run_ensemble(settings_of(world))
    assert not (Path(world["ensemble"]["out"]) / "submission.csv").exists()
    with pytest.raises(PredictionFormatError, match=r"tile-xla/gat/predictions: missing: train gat on tile:xla first"):
        gat = {
            **world,
            "models": {m: world["model_base"] for m in ("good", "gat")},
            "kernels": {**world["kernels"], "models": ["good"]},
        }
        run_ensemble(settings_of(gat, models=["good", "gat"]))
    (runs / "tile-xla" / "bad" / "report.json").unlink()
    with pytest.raises(RunArtifactError, match=r"tile-xla/bad/report.json: missing: train bad on tile:xla first"):
        run_ensemble(settings_of(world))
    write_metrics(runs, "tile:xla", "bad", 0.2, folds=3)
    with pytest.raises(RunArtifactError, match="has 3 folds but train.folds is 2"):
        read_oof_score(runs, get_collection("tile:xla"), "bad", FOLDS)
    assert json.loads((runs / "tile-xla" / "bad" / "metrics.json").read_text()) == {"oof": 0.2, "valid": None}
    (runs / "tile-xla" / "bad" / "report.json").write_text(json.dumps({"collection": "tile:xla", "model": "bad"}))
    with pytest.raises(RunArtifactError, match=r"report.json: missing keys \['metric', 'folds', 'oof_score'"):
        read_oof_score(runs, get_collection("tile:xla"), "bad", FOLDS)
    with pytest.raises(RunArtifactError, match="oof_score is nan, not a finite number"):
        write_metrics(runs, "tile:xla", "bad", float("nan"))
    with pytest.raises(RunArtifactError, match=r"ensemble_report.json: missing: run tpuperf ensemble first"):
        read_ensemble_report(runs)


def test_fold_files_of_another_run_than_the_report_refused(world):
    """`tpuperf train` by hand with other train settings (e.g. train.epochs), stopped during fold 1: fold 0's file
    is the new run's, fold 1's and report.json the previous run's (same cache and model settings). Combined, the
    ensemble mixed two runs with the old out-of-fold weight; the report's digests tell, naming the file."""
    runs = Path(world["train"]["runs_dir"])
    path = runs / "layout-xla-random" / "good" / "predictions" / "fold_0.parquet"
    pl.read_parquet(path).with_columns(pred=-pl.col("pred")).write_parquet(path)  # the new run's fold 0, no report
    with pytest.raises(
        PredictionFormatError,
        match=r"layout-xla-random/good/predictions/fold_0.parquet: not the predictions .*layout-xla-random/good/"
        r"report.json describes \(sha256 [0-9a-f]{16}, the report records [0-9a-f]{16}\): written by another run of "
        r"train .*; train good on layout:xla:random again$",
    ):
        run_ensemble(settings_of(world))
    assert not (Path(world["ensemble"]["out"]) / "submission.csv").exists()
    report = json.loads(report_path(runs, get_collection("layout:xla:random"), "good").read_text())
    del report["predictions"]  # a report of a tpuperf before the digests
    report_path(runs, get_collection("layout:xla:random"), "good").write_text(json.dumps(report))
    with pytest.raises(RunArtifactError, match=r"missing keys \['predictions'\] \(written by an older tpuperf"):
        run_ensemble(settings_of(world))


def test_graph_ids_must_match_the_sample_both_ways(world, write_graph):
    data = Path(world["data"]["out"])
    # a test file and predictions for it, but no sample row
    write_graph(
        data,
        "tile:xla",
        "test",
        name="ghost",
        config_runtime=np.zeros(4, np.int64),
        config_feat=np.zeros((4, 24), np.float32),
        config_runtime_normalizers=np.ones(4, np.int64),
    )
    runs = Path(world["train"]["runs_dir"])
    graphs = {key: np.arange(c, dtype=np.int64) for key, c in world_graphs("tile:xla").items()}
    write_cache(runs, "tile:xla", first={**graphs, ("test", "ghost"): np.arange(4, dtype=np.int64)})
    for model, oof in (("good", 0.8), ("bad", 0.2)):  # trained again on the cache with ghost
        write_metrics(runs, "tile:xla", model, oof)
    for model in MODELS:
        for fold in range(FOLDS):
            rewrite_fold(
                world,
                "tile:xla",
                model,
                fold,
                lambda df: pl.concat([df, graph_rows("test", "ghost", [1.0, 2, 3, 4], np.zeros(4))]),
            )
    with pytest.raises(SubmissionError) as caught:
        run_ensemble(settings_of(world))
    assert caught.value.problems == ["extra ID (not in sample sample_submission.csv): tile:xla:ghost"]
    # the reverse: a sample row (and test file) that no prediction covers
    for model in MODELS:
        for fold in range(FOLDS):
            rewrite_fold(world, "tile:xla", model, fold, lambda df: df.filter(pl.col("graph_id") != "t"))
    sample = data / "sample_submission.csv"
    sample.write_text(sample.read_text() + "tile:xla:ghost,0;1;2;3\n")
    with pytest.raises(SubmissionError) as caught:
        run_ensemble(settings_of(world))
    assert caught.value.problems == [
        f"missing ID (in the test files of {data} but not in the file): tile:xla:t",
        "missing ID (in sample sample_submission.csv but not in the file): tile:xla:t",
    ]
    assert not (Path(world["ensemble"]["out"]) / "submission.csv").exists()


def skip_invalid_test_file(world: dict, collection: str) -> Path:
    """Make ``collection``'s test file ``t`` invalid, list it in a manifest as the download stage does, and
    drop its predictions (preprocess.on_bad_file: skip left it out of the cache, so no model ranked it)."""
    data = Path(world["data"]["out"])
    broken = get_collection(collection).split_dir(data, "test") / "t.npz"
    broken.write_bytes(b"not a zip archive")
    manifest = build_manifest(data, "local", "local", {})
    assert manifest["num_invalid"] == 1
    (data / MANIFEST_NAME).write_text(json.dumps(manifest))
    for model in MODELS:
        for fold in range(FOLDS):
            rewrite_fold(world, collection, model, fold, lambda df: df.filter(pl.col("graph_id") != "t"))
    return broken


NOT_A_ZIP = "unreadable or truncated archive (File is not a zip file)"


def test_skipped_test_file_is_named_in_the_missing_row(world):
    """The submission check said only "missing ID ...: layout:nlp:default:t"; it now names the file the download
    listed as invalid and its problem, and nothing is written."""
    broken = skip_invalid_test_file(world, "layout:nlp:default")  # its other test file ("big") is still ranked
    data = Path(world["data"]["out"])
    with pytest.raises(SubmissionError) as caught:
        run_ensemble(settings_of(world))
    assert caught.value.problems == [
        f"missing ID (in the test files of {data} but not in the file): layout:nlp:default:t (its test file {broken} "
        f"failed validation in the download stage: {NOT_A_ZIP}; listed in {data / MANIFEST_NAME}: preprocess "
        "(on_bad_file: skip) leaves it out, so no model ranked it: Kaggle refuses a submission without its row)",
        "missing ID (in sample sample_submission.csv but not in the file): layout:nlp:default:t",
    ]
    assert not (Path(world["ensemble"]["out"]) / "submission.csv").exists()


def test_collection_whose_test_files_were_all_skipped_names_them(world):
    """tile:xla's only test file skipped: "no test predictions for tile:xla" now says why."""
    broken = skip_invalid_test_file(world, "tile:xla")
    data = Path(world["data"]["out"])
    with pytest.raises(PredictionFormatError) as caught:
        run_ensemble(settings_of(world))
    assert str(caught.value).endswith(
        f"no test predictions for tile:xla: 1 test file(s) skipped: its test file {broken} failed validation in the "
        f"download stage: {NOT_A_ZIP}; listed in {data / MANIFEST_NAME}: preprocess (on_bad_file: skip) leaves it "
        "out, so no model ranked it: Kaggle refuses a submission without its row"
    )
    assert not (Path(world["ensemble"]["out"]) / "submission.csv").exists()


def test_nan_scores_caught(world):
    rewrite_fold(
        world,
        "layout:xla:default",
        "good",
        1,
        lambda df: df.with_columns(pred=pl.when(pl.col("config_id") == 2).then(float("nan")).otherwise(pl.col("pred"))),
    )
    with pytest.raises(
        PredictionFormatError,
        match=r"layout-xla-default/good/predictions/fold_1.parquet: 2 NaN/inf preds \(graphs \['t', 'v'\]\)",
    ):
        run_ensemble(settings_of(world))


def test_layout_row_not_a_permutation_caught(world):
    for model in MODELS:  # every member skips config 3 of the 4-config test graph
        for fold in range(FOLDS):
            rewrite_fold(
                world,
                "layout:xla:random",
                model,
                fold,
                lambda df: df.filter(~((pl.col("graph_id") == "t") & (pl.col("config_id") == 3))),
            )
    with pytest.raises(
        SubmissionError,
        match=r"layout:xla:random:t: layout row has 3 config ids but the file has 4 "
        r"configs; a row must rank every config of its file \(unranked: 3\)",
    ):
        run_ensemble(settings_of(world))
    # one member alone skipping a config is caught before: the ensemble would average unlike sets
    rewrite_fold(
        world,
        "layout:nlp:random",
        "bad",
        0,
        lambda df: df.filter(~((pl.col("graph_id") == "t") & (pl.col("config_id") == 1))),
    )
    with pytest.raises(EnsembleError, match="layout:nlp:random: graph 't' config 1 has no prediction from bad/fold_0"):
        run_ensemble(settings_of(world, models=["bad"]), split="test")


def test_1001_config_file_must_be_ranked_fully(world):
    for model in MODELS:
        for fold in range(FOLDS):
            rewrite_fold(
                world,
                "layout:nlp:default",
                model,
                fold,
                lambda df: df.filter(~((pl.col("graph_id") == "big") & (pl.col("config_id") == 1000))),
            )
    with pytest.raises(
        SubmissionError, match=r"layout:nlp:default:big: layout row has 1000 config ids but the file has 1001"
    ):
        run_ensemble(settings_of(world))


def test_settings_errors(world):
    with pytest.raises(ConfigError, match=r"ensemble.models \['good', 'gat'\]: unknown \['gat'\]"):
        settings_of(world, models=["good", "gat"])
    with pytest.raises(ConfigError, match="ensemble.weights must be one of equal, oof, got 'mean'"):
        settings_of(world, weights="mean")
    with pytest.raises(ConfigError, match="ensemble.temperature must be > 0"):
        settings_of(world, temperature=-1)
    with pytest.raises(ConfigError, match=r"ensemble.temperature, ensemble.min_weight missing"):
        Config.from_dict({**world, "ensemble": {"models": None, "weights": "oof", "out": "x"}})


def test_script(world, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(world, sort_keys=False))
    out = tmp_path / "elsewhere.csv"
    done = subprocess.run(
        [sys.executable, str(REPO / "ensemble.py"), "--params", str(params), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert check_submission(out, data_dir=world["data"]["out"]) == []
    log = done.stderr.splitlines()
    assert log[0].startswith(
        "tile:xla: 2 models x 2 folds, weights oof (good 1.000, bad 0.000); 1 test graphs; valid: ensemble 1.0000"
    )
    assert f"wrote {out}: 6 rows" in log[-2]
    assert log[-1].startswith("valid, mean over 5 collections: ensemble 1.0000, mean single fold 0.0000 (+1.0000)")
    (Path(world["train"]["runs_dir"]) / "tile-xla" / "good" / "predictions" / "fold_0.parquet").unlink()
    main = runpy.run_path(str(REPO / "ensemble.py"))["main"]  # in-process: the failure path
    assert main(["--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tpuperf ensemble failed: ") and "tile-xla/good/predictions/fold_0.parquet: missing" in err


def test_synthetic_dataset_end_to_end(tmp_path):
    """Noisy members on a tiny synthetic dataset: the file is valid, and scores as reported."""
    synthetic = pytest.importorskip("tpuperf.data.synthetic", reason="tpuperf.data.synthetic not available")
    data, runs = tmp_path / "data", tmp_path / "runs"
    synthetic.write_dataset(data, preset="tiny", seed=0)
    rng = np.random.default_rng(0)
    for col in COLLECTIONS:
        files = {split: sorted(col.split_dir(data, split).glob("*.npz")) for split in ("valid", "test")}
        truth, first = {}, {}
        for split, paths in files.items():
            for path in paths:
                with np.load(path) as z:
                    truth[split, path.stem] = z["config_runtime"] / z.get("config_runtime_normalizers", 1)
                    first[split, path.stem] = first_identical(z["config_feat"]) if col.is_tile else None
        write_cache(runs, col.name, first=first)
        for model in MODELS:
            write_metrics(runs, col.name, model, 0.5)
            for fold in range(FOLDS):
                frames = []
                for (split, graph), runtime in truth.items():
                    # valid: log-runtime plus member noise; test runtimes are zero, so noise only
                    pred = (np.log(runtime) if split == "valid" else 0.0) + rng.normal(0, 0.5, runtime.size)
                    frames.append(graph_rows(split, graph, pred, runtime))
                write_fold(runs, col.name, model, fold, pl.concat(frames))
    params = ensemble_params(data, runs, {"weights": "equal", "out": str(tmp_path / "sub")})
    test = run_ensemble(settings_of(params))
    assert check_submission(test.submission, sample=data / "sample_submission.csv", data_dir=data) == []
    valid = run_ensemble(settings_of(params), split="valid")
    scores = score_submission(valid.submission, data, split="valid")
    report = valid.report
    assert scores["mean"] == pytest.approx(report["mean"]["ensemble"])
    # four independent noisy members average out: the ensemble orders configs better than the
    # mean single fold (tile, near 1.0 on 3 kernels, is a top-5 coin toss and is left out)
    for name, col in report["collections"].items():
        if name != "tile:xla":
            assert col["ensemble"] > col["mean_single_fold"] + 0.02, (name, col["ensemble"], col["mean_single_fold"])
    assert report["mean"]["ensemble"] > report["mean"]["mean_single_fold"]
