"""tpuperf export + tpuperf rank: an exported ensemble ranks new files (real TpuGraphs test files
included) exactly as the pipeline would; bad inputs fail naming the file or the mismatch."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import SHARED_DATA, _rewrite_npz, _write_graph, config_with

import tpuperf
from tpuperf.cli import main as cli_main
from tpuperf.collection import get_collection, locate
from tpuperf.config import Config
from tpuperf.data.cache import CacheError, CollectionCache
from tpuperf.data.npz import DataFormatError, read_header
from tpuperf.data.opcodes import opcode_name
from tpuperf.data.preprocess import first_identical, prepare_graph, preprocess_collection
from tpuperf.metrics import rank_configs
from tpuperf.ranking.export import ExportError, export_collection, train_opcodes
from tpuperf.ranking.ranker import EXPORT_FORMAT, ExportedModel, ModelExportError, code_fingerprint, load_export

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import rank_speed  # noqa: E402
from rank_speed import write_untrained_members  # noqa: E402

COLLECTIONS = ("tile:xla", "layout:xla:default", "layout:nlp:random")
MODELS = ("chebsage", "sage")
REAL_TEST = {
    "tile:xla": SHARED_DATA / "npz/tile/xla/test",
    "layout:xla:default": SHARED_DATA / "npz/layout/xla/default/test",
    "layout:nlp:random": SHARED_DATA / "npz/layout/nlp/random/test",
}


def tiny_params(root: Path) -> Config:
    small_model = dict(units=8, config_units=8, shared_layers=1, config_layers=1)
    return config_with(
        {
            "data": {"out": str(root / "data")},
            "preprocess": {"out": str(root / "cache"), "jobs": 1},
            "train": dict(
                folds=2,
                runs_dir=str(root / "runs"),
                checkpoints_dir=str(root / "checkpoints"),
                graphs_per_batch=2,
                predict_configs_per_graph=16,
                jit_compile=False,
            ),
            "models": {name: small_model for name in ("chebsage", "sage", "cheb", "baseline")},
            "ensemble": {"models": list(MODELS)},
            "export": {"out": str(root / "models")},
        }
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny synthetic train set per collection (plus the real test files when present, linked
    into the dataset so the cache holds them), preprocessed, with exported random-weight models."""
    root = tmp_path_factory.mktemp("rank")
    params = tiny_params(root)
    data = Path(params.data.out)
    for name in COLLECTIONS:
        col = get_collection(name)
        for i in range(3):
            _write_graph(data, name, "train", name=f"train{i}", seed=i, nodes=8)
        _write_graph(data, name, "test", name="synthetic_test", seed=50)
        if REAL_TEST[name].is_dir():
            for f in REAL_TEST[name].glob("*.npz"):
                (col.split_dir(data, "test") / f.name).symlink_to(f)
        preprocess_collection(data, params.preprocess.out, col, params.preprocess, progress=False)
        write_untrained_members(params, col)  # oof scores chebsage 0.3, sage 0.25
        export_collection(params, col)
    return root, params


def test_export_writes_manifest_and_one_weight_file_per_member(exported):
    root, params = exported
    manifest = json.loads((root / "models/layout-xla-default/manifest.json").read_text())
    assert manifest["collection"] == "layout:xla:default" and manifest["tpuperf_version"] == tpuperf.__version__
    weights = {m: s["weight"] for m, s in manifest["models"].items()}
    z = np.exp(np.array([0.3, 0.25]) / params.ensemble.temperature)
    assert weights == pytest.approx(dict(zip(MODELS, z / z.sum())))  # softmax of oof / temperature, as ensemble.py
    assert (
        manifest["stats"]["hops"] == params.preprocess.hops and manifest["planning"]["predict_configs_per_graph"] == 16
    )
    assert sorted(p.name for p in (root / "models/layout-xla-default/sage").iterdir()) == ["fold_0.npz", "fold_1.npz"]
    assert set(manifest["fingerprint"]) == {"data", "code"}


def test_export_leaves_out_the_models_below_min_weight(exported, tmp_path):
    """ensemble.min_weight drops sage (weight 0.27) from the export as ensemble.py drops it from the submission."""
    root, params = exported
    params = dataclasses.replace(
        params,
        ensemble=dataclasses.replace(params.ensemble, min_weight=0.5),
        export=dataclasses.replace(params.export, out=str(tmp_path / "models")),
    )
    out = export_collection(params, get_collection("tile:xla"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert {m: s["weight"] for m, s in manifest["models"].items()} == {"chebsage": 1.0}
    assert manifest["ensemble"]["min_weight"] == 0.5
    assert sorted(p.name for p in out.iterdir()) == ["chebsage", "manifest.json"]
    assert list(ExportedModel(out).folds) == ["chebsage"]


def test_prepare_graph_equals_the_preprocessed_cache(exported, shared_data):
    """The in-memory transform of a raw file is the preprocess stage's, array for array (real files)."""
    root, params = exported
    for name in COLLECTIONS:
        cache = CollectionCache(params.preprocess.out, name)
        for f in sorted(REAL_TEST[name].glob("*.npz")):
            cached = cache.load("test", f.stem)
            fresh = prepare_graph(f, get_collection(name), cache.stats)
            for field in (
                "node_feat",
                "node_opcode",
                "edge_index",
                "node_ids",
                "config_feat",
                "config_ids",
                "config_node_pos",
                "config_edges",
                "config_tensors",
            ):
                a, b = getattr(cached, field), getattr(fresh, field)
                assert (a is None and b is None) or (np.array_equal(a, b) and a.dtype == b.dtype), (f, field)


def test_rank_matches_the_member_scores_of_the_cached_graphs(exported, shared_data):
    """Ranking real test files = combining every member's scores of the cache's graphs the way ensemble.py does."""
    from tpuperf.submission.csv import rankings_from_predictions
    from tpuperf.submission.ensemble import combine

    root, params = exported
    for name in COLLECTIONS:
        col = get_collection(name)
        files = sorted(REAL_TEST[name].glob("*.npz"))
        model = load_export(root / "models" / col.slug)
        cache = CollectionCache(params.preprocess.out, col)
        cached = [cache.load("test", f.stem) for f in files]
        first = {(name, g.graph_id): g.config_first for g in cached if g.config_first is not None}  # tile
        combined = combine(model.member_scores(cached), model.weights)
        expected = rankings_from_predictions(combined, first)
        for f, r in zip(files, tpuperf.rank(files, root / "models", top=100_000)):
            assert r.collection == name and r.path == f
            assert np.array_equal(r.config_ids, expected[col.submission_id(f.stem)])
            assert sorted(r.config_ids.tolist()) == list(range(r.num_configs))
            pred = combined.filter(pl.col("graph_id") == f.stem).sort("config_id")["pred"].to_numpy()
            assert np.array_equal(r.ensemble_score, pred[r.config_ids])  # the very score that orders the row


def test_members_best_ranks_with_the_top_weighted_models_folds(exported, capsys):
    """--members best = combining chebsage's (weight 0.73) two folds alone; all = the whole export."""
    from tpuperf.submission.csv import rankings_from_predictions
    from tpuperf.submission.ensemble import combine

    root, params = exported
    col = get_collection("layout:xla:default")
    path = col.split_dir(params.data.out, "test") / "synthetic_test.npz"
    model = load_export(root / "models" / col.slug)
    assert model.member_weights("best") == {"chebsage": 1.0} and model.member_weights("all") == model.weights
    graph = prepare_graph(path, col, model.stats)
    scores = model.member_scores([graph], ["chebsage"])
    assert sorted(set(scores.select("model", "fold").iter_rows())) == [("chebsage", 0), ("chebsage", 1)]
    best = tpuperf.rank([path], root / "models", members="best")[0]
    assert np.array_equal(
        best.config_ids,
        rankings_from_predictions(combine(scores, {"chebsage": 1.0}))[col.submission_id(graph.graph_id)],
    )
    every = tpuperf.rank([path], root / "models")[0]
    assert np.array_equal(every.config_ids, tpuperf.rank([path], root / "models", members="all")[0].config_ids)
    code, out, _ = run_cli(
        capsys, "rank", str(path), "--model", str(root / "models"), "--members", "best", "--format", "json"
    )
    assert code == 0 and json.loads(out) == [best.to_dict()]
    with pytest.raises(ValueError, match="members must be one of all, best, got 'top'"):
        tpuperf.rank([path], root / "models", members="top")


def test_every_listed_value_agrees_with_the_order(exported):
    """relative_runtime (exp of the weighted raw-score gap to the first config) could rise and fall down a list
    ordered by the members' combined ranks: 0.993 at rank 1 below rank 0's 1 on the real tile file, 0.979 at ranks 3
    and 5 under --members best. ensemble_score is that combined rank itself: in [0, 1], never decreasing down a
    full list (all and best), except where a tile list puts the repeats of a configuration after every distinct one
    (the real tile test files hold some): a repeat shows its configuration's score, and repeats follow in order."""
    root, params = exported
    files = [get_collection(n).split_dir(params.data.out, "test") / "synthetic_test.npz" for n in COLLECTIONS]
    files += [f for n in COLLECTIONS if REAL_TEST[n].is_dir() for f in sorted(REAL_TEST[n].glob("*.npz"))]
    repeated = 0
    for members in ("all", "best"):
        for f, r in zip(files, tpuperf.rank(files, root / "models", top=100_000, members=members)):
            score = r.ensemble_score
            assert len(score) == r.num_configs and (score >= 0).all() and (score <= 1).all()
            distinct = len(score)
            if r.collection == "tile:xla":
                with np.load(f) as z:
                    same = first_identical(z["config_feat"])[r.config_ids]
                distinct = len(set(same))
                assert len(set(same[:distinct])) == distinct
                by_label = dict(zip(same[:distinct], score[:distinct]))
                assert [by_label[label] for label in same[distinct:]] == score[distinct:].tolist()
                repeated += len(score) - distinct
            assert (np.diff(score[:distinct]) >= 0).all() and (np.diff(score[distinct:]) >= 0).all(), (f, members)
    assert repeated == (2 * (5 + 8 + 24) if REAL_TEST["tile:xla"].is_dir() else 0)


def test_member_agreement_is_the_mean_kendall_tau_between_the_models():
    from tpuperf.ranking.ranker import member_agreement

    a, b = np.array([0.0, 0.5, 1.0, 0.25]), np.array([1.0, 0.5, 0.0, 0.75])
    assert member_agreement([a, a]) == 1.0 and member_agreement([a, b]) == -1.0
    assert member_agreement([a, a, b]) == pytest.approx((1 - 1 - 1) / 3)
    assert member_agreement([a, np.full(4, 0.5)]) == 0.0  # one model without an order: no agreement
    assert member_agreement([a]) is None and member_agreement([a[:1], a[:1]]) is None


def test_valid_member_agreement_refuses_models_that_scored_other_valid_graphs(monkeypatch):
    """A model whose valid predictions lack a graph the first model scored stopped the export with a bare
    KeyError naming the graph id; now an EnsembleError naming the graph, config and member (as combine's)."""
    import tpuperf.ranking.export as export
    from tpuperf.submission.ensemble import EnsembleError

    col = get_collection("layout:xla:random")
    rows = [
        {"model": m, "fold": 0, "graph_id": g, "config_id": c, "pred": float(c), "runtime": 1}
        for m, graphs in (("chebsage", ("g1", "g2")), ("sage", ("g1",)))
        for g in graphs
        for c in range(3)
    ]
    valid = pl.DataFrame(rows).with_columns(split=pl.lit("valid"), collection=pl.lit(col.name))
    reports = {"chebsage": {}, "sage": {}}  # what the digests are checked against: not checked here
    monkeypatch.setattr(export, "check_prediction_digests", lambda *args: None)
    monkeypatch.setattr(export, "read_fold_predictions", lambda *args, **kwargs: valid)
    with pytest.raises(EnsembleError, match=r"graph 'g2' config \d has no prediction from sage/fold_0"):
        export.valid_member_agreement("runs", col, ["chebsage", "sage"], reports, 1)
    full = valid.filter(pl.col("graph_id") == "g1")
    monkeypatch.setattr(export, "read_fold_predictions", lambda *args, **kwargs: full)
    assert export.valid_member_agreement("runs", col, ["chebsage", "sage"], reports, 1) == {"mean": 1.0, "graphs": 1}


def test_rank_tells_the_models_out_of_fold_scores_and_their_agreement(exported, capsys):
    """Nothing told how far to trust a ranking: each ranking now carries the scoring models' out-of-fold scores
    (their run reports', via the manifest: 0.3 and 0.25 here) in the collection's metric, and the mean Kendall tau
    between the models' rankings of the file (each model's folds combined); n/a for --members best (one model)."""
    from scipy.stats import kendalltau

    from tpuperf.submission.ensemble import combine

    root, params = exported
    for name in COLLECTIONS:
        col = get_collection(name)
        path = col.split_dir(params.data.out, "test") / "synthetic_test.npz"
        model = load_export(root / "models" / col.slug)
        scores = model.member_scores([prepare_graph(path, col, model.stats)])
        per_model = [
            combine(scores.filter(pl.col("model") == m), {m: 1.0}).sort("config_id")["pred"].to_numpy() for m in MODELS
        ]
        (every,) = tpuperf.rank([path], root / "models")
        assert every.metric == col.kind.metric and every.oof_scores == {"chebsage": 0.3, "sage": 0.25}
        assert every.member_agreement == pytest.approx(kendalltau(*per_model).statistic)
        (best,) = tpuperf.rank([path], root / "models", members="best")
        assert best.oof_scores == {"chebsage": 0.3} and best.member_agreement is None
        code, out, _ = run_cli(capsys, "rank", str(path), "--model", str(root / "models"), "--members", "best")
        assert code == 0 and out.splitlines()[1].startswith(
            f"# out-of-fold {col.kind.metric}: chebsage 0.300; member agreement: n/a (one model); "
        )
        code, out, _ = run_cli(capsys, "rank", str(path), "--model", str(root / "models"), "--format", "json")
        (row,) = json.loads(out)
        assert row["oof_scores"] == {"chebsage": 0.3, "sage": 0.25} and row["metric"] == col.kind.metric
        assert row["member_agreement"] == every.member_agreement


def test_the_export_records_the_models_agreement_on_the_valid_programs(exported, tmp_path):
    """A file's member agreement means little without the models' usual agreement: the export records the mean over
    the collection's valid graphs of the agreement of the models' valid predictions (each model's folds combined),
    and every ranking by the whole ensemble carries it (None under --members best: one model)."""
    from scipy.stats import kendalltau

    from tpuperf.data.synthetic import write_dataset
    from tpuperf.runs import prediction_path

    root, params = exported
    params = dataclasses.replace(
        params,
        data=dataclasses.replace(params.data, out=str(tmp_path / "data")),
        preprocess=dataclasses.replace(params.preprocess, out=str(tmp_path / "cache")),
        train=dataclasses.replace(
            params.train, checkpoints_dir=str(tmp_path / "checkpoints"), runs_dir=str(tmp_path / "runs")
        ),
        export=dataclasses.replace(params.export, out=str(tmp_path / "models")),
    )
    col = get_collection("layout:xla:random")
    write_dataset(params.data.out, "tiny", 0)
    preprocess_collection(params.data.out, params.preprocess.out, col, params.preprocess, progress=False)
    write_untrained_members(params, col, seed=3)  # random valid scores per fold
    out = export_collection(params, col)
    valid = {}
    for m in MODELS:
        folds = [
            pl.read_parquet(prediction_path(params.train.runs_dir, col, m, f)).filter(pl.col("split") == "valid")
            for f in range(2)
        ]
        for gid in folds[0]["graph_id"].unique():
            ranks = [f.filter(pl.col("graph_id") == gid).sort("config_id")["pred"].rank().to_numpy() for f in folds]
            valid.setdefault(gid, []).append(np.mean(ranks, axis=0))
    taus = [kendalltau(*pair).statistic for pair in valid.values()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["valid_member_agreement"] == pytest.approx({"mean": np.mean(taus), "graphs": len(taus)})
    assert len(taus) == len(list(col.split_dir(params.data.out, "valid").glob("*.npz"))) > 1
    test_file = sorted(col.split_dir(params.data.out, "test").glob("*.npz"))[0]
    (every,) = tpuperf.rank([test_file], out)
    assert every.valid_member_agreement == manifest["valid_member_agreement"]["mean"]
    (best,) = tpuperf.rank([test_file], out, members="best")
    assert best.valid_member_agreement is None and best.member_agreement is None


@pytest.mark.parametrize("name", ["layout:xla:default", "tile:xla"])
def test_feature_values_far_outside_the_training_data_are_counted_and_warned(exported, tmp_path, name):
    """A program whose features lie far from every train graph's ranked without a word. Values beyond the
    manifest's outlier_sigma (export.outlier_sigma) train standard deviations are counted per file and warned
    about, naming the columns; the count is the transformed graph's."""
    import warnings

    root, params = exported
    col = get_collection(name)
    manifest = json.loads((root / "models" / col.slug / "manifest.json").read_text())
    sigma = manifest["outlier_sigma"]
    assert sigma == params.export.outlier_sigma and manifest["format_version"] == EXPORT_FORMAT == 4
    node = manifest["stats"]["node_feat"]
    j = next(j for j, c in enumerate(node["columns"]) if c not in node["log_columns"])
    column = node["columns"][j]
    path = _write_graph(tmp_path, name, "test", name="far")
    stats = load_export(root / "models" / col.slug).stats

    def expected() -> int:
        g = prepare_graph(path, col, stats)
        count = int((np.abs(g.node_feat) > sigma).sum())
        return count + (0 if col.kind.config_per_node else int((np.abs(g.config_feat) > sigma).sum()))

    with np.load(path) as npz:
        feat = npz["node_feat"].copy()
    feat[:, column] = node["mean"][j]  # no value of this column is far
    _rewrite_npz(path, node_feat=feat)
    before = expected()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (plain,) = tpuperf.rank([path], root / "models")
    assert plain.outlying_values == before
    assert bool(before) == any("train standard deviations" in str(w.message) for w in caught)
    kept = prepare_graph(path, col, stats).node_ids[:3]  # nodes pruning keeps
    feat[kept, column] = node["mean"][j] + 1000 * node["std"][j]  # 1000 sigma away
    _rewrite_npz(path, node_feat=feat)
    far = len(kept)
    assert far >= 1 and expected() == before + far
    with pytest.warns(
        UserWarning,
        match=rf"{path}: .*node feature values \(columns [0-9, ]*\b{column}\b.*lie more "
        rf"than {sigma:g} train standard deviations from the {name} training data's mean",
    ):
        (ranking,) = tpuperf.rank([path], root / "models")
    assert ranking.outlying_values == before + far


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top", "0"], "argument --top: must be >= 1, got 0"),
        (["--top", "-3"], "argument --top: must be >= 1, got -3"),
        (["--collection", "tile:nope"], "--collection: unknown collection 'tile:nope'"),
    ],
)
def test_top_below_1_and_an_unknown_collection_are_usage_errors(exported, capsys, args, message):
    """They ended as failures (exit 1, "tpuperf rank failed"), as a broken input file does; they are usage errors:
    exit 2, as argparse's own, before any file is read."""
    root, params = exported
    path = get_collection("tile:xla").split_dir(params.data.out, "test") / "synthetic_test.npz"
    with pytest.raises(SystemExit) if args[0] == "--top" else contextlib.nullcontext() as exit_:
        code = cli_main(["rank", str(path), "--model", str(root / "models"), *args])
    code = exit_.value.code if args[0] == "--top" else code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "failed" not in err


def test_rank_defaults_top5_for_tile_all_for_layout_on_real_files(exported, shared_data):
    root, _ = exported
    tile = sorted(REAL_TEST["tile:xla"].glob("*.npz"))
    layout = sorted(REAL_TEST["layout:xla:default"].glob("*.npz"))
    rankings = tpuperf.rank(tile + layout, root / "models")
    assert [len(r.config_ids) for r in rankings] == [5] * len(tile) + [r.num_configs for r in rankings[len(tile) :]]
    assert [r.num_configs for r in rankings] == [read_header(f)["config_runtime"].shape[0] for f in tile + layout]
    top2 = tpuperf.rank(tile, root / "models", top=2)
    assert [r.config_ids.tolist() for r in top2] == [r.config_ids[:2].tolist() for r in rankings[: len(tile)]]


def test_tile_top_k_holds_distinct_configurations(exported, tmp_path):
    """Identical configurations score alike, so a top 5 could spend several slots on one: a file of 6 copies of one
    configuration and 4 others is ranked with each distinct one first (`tpuperf rank`, default top 5 and --top 3)."""
    root, params = exported
    path = shutil.copy(Path(params.data.out, "npz/tile/xla/test/synthetic_test.npz"), tmp_path / "repeats.npz")
    with np.load(path) as z:
        rows = np.concatenate([z["config_feat"][:4], z["config_feat"][:1] + 1])  # 5 distinct configurations
    feat = rows[[0, 0, 1, 0, 0, 2, 0, 3, 0, 4]]
    _rewrite_npz(
        path, config_feat=feat, config_runtime=np.zeros(10, np.int64), config_runtime_normalizers=np.ones(10, np.int64)
    )
    same = first_identical(feat)
    assert len(set(same)) == 5
    (top5,) = tpuperf.rank([path], root / "models", collection="tile:xla")
    assert sorted(same[top5.config_ids]) == [0, 2, 5, 7, 9]
    (top3,) = tpuperf.rank([path], root / "models", collection="tile:xla", top=3)
    assert top3.config_ids.tolist() == top5.config_ids[:3].tolist()


def test_layout_top_k_holds_distinct_configurations_and_the_full_ranking_keeps_its_order(exported, tmp_path):
    """Real layout files repeat configurations too (6 and 1 of 1,000 in the test files): a file whose predicted-best
    configuration comes 7 times among 10 configs spent `tpuperf rank --top 4` on 4 copies of it; the cut list now
    holds the 4 distinct ones. The full ranking (the submission's row, scored by Kendall tau) keeps the predicted
    order, copies together, and so does a --top of every config."""
    root, params = exported
    col = get_collection("layout:xla:default")
    path = shutil.copy(
        Path(params.data.out, "npz/layout/xla/default/test/synthetic_test.npz"), tmp_path / "repeats.npz"
    )
    with np.load(path) as z:
        base = z["node_config_feat"]
    assert len(set(first_identical(base))) == len(base) == 4
    (plain,) = tpuperf.rank([path], root / "models", collection=col.name)
    best, *others = plain.config_ids.tolist()
    feat = base[[best, best, others[0], best, best, others[1], best, others[2], best, best]]
    _rewrite_npz(path, node_config_feat=feat, config_runtime=np.zeros(10, np.int64))
    same = first_identical(feat)
    (full,) = tpuperf.rank([path], root / "models", collection=col.name)
    assert full.config_ids[:7].tolist() == [0, 1, 3, 4, 6, 8, 9]  # the copies of the best, tied, by id
    (top4,) = tpuperf.rank([path], root / "models", collection=col.name, top=4)
    assert sorted(same[top4.config_ids]) == [0, 2, 5, 7] and top4.config_ids[0] == 0
    (top10,) = tpuperf.rank([path], root / "models", collection=col.name, top=10)
    assert top10.config_ids.tolist() == full.config_ids.tolist()


def test_tile_top_5_of_the_real_test_files_are_distinct_configurations(exported, shared_data):
    """The real tile test files hold repeated configurations (5 of 1,282 and 8 of 807 configs repeat an earlier
    one; one file is 25 copies of one): each top 5 holds 5 distinct ones, or every distinct one and repeats."""
    root, _ = exported
    files = sorted(REAL_TEST["tile:xla"].glob("*.npz"))
    stats = load_export(root / "models/tile-xla").stats
    repeats, rankings = [], tpuperf.rank(files, root / "models")
    for f, ranking in zip(files, rankings):
        with np.load(f) as z:
            same = first_identical(z["config_feat"])
        repeats.append((len(same), len(same) - len(set(same))))
        distinct = min(5, len(set(same)))
        assert len(ranking.config_ids) == 5 and len(set(same[ranking.config_ids])) == distinct, f.name
        # scores that put the repeated configurations first (the untrained export's may not): still distinct
        first = prepare_graph(f, get_collection("tile:xla"), stats).config_first
        assert first.tolist() == same.tolist()
        top5 = rank_configs(-np.bincount(same)[same].astype(float), first)[:5]
        assert len(set(same[top5])) == distinct, f.name
    assert sorted(repeats) == [(25, 24), (807, 8), (1282, 5)]


def test_chunking_does_not_change_scores(exported):
    """Scores of a graph do not depend on how its configs are split into batches."""
    import tensorflow as tf

    from tpuperf.training.batches import BucketPlan
    from tpuperf.training.scoring import Scorer

    root, params = exported
    model = load_export(root / "models/layout-xla-default")
    graph = prepare_graph(
        Path(params.data.out, "npz/layout/xla/default/test/synthetic_test.npz"),
        get_collection("layout:xla:default"),
        model.stats,
    )
    net = model.models["chebsage"]
    net.set_weights(model.folds["chebsage"][0])
    plan = BucketPlan(2, 1.25, count=1, growth=2.0, max_batch_nodes=10**6, max_config_nodes=10**9)
    whole = Scorer(net, plan, 4, "layout", model.feat_dim, tf.distribute.get_strategy(), False).score([graph])
    split = Scorer(net, plan, 1, "layout", model.feat_dim, tf.distribute.get_strategy(), False).score([graph])
    assert np.allclose(whole[graph.graph_id], split[graph.graph_id], rtol=1e-5, atol=1e-6)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_formats_agree_with_the_api(exported, capsys):
    root, params = exported
    files = [str(get_collection(n).split_dir(params.data.out, "test") / "synthetic_test.npz") for n in COLLECTIONS]
    api = tpuperf.rank(files, root / "models")
    code, text, _ = run_cli(capsys, "rank", *files, "--model", str(root / "models"))
    assert code == 0
    lines = text.splitlines()
    assert len(lines) == sum(3 + len(r.config_ids) for r in api)
    for r in api:
        block, lines = lines[: 3 + len(r.config_ids)], lines[3 + len(r.config_ids) :]
        assert block[0] == f"# {r.path}: {r.collection}, {len(r.config_ids)} of {r.num_configs} configs, fastest first"
        assert block[1] == (
            f"# out-of-fold {r.metric}: chebsage 0.300, sage 0.250; member agreement: {r.member_agreement:.3f} (mean "
            f"Kendall tau between the 2 models' rankings; on the valid programs: n/a); feature values beyond "
            f"outlier_sigma: {r.outlying_values}"
        )
        assert block[2] == "rank config_id ensemble_score"
        rows = [line.split() for line in block[3:]]
        assert [int(row[1]) for row in rows] == r.config_ids.tolist()
        assert [float(row[2]) for row in rows] == pytest.approx(r.ensemble_score.tolist(), rel=1e-5)
    code, out, _ = run_cli(capsys, "rank", *files, "--model", str(root / "models"), "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    for r in api:
        mine = [row for row in table if row["file"] == str(r.path)]
        assert [int(row["config_id"]) for row in mine] == r.config_ids.tolist()
        assert [int(row["rank"]) for row in mine] == list(range(len(r.config_ids)))
        assert [float(row["ensemble_score"]) for row in mine] == r.ensemble_score.tolist()
        assert {row["metric"] for row in mine} == {r.metric}
        assert {row["oof_scores"] for row in mine} == {"chebsage=0.3;sage=0.25"}
        assert {float(row["member_agreement"]) for row in mine} == {r.member_agreement}
        assert {row["valid_member_agreement"] for row in mine} == {""}  # the fixture has no valid graphs
        assert {int(row["outlying_values"]) for row in mine} == {r.outlying_values}
    code, out, _ = run_cli(capsys, "rank", *files, "--model", str(root / "models"), "--format", "json")
    assert json.loads(out) == [r.to_dict() for r in api]


def test_a_directory_ranks_its_files_as_validate_reads_them(exported, tmp_path, capsys):
    """`tpuperf rank DIR` said "DIR: no such file" for a directory that exists, which `tpuperf validate DIR` reads
    (recursively): it now ranks the directory's .npz files, sorted, each as if named; a missing path and a directory
    without .npz files are named as validate names them."""
    root, params = exported
    test_dir = get_collection("layout:nlp:random").split_dir(params.data.out, "test")
    files = sorted(test_dir.glob("*.npz"))
    by_dir = tpuperf.rank([test_dir], root / "models")
    by_file = tpuperf.rank(files, root / "models")
    assert [r.path for r in by_dir] == files
    assert [r.config_ids.tolist() for r in by_dir] == [r.config_ids.tolist() for r in by_file]
    (tmp_path / "empty").mkdir()
    for path, problem in (
        (tmp_path / "empty", "no .npz files in it"),
        (tmp_path / "gone", "no such file or directory"),
    ):
        code, out, err = run_cli(capsys, "rank", str(path), "--model", str(root / "models"))
        assert (code, out, err.strip()) == (1, "", f"tpuperf rank failed: {path}: {problem}")


def test_a_file_named_twice_is_ranked_once(exported, tmp_path, monkeypatch):
    """Files were told apart by their path string: the same file named through `..`, by its absolute path, through
    a symlink or hard link, or found again in its directory, was ranked, and listed, once per name. It is ranked
    once, under the name it came first with; a copy is another file."""
    root, params = exported
    src = get_collection("layout:nlp:random").split_dir(params.data.out, "test") / "synthetic_test.npz"
    shutil.copy(src, tmp_path / "prog.npz")
    shutil.copy(src, tmp_path / "copy.npz")
    (tmp_path / "link.npz").symlink_to("prog.npz")
    (tmp_path / "hard.npz").hardlink_to(tmp_path / "prog.npz")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    names = ["prog.npz", "sub/../prog.npz", tmp_path / "prog.npz", "link.npz", "hard.npz", tmp_path]
    ranked = tpuperf.rank(names, root / "models", collection="layout:nlp:random")
    assert [r.path for r in ranked] == [Path("prog.npz"), tmp_path / "copy.npz"]
    assert np.array_equal(ranked[0].config_ids, ranked[1].config_ids)


def test_collection_from_argument_for_a_file_outside_the_dataset_layout(exported, tmp_path):
    root, params = exported
    src = get_collection("layout:nlp:random").split_dir(params.data.out, "test") / "synthetic_test.npz"
    loose = tmp_path / "my_program.npz"
    shutil.copy(src, loose)
    with pytest.raises(
        ModelExportError, match=r"my_program.npz: cannot tell its collection from the path: pass --collection"
    ):
        tpuperf.rank([loose], root / "models")
    by_arg = tpuperf.rank([loose], root / "models", collection="layout:nlp:random")[0]
    in_layout = tpuperf.rank([src], root / "models")[0]
    assert np.array_equal(by_arg.config_ids, in_layout.config_ids)
    # a model dir of one collection tells it too
    assert np.array_equal(tpuperf.rank([loose], root / "models/layout-nlp-random")[0].config_ids, in_layout.config_ids)


def test_a_program_without_measured_runtimes_ranks_as_with_zeros(exported, tmp_path):
    """A new program has no runtimes: a file without config_runtime (and, tile, its normalisers)
    ranks exactly as the same file holding zeros (the real test files too, when present)."""
    root, params = exported
    files = [get_collection(c).split_dir(params.data.out, "test") / "synthetic_test.npz" for c in COLLECTIONS]
    files += [f for c in COLLECTIONS if REAL_TEST[c].is_dir() for f in sorted(REAL_TEST[c].glob("*.npz"))[:1]]
    for i, src in enumerate(files):
        collection, _ = locate(src)
        bare = tmp_path / f"program{i}.npz"
        shutil.copy(src, bare)
        _rewrite_npz(bare, drop=("config_runtime", "config_runtime_normalizers"))
        assert "config_runtime" not in read_header(bare)
        got = tpuperf.rank([bare], root / "models", collection=collection.name)[0]
        want = tpuperf.rank([src], root / "models")[0]
        assert got.num_configs == want.num_configs == read_header(src)["config_runtime"].shape[0]
        assert np.array_equal(got.config_ids, want.config_ids), src
        assert np.array_equal(got.ensemble_score, want.ensemble_score)


# ---------------------------------------------------------------- bad inputs: clear errors, nothing written


def test_file_of_another_collection_than_the_model(exported, capsys):
    root, params = exported
    tile = get_collection("tile:xla").split_dir(params.data.out, "test") / "synthetic_test.npz"
    with pytest.raises(
        ModelExportError,
        match=rf"{tile}: is tile:xla but {root}/models/layout-xla-default holds a model for layout:xla:default only",
    ):
        tpuperf.rank([tile], root / "models/layout-xla-default")
    code, out, err = run_cli(capsys, "rank", str(tile), "--model", str(root / "models/layout-xla-default"))
    assert code == 1 and out == "" and "tpuperf rank failed:" in err and "is tile:xla" in err
    layout = get_collection("layout:xla:default").split_dir(params.data.out, "test") / "synthetic_test.npz"
    with pytest.raises(
        ModelExportError, match="its path says layout:xla:default but the collection given is layout:nlp:random"
    ):
        tpuperf.rank([layout], root / "models", collection="layout:nlp:random")


def test_file_with_the_other_kind_of_arrays(exported, tmp_path):
    root, params = exported
    tile = tmp_path / "kernel.npz"
    shutil.copy(get_collection("tile:xla").split_dir(params.data.out, "test") / "synthetic_test.npz", tile)
    with pytest.raises(
        DataFormatError,
        match=r"kernel.npz: holds tile arrays \(config_feat, config_runtime_normalizers\), not layout:nlp:random's",
    ):
        tpuperf.rank([tile], root / "models", collection="layout:nlp:random")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"drop": ("node_opcode",)}, r"node_opcode: missing key"),
        ({"node_feat": np.zeros((6, 139), np.float32)}, r"node_feat: shape \(6, 139\): axis 1 should be 140"),
        (
            {"node_config_feat": np.full((4, 2, 18), 7.0, np.float32)},
            r"node_config_feat: value 7.0 is not an integer in -1..5",
        ),
        ({"edge_index": np.array([[0, 9]], np.int64)}, r"edge_index: ids range 0..9 outside 0..5"),
    ],
)
def test_missing_or_malformed_arrays(exported, tmp_path, change, message):
    root, params = exported
    path = _write_graph(tmp_path, "layout:xla:default", "test", name="bad")
    _rewrite_npz(path, **change)
    with pytest.raises(DataFormatError, match=f"{path}: {message}"):
        tpuperf.rank([path], root / "models")


def test_a_feature_the_transform_takes_beyond_float32_names_the_file(exported, tmp_path, capsys):
    """A finite float32 feature far beyond the training data (3e38 in a standardised column) overflowed in the
    transform: rank ended in a FloatingPointError traceback ("model produced non-finite scores"). Now one line
    naming the file, the field and the column, and nothing on stdout."""
    root, params = exported
    stats = json.loads((root / "models" / "layout-xla-default" / "manifest.json").read_text())["stats"]["node_feat"]
    column = next(c for c, std in zip(stats["columns"], stats["std"]) if c not in stats["log_columns"] and std < 1)
    path = _write_graph(tmp_path, "layout:xla:default", "test", name="wide")
    with np.load(path) as npz:
        feat = npz["node_feat"].copy()
    feat[:, column] = 3e38
    _rewrite_npz(path, node_feat=feat)
    code, out, err = run_cli(capsys, "rank", str(path), "--model", str(root / "models"))
    assert code == 1 and out == ""
    assert f"{path}: node_feat: column {column}: value 3e+38 overflows float32 once transformed" in err


def test_opcode_beyond_the_models_embedding(exported, tmp_path, capsys):
    """The models clip opcode ids into their 128-row table: a newer op id would silently share a row."""
    root, params = exported
    path = _write_graph(tmp_path, "layout:xla:default", "test", name="new_op")
    with np.load(path) as npz:
        opcode = npz["node_opcode"].copy()
    opcode[0] = 200
    _rewrite_npz(path, node_opcode=opcode)
    code, out, err = run_cli(capsys, "rank", str(path), "--model", str(root / "models"))
    assert code == 1 and out == ""
    assert f"{path}: opcode id 200 is beyond the 128-row opcode embedding of the exported chebsage" in err


def test_opcodes_training_never_saw_are_named(exported, tmp_path):
    """An opcode within the 128-row table that no train graph's node had keeps its random initial embedding row:
    the models read that op as noise. The export records the ids training saw; rank warns with the count and
    the ops, and is quiet for a program of seen ops."""
    import warnings

    root, params = exported
    col = get_collection("tile:xla")
    seen = json.loads((root / "models" / col.slug / "manifest.json").read_text())["train_opcodes"]
    cache_ops = set().union(
        *(set(g.node_opcode.tolist()) for g in CollectionCache(params.preprocess.out, col).graphs("train"))
    )
    assert seen == sorted(cache_ops)
    unseen = min(set(range(1, 128)) - set(seen))
    path = _write_graph(tmp_path, col.name, "test", name="seen_ops")
    with np.load(path) as npz:
        opcode = np.full_like(npz["node_opcode"], seen[0])
    _rewrite_npz(path, node_opcode=opcode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tpuperf.rank([path], root / "models")
    assert not [w for w in caught if "never saw" in str(w.message)]
    opcode[[0, 2]] = unseen
    _rewrite_npz(path, node_opcode=opcode)
    name = opcode_name(unseen)
    with pytest.warns(
        UserWarning,
        match=rf"{path}: 2 of its {len(opcode)} nodes have opcodes the tile:xla models never "
        rf"saw in training: {name} \({unseen}\) x2; their embeddings are untrained",
    ):
        tpuperf.rank([path], root / "models")


def test_train_opcodes_leave_out_the_train_graphs_training_leaves_out():
    """A train graph without 2 distinct runtimes (the real openai_v0_rnn_optimized: 20 identical configs) is left
    out of every training batch, so an opcode only it has was never trained: the manifest listed it as seen."""

    class Cache:
        def graphs(self, split):
            assert split == "train"
            return [
                dataclasses.make_dataclass("G", ["node_opcode", "runtime"])(np.array([3, 5, 3]), np.array([1.0, 2.0])),
                dataclasses.make_dataclass("G", ["node_opcode", "runtime"])(np.array([7, 3]), np.array([4.0, 4.0])),
            ]

    assert train_opcodes(Cache()) == [3, 5]


def test_opcode_vocab_is_read_once_at_load(exported, tmp_path):
    """Each member's opcode table size is read with the manifest when the export loads (the table
    the member is built with), not from the manifest again on every rank call."""
    root, params = exported
    col = get_collection("layout:xla:default")
    model = ExportedModel(root / "models" / col.slug)
    assert model.opcode_vocab == {name: m.node_encoder.embedding.input_dim for name, m in model.models.items()}
    assert model.opcode_vocab == {name: 128 for name in MODELS}
    for spec in model.manifest["models"].values():  # rank_graphs must not look here any more
        del spec["params"]["opcode_vocab"]
    path = _write_graph(tmp_path, col.name, "test", name="known_ops")
    ranking = model.rank_graphs([prepare_graph(path, col, model.stats)])[0]
    assert sorted(ranking.config_ids) == list(range(ranking.num_configs))


def test_every_file_is_checked_before_output(exported, tmp_path, capsys):
    root, params = exported
    good = get_collection("tile:xla").split_dir(params.data.out, "test") / "synthetic_test.npz"
    bad = _rewrite_npz(_write_graph(tmp_path, "tile:xla", "test", name="bad"), drop=("config_feat",))
    code, out, err = run_cli(capsys, "rank", str(good), str(bad), "--model", str(root / "models"))
    assert code == 1 and out == "" and f"{bad}: config_feat: missing key" in err


def copy_export(root: Path, tmp_path: Path) -> Path:
    model = tmp_path / "layout-xla-default"
    shutil.copytree(root / "models/layout-xla-default", model)
    return model


def edit_manifest(model: Path, edit) -> None:
    path = model / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_model_made_by_another_version(exported, tmp_path):
    root, params = exported
    model = copy_export(root, tmp_path)
    edit_manifest(model, lambda m: m.update(tpuperf_version="0.0.1"))
    with pytest.raises(
        ModelExportError,
        match=rf"{model}/manifest.json: made by tpuperf 0.0.1 \(export format {EXPORT_FORMAT}\); this is "
        rf"tpuperf {tpuperf.__version__} \(format {EXPORT_FORMAT}\): re-export it",
    ):
        ExportedModel(model)


def test_model_made_by_other_sources(exported, tmp_path):
    """Same version, other code (e.g. the tile bounds' decoding changed, weight shapes alike): refused."""
    root, params = exported
    model = copy_export(root, tmp_path)
    here = json.loads((model / "manifest.json").read_text())["fingerprint"]["code"]
    assert here == code_fingerprint() and len(here) == 16
    ExportedModel(model)  # this code's export loads
    edit_manifest(model, lambda m: m["fingerprint"].update(code="0123456789abcdef"))
    with pytest.raises(
        ModelExportError,
        match=rf"{model}/manifest.json: made by other tpuperf sources \(code fingerprint 0123456789abcdef, these "
        rf"sources {here}\): re-export it with this code \(`dvc repro export@layout-xla-default`\)",
    ):
        ExportedModel(model)


def test_manifest_without_a_field(exported, tmp_path):
    root, params = exported
    model = copy_export(root, tmp_path)
    edit_manifest(model, lambda m: m.pop("stats"))
    with pytest.raises(
        ModelExportError, match=rf"{model}/manifest.json: no \['stats'\] \(a partial or hand-edited export"
    ):
        ExportedModel(model)


def test_model_from_other_features(exported, tmp_path):
    """A transform keeping one column fewer than the weights were trained on cannot load."""
    root, params = exported
    model = copy_export(root, tmp_path)

    def drop_column(m):
        node = m["stats"]["node_feat"]
        for key in ("columns", "mean", "std"):
            node[key] = node[key][1:]
        node["dim"] -= 1
        m["stats"]["node_feat_dim"] -= 1

    edit_manifest(model, drop_column)
    with pytest.raises(
        ModelExportError,
        match=rf"{model}/chebsage/fold_0.npz: \d+ arrays do not fit the model's \d+: variable \d+ "
        r".* is \(\d+, 8\), the model built from the manifest needs \(\d+, 8\) "
        r"\(made from other features or model settings\?\)",
    ):
        ExportedModel(model)


def test_not_an_export(tmp_path, exported):
    with pytest.raises(
        ModelExportError, match=rf"{tmp_path}: no manifest.json in it or in a <collection-slug>/ subdirectory"
    ):
        tpuperf.rank([exported[1].data.out + "/npz/tile/xla/test/synthetic_test.npz"], tmp_path)


def test_export_refuses_an_unfinished_fold_and_keeps_the_previous_export(exported, tmp_path):
    root, params = exported
    params = dataclasses.replace(
        params, train=dataclasses.replace(params.train, checkpoints_dir=str(tmp_path / "checkpoints"))
    )
    shutil.copytree(Path(root, "checkpoints"), tmp_path / "checkpoints")
    state = tmp_path / "checkpoints/tile-xla/sage/fold_1/state.json"
    state.write_text(json.dumps({"finished": False}))
    before = (root / "models/tile-xla/manifest.json").read_bytes()
    with pytest.raises(ExportError, match=rf"{state}: fold 1 of sage has not finished training"):
        export_collection(params, get_collection("tile:xla"))
    assert (root / "models/tile-xla/manifest.json").read_bytes() == before
    assert [p.name for p in (root / "models").iterdir() if p.name.startswith(".")] == []


def test_export_refuses_a_run_report_that_does_not_name_its_checkpoints(exported, tmp_path):
    """A report written before reports recorded each fold's state_fingerprint cannot say which checkpoints it
    describes (tests/test_train.py: a train run stopped after a fold finished)."""
    root, params = exported
    params = dataclasses.replace(
        params,
        train=dataclasses.replace(params.train, runs_dir=str(tmp_path / "runs")),
        export=dataclasses.replace(params.export, out=str(tmp_path / "models")),
    )
    shutil.copytree(root / "runs", tmp_path / "runs")
    report = tmp_path / "runs" / "tile-xla" / "sage" / "report.json"
    old = json.loads(report.read_text())
    del old["folds"][1]["state_fingerprint"]
    report.write_text(json.dumps(old))
    with pytest.raises(ExportError, match=rf"{report}: records no state_fingerprint for fold 1 \(an older tpuperf\)"):
        export_collection(params, get_collection("tile:xla"))
    assert list((tmp_path / "models").iterdir()) == []


def test_export_refuses_a_cache_built_with_other_preprocess_settings(exported, tmp_path):
    """params.yaml's preprocess.prune edited, `tpuperf export` run by hand without preprocess and train: the export
    would carry the old cache's pruning under the new setting's name."""
    root, params = exported
    other = "chains" if params.preprocess.prune == "khop" else "khop"
    params = dataclasses.replace(
        params,
        preprocess=dataclasses.replace(params.preprocess, prune=other),
        export=dataclasses.replace(params.export, out=str(tmp_path / "models")),
    )
    with pytest.raises(CacheError, match=rf"stats.json: built with preprocess.prune '\w+' \(params.yaml: '{other}'\)"):
        export_collection(params, get_collection("layout:xla:default"))
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("change", ["re-preprocessed cache", "model setting", "tpuperf sources"])
def test_export_refuses_checkpoints_of_other_data_or_model_settings(exported, tmp_path, monkeypatch, change):
    """`tpuperf export` after `tpuperf preprocess` (here: other pruning hops), a model edit of the same weight
    shapes (dropout) or a source edit, without training again, packaged the old weights with the new transform,
    settings or code silently. The run reports say what the runs were trained with, and the export refuses them
    as the ensemble does (tpuperf.submission.ensemble.check_reports); each fold's state.json says what its weights
    were trained for (weights_for, which also holds the sources)."""
    from tpuperf.submission.ensemble import EnsembleError

    root, params = exported
    name = "layout:xla:default"
    col = get_collection(name)
    shutil.copytree(root / "checkpoints", tmp_path / "checkpoints")
    shutil.copytree(root / "cache", tmp_path / "cache")
    params = dataclasses.replace(
        params,
        train=dataclasses.replace(params.train, checkpoints_dir=str(tmp_path / "checkpoints")),
        preprocess=dataclasses.replace(params.preprocess, out=str(tmp_path / "cache")),
        export=dataclasses.replace(params.export, out=str(tmp_path / "models")),
    )
    export_collection(params, col)  # the copies as trained: exported
    state = tmp_path / "checkpoints" / col.slug / "chebsage" / "fold_0" / "state.json"
    if change == "re-preprocessed cache":
        settings = dataclasses.replace(params.preprocess, hops=params.preprocess.hops + 1)
        preprocess_collection(params.data.out, params.preprocess.out, col, settings, progress=False)
        params = dataclasses.replace(params, preprocess=settings)  # params.yaml edited, then preprocess run
        error, message = EnsembleError, "every model .* was predicted from another cache"
    elif change == "model setting":
        models = dict(params.models)
        models["chebsage"] = dataclasses.replace(models["chebsage"], dropout=0.5)
        params = dataclasses.replace(params, models=models)
        error, message = EnsembleError, r"models.chebsage.dropout: 0.0 in its run report, 0.5 in params.yaml"
    else:
        monkeypatch.setattr("tpuperf.provenance.source_fingerprint", lambda: "edited")
        error, message = ExportError, rf"{state}: fold 0 of chebsage was trained for other data, model settings"
    with pytest.raises(error, match=message):
        export_collection(params, col)


def test_rank_says_when_the_model_learnt_from_generated_data(exported, tmp_path):
    """The default pipeline without Kaggle credentials trains on the synthetic dataset; `tpuperf rank` then
    ranked a compiler engineer's program with it and said nothing (only the download stage's banner told).
    The cache's stats.json keeps the dataset's source (its manifest.json), the export carries it, and loading
    such an export warns."""
    import warnings

    from tpuperf.data.download import download

    root, params = exported
    params = dataclasses.replace(
        params,
        data=dataclasses.replace(
            params.data,
            source="synthetic",
            out=str(tmp_path / "data"),
            fingerprint=str(tmp_path / "source.json"),
            synthetic=dataclasses.replace(params.data.synthetic, preset="tiny"),
        ),
        preprocess=dataclasses.replace(params.preprocess, out=str(tmp_path / "cache")),
        train=dataclasses.replace(
            params.train, checkpoints_dir=str(tmp_path / "checkpoints"), runs_dir=str(tmp_path / "runs")
        ),
        export=dataclasses.replace(params.export, out=str(tmp_path / "models")),
    )
    col = get_collection("tile:xla")
    download(params.data)
    preprocess_collection(params.data.out, params.preprocess.out, col, params.preprocess, progress=False)
    assert CollectionCache(params.preprocess.out, col).stats["data_source"] == "synthetic"
    write_untrained_members(params, col)
    out = export_collection(params, col)
    test_file = next(col.split_dir(params.data.out, "test").glob("*.npz"))
    with pytest.warns(UserWarning, match=r"trained on GENERATED data \(data\.source synthetic\)"):
        tpuperf.rank([test_file], out)
    with warnings.catch_warnings():  # an export of files without a download manifest: nothing to say
        warnings.simplefilter("error")
        ExportedModel(root / "models" / col.slug)
    assert json.loads((root / "models" / col.slug / "manifest.json").read_text())["stats"]["data_source"] is None


def test_speed_benchmark_quick_run_reports_load_and_rank_times(capsys):
    assert rank_speed.main(["--quick", "--repeats", "1"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["collection"] for r in results] == ["layout:xla:random", "tile:xla"]
    assert [r["configs"] for r in results] == [50, 100]
    for r in results:
        assert r["load_s"] > 0 and r["rank_s"] == pytest.approx(r["prepare_s"] + r["score_s"], abs=2e-3)
        assert list(r["member_score_s"]) == ["chebsage"] and r["member_score_s"]["chebsage"] > 0


def test_speed_benchmark_reads_another_params_file(tmp_path, capsys):
    """--params: the export is built from that file (here its ensemble.models: sage first)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ensemble"]["models"] = ["sage", "baseline"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    assert (
        rank_speed.main(["--quick", "--repeats", "1", "--kinds", "layout", "--params", str(tmp_path / "p.yaml")]) == 0
    )
    (r,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(r["member_score_s"]) == ["sage"]


def test_speed_benchmark_before_is_the_session_start_ops_and_models(capsys):
    """--before ranks with an export of the session start's models (throughput.session_start: chebsage's
    2 per-config layers, as scale.py's before), not only the current export under the old ops."""
    assert rank_speed.main(["--quick", "--repeats", "1", "--kinds", "layout", "--before"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    (r,) = json.loads(out[-1])
    assert list(r["versions"]) == ["before"] and r["config_layers"] == {"chebsage": 1}  # --quick: 1 layer
    before = r["versions"]["before"]
    assert before["config_layers"] == {"chebsage": 2} and before["rank_s"] > 0
    assert any(
        line.startswith("  before (same process): ") and "per-config layers {'chebsage': 2}" in line for line in out
    )


def test_speed_benchmark_versions_and_profile(capsys):
    """--chunks (exact: same ensemble scores), --members all best and --profile chebsage (a layer and
    op-class breakdown of the XLA program, no retracing) on the quick layout graph."""
    argv = ["--quick", "--repeats", "1", "--kinds", "layout", "--jit", "on", "--chunks", "16"]
    assert rank_speed.main(argv + ["--members", "all", "best", "--profile", "chebsage"]) == 0
    (r,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(r["versions"]) == ["chunks of 16", "members best"] and r["members_option"] == "all"
    assert r["versions"]["chunks of 16"]["max_score_change"] < 1e-4
    profile = r["profile"]
    assert profile["model"] == "chebsage" and profile["traces_added"] == 0
    assert {"node_encoder", "shared_block_0", "config_encoder", "cost_features", "config_block_0", "head"} <= set(
        profile["by_layer_s"]
    )
    assert sum(v["total"] for v in profile["by_layer_s"].values()) <= profile["xla_s"] + 1e-3
    assert set(profile["by_op_class_s"]) <= {
        "layer norm",
        "gather",
        "segment sum (scatter)",
        "dense (dot)",
        "elementwise",
    }
    assert profile["call_s"] == pytest.approx(profile["xla_s"] + profile["host_s"], abs=2e-3)


def test_ranking_under_the_cpus_strategy_gives_the_same_scores(tmp_path):
    """An export loaded with train.strategy cpus over 2 logical CPUs (its replicas score different
    batches of the graph at once, XLA-compiled per device) gives every member's scores of the default
    strategy (float32 rounding) and the same ranking. In a subprocess: the CPU is split before TensorFlow starts."""
    script = f"""
import dataclasses, sys
from pathlib import Path
import numpy as np
from tpuperf.training.strategy import select_strategy
cpus = select_strategy("cpus", 2)
sys.path.insert(0, {str(REPO / "benchmarks")!r})
import rank_speed
from tpuperf.collection import get_collection
from tpuperf.data.preprocess import prepare_graph
from tpuperf.data.synthetic import make_layout_graph, write_graph
from tpuperf.ranking.ranker import ExportedModel
root, rng = Path({str(tmp_path)!r}), np.random.default_rng(0)
export = rank_speed.build_export(root, rank_speed.bench_params(root, True, None, True), "layout", rng)
write_graph(root / "new.npz", make_layout_graph(rng, 300, 20, 60, labelled=False))
one, two = ExportedModel(export), ExportedModel(export, cpus)
for model in (one, two):  # one graph per batch, 16 configs each: 4 batches
    rank_speed.with_chunks(model, 16).plan = dataclasses.replace(model.plan, graphs_per_batch=1)
graph = prepare_graph(root / "new.npz", get_collection("layout:xla:random"), one.stats)
a, b = (m.member_scores([graph]).sort("model", "fold", "config_id") for m in (one, two))
assert a.height == b.height == 60 * 2, (a.height, b.height)
np.testing.assert_allclose(b["pred"].to_numpy(), a["pred"].to_numpy(), rtol=1e-4, atol=1e-5)
ra, rb = (m.rank_graphs([graph])[0] for m in (one, two))
assert np.array_equal(ra.config_ids, rb.config_ids)
assert two.strategy.num_replicas_in_sync == 2 and two.scorer("chebsage").compilations == 2  # one per device
print("OK", one.scorer("chebsage").compilations)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "OK 1" in done.stdout
