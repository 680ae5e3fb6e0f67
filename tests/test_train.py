"""K-fold training on a tiny synthetic cache: outputs, resume after an interruption, bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import config_with

from tpuperf.collection import get_collection
from tpuperf.config import Config, ConfigError
from tpuperf.data.preprocess import preprocess_collection
from tpuperf.data.synthetic import write_dataset
from tpuperf.metrics import collection_score

COLLECTION = get_collection("layout:xla:random")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_dataset(root / "data", preset="tiny", seed=0)
    preprocess_collection(root / "data", root / "cache", COLLECTION, config_with({}).preprocess, progress=False)
    return root / "cache"


def small_params(cache: Path, out: Path, **train) -> Config:
    small_model = dict(units=8, config_units=8, shared_layers=1, config_layers=1)
    return config_with(
        {
            "preprocess": {"out": str(cache)},
            "train": {
                **dict(
                    folds=2,
                    epochs=3,
                    patience=5,
                    graphs_per_batch=2,
                    configs_per_graph=8,
                    predict_configs_per_graph=16,
                    samples_per_graph={"tile": 1, "layout": 2},
                    eval_configs=16,
                    jit_compile=False,
                    verbose=0,
                    runs_dir=str(out / "runs"),
                    checkpoints_dir=str(out / "checkpoints"),
                ),
                **train,
            },
            "models": {name: small_model for name in ("chebsage", "sage", "cheb", "baseline")},
        }
    )


def test_folds_are_deterministic_balanced_and_need_enough_graphs():
    from tpuperf.training.trainer import TrainingError, assign_folds

    ids = [f"g{i}" for i in range(10)]
    folds = assign_folds(ids, 3, seed=1)
    assert folds == assign_folds(list(reversed(ids)), 3, seed=1)
    assert sorted(np.bincount(list(folds.values()))) == [3, 3, 4]
    assert folds != assign_folds(ids, 3, seed=2)
    with pytest.raises(
        TrainingError, match=r"only 2 training graphs for 3 folds \(train.folds >= 2\): lower train.folds to 2"
    ):
        assign_folds(["a", "b"], 3, seed=0)
    with pytest.raises(
        TrainingError, match=r"only 1 training graphs for 2 folds \(train.folds >= 2\): add train graphs$"
    ):
        assign_folds(["a"], 2, seed=0)


def test_tile_valid_and_oof_scores_rank_a_top_5_as_the_submission_does():
    """A tile kernel whose configs 1 and 3 are config 0 again (identical features: config_first): ranked by
    pred, the plain top 5 (0, 1, 2, 3, 4) spends 2 slots on config 0 and misses config 5, the fastest
    (2 - 3 / 1 = -1); the submission's row lists distinct configurations first (0, 2, 4, 5, 6: 1.0). The
    trainer's score (valid: every row; OOF: a sample of rows, the labels taken at them) is that row's score,
    as is the ensemble's valid report (score_predictions)."""
    from graph_factory import fake_graph

    from tpuperf.metrics import tile_score_of_ranking
    from tpuperf.submission.csv import rankings_from_predictions
    from tpuperf.submission.ensemble import score_predictions
    from tpuperf.training.trainer import mean_score

    tile = get_collection("tile:xla")
    runtime = np.array([3.0, 3.0, 4.0, 3.0, 5.0, 1.0, 6.0, 2.0])
    first = np.array([0, 0, 2, 0, 4, 5, 6, 7])
    graph = dataclasses.replace(
        fake_graph(np.random.default_rng(0), "tile", nodes=5, configs=8, name="k"), runtime=runtime, config_first=first
    )
    labels = {(tile.name, "k"): first}

    def frame(config_ids: np.ndarray, pred: np.ndarray) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "collection": tile.name,
                "graph_id": "k",
                "config_id": config_ids,
                "pred": pred,
                "runtime": runtime[config_ids],
            }
        )

    pred = np.arange(8.0)
    row = rankings_from_predictions(frame(np.arange(8), pred), labels)["tile:xla:k"]
    assert row[:5].tolist() == [0, 2, 4, 5, 6]
    assert mean_score(tile, [graph], {"k": pred}) == pytest.approx(tile_score_of_ranking(row, runtime))  # plain: -1
    assert score_predictions(frame(np.arange(8), pred), labels) == pytest.approx({tile.name: 1.0})

    rows = np.array([1, 0, 3, 2, 4, 7])  # an OOF sample without config 5; best of it: config 7 (2.0), scored last
    pred = np.arange(6.0)
    row = rankings_from_predictions(frame(rows, pred), labels)["tile:xla:k"]
    assert row[:5].tolist() == [1, 2, 4, 7, 0]  # plain: 1, 0, 3, 2, 4 (2 - 3 / 2)
    assert mean_score(tile, [graph], {"k": pred}, {"k": rows}) == pytest.approx(1.0)
    assert score_predictions(frame(rows, pred), labels) == pytest.approx({tile.name: 1.0})


def test_layout_valid_and_oof_scores_are_the_submission_rows_tau_when_scores_tie():
    """Identical configurations of a layout valid file (kept there: the real unet3d holds 1,159 configs, 681
    distinct) score alike. Kendall tau-b of the raw scores counts such a pair as a tie (5 / sqrt(5 * 6) = 0.913
    here); the submission row cannot tie, it lists config 0 before config 1 (the lower id), although config 1
    is faster: 4 / 6. The trainer's score is the row's, as the ensemble's valid report is."""
    from graph_factory import fake_graph

    from tpuperf.submission.ensemble import score_predictions
    from tpuperf.training.trainer import mean_score

    layout = get_collection("layout:xla:default")
    runtime = np.array([2.0, 1.0, 3.0, 4.0])
    graph = dataclasses.replace(
        fake_graph(np.random.default_rng(0), "layout", nodes=5, configs=4, name="g"), runtime=runtime
    )
    pred = np.array([0.5, 0.5, 1.0, 2.0], dtype=np.float32)
    frame = pl.DataFrame(
        {"collection": layout.name, "graph_id": "g", "config_id": np.arange(4), "pred": pred, "runtime": runtime}
    )
    assert score_predictions(frame) == pytest.approx({layout.name: 4 / 6})
    assert mean_score(layout, [graph], {"g": pred}) == pytest.approx(4 / 6)  # raw tau-b: 0.913
    assert mean_score(layout, [graph], {"g": pred[[1, 2, 3]]}, {"g": np.array([1, 2, 3])}) == pytest.approx(1.0)


def test_batch_stream_is_deterministic_and_skips_exactly(tiny_cache):
    from tpuperf.data.cache import CollectionCache
    from tpuperf.training.batches import Buckets, plan_batch_shape
    from tpuperf.training.trainer import batch_stream

    graphs = sorted(CollectionCache(tiny_cache, COLLECTION).graphs("train"), key=lambda g: g.num_nodes)
    graphs_by_id = {g.graph_id: g for g in graphs}
    small, big = (
        graphs[: len(graphs) // 2],
        graphs[len(graphs) // 2 :],
    )  # two buckets (tiny graphs are too alike to split)
    buckets = Buckets(
        (small[-1].num_nodes, big[-1].num_nodes), tuple(plan_batch_shape(g, 2, 8, 1.0) for g in (small, big))
    )
    assert small[-1].num_nodes < big[-1].num_nodes

    def signature(step):
        bucket, batches = step
        return bucket, [[(item.graph.graph_id, tuple(item.rows)) for item in batch] for batch in batches]

    for replicas in (1, 2):
        stream = batch_stream(graphs, buckets, samples=3, seed=5, replicas=replicas)
        first = [signature(next(stream)) for _ in range(12)]
        again = batch_stream(graphs, buckets, samples=3, seed=5, replicas=replicas)
        assert [signature(next(again)) for _ in range(12)] == first
        resumed = batch_stream(graphs, buckets, samples=3, seed=5, replicas=replicas, start_step=7)
        assert [signature(next(resumed)) for _ in range(5)] == first[7:]
        assert len({gid for _, batches in first for batch in batches for gid, _ in batch}) == len(graphs)
        for bucket, batches in first:  # every replica of a step gets a batch of the step's bucket
            assert len(batches) == replicas
            assert {buckets.index(graphs_by_id[gid]) for batch in batches for gid, _ in batch} == {bucket}
    assert len({bucket for bucket, _ in first}) == len(buckets.shapes)


def test_training_writes_predictions_for_every_config_and_metrics(tiny_cache, tmp_path, umask, file_modes):
    from tpuperf.data.cache import CollectionCache
    from tpuperf.training.trainer import train_collection

    umask(0o022)
    params = small_params(tiny_cache, tmp_path)
    metrics = train_collection(COLLECTION, "chebsage", params)
    run = tmp_path / "runs" / COLLECTION.slug / "chebsage"
    assert file_modes(tmp_path / "runs") == file_modes(tmp_path / "checkpoints") == {"0o644"}
    assert json.loads((run / "report.json").read_text()) == metrics
    assert json.loads((run / "metrics.json").read_text()) == {
        "oof": metrics["oof_score"],
        "valid": metrics["valid_score_mean_fold"],
    }
    assert [f["fold"] for f in metrics["folds"]] == [0, 1]
    for f in metrics["folds"]:  # the checkpoints the report describes (the export checks them)
        state = tmp_path / "checkpoints" / COLLECTION.slug / "chebsage" / f"fold_{f['fold']}" / "state.json"
        assert f["state_fingerprint"] == json.loads(state.read_text())["fingerprint"]
    assert metrics["metric"] == "kendall_tau" and -1 <= metrics["oof_score"] <= 1

    cache = CollectionCache(tiny_cache, COLLECTION)
    made_from = metrics["predicted_from"]  # what the ensemble checks against the cache
    assert {k: made_from[k] for k in ("stats", "graphs")} == cache.identity()
    assert made_from["model"]["dropout"] == params.model("chebsage").dropout and made_from["train"]["folds"] == 2
    files = {k: run / "predictions" / f"fold_{k}.parquet" for k in (0, 1)}
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files.values()}
    assert metrics["predictions"] == digests  # the fold files this report describes (the ensemble checks them)
    oof_ids = set()
    for fold in (0, 1):
        frame = pl.read_parquet(run / "predictions" / f"fold_{fold}.parquet")
        for split in ("valid", "test"):
            part = frame.filter(pl.col("split") == split)
            expected = sum(g.num_configs for g in cache.graphs(split))
            assert part.height == expected
            assert set(part["graph_id"]) == set(cache.graph_ids(split))
        assert frame["pred"].is_finite().all()
        oof = frame.filter(pl.col("split") == "oof")
        oof_ids |= set(oof["graph_id"])
        eval_configs = params.train.eval_configs
        graphs = {g.graph_id: g for g in cache.graphs("train")}
        for gid, part in oof.group_by("graph_id"):  # the best epoch's early-stopping sample
            assert part.height == min(eval_configs, graphs[gid[0]].num_configs)
        by_graph = {gid[0]: part.sort("config_id") for gid, part in oof.group_by("graph_id")}
        oof_score = collection_score(
            COLLECTION,
            {g: p["pred"].to_numpy() for g, p in by_graph.items()},
            {g: p["runtime"].to_numpy() for g, p in by_graph.items()},
        )
        assert oof_score == pytest.approx(metrics["folds"][fold]["oof_score"], abs=1e-9)
    assert oof_ids == set(cache.graph_ids("train"))  # every train graph is out-of-fold exactly once

    from tpuperf.ranking.export import export_collection

    # the export takes these checkpoints: they say they were trained for this cache and model (weights_for)
    export_params = dataclasses.replace(
        params,
        ensemble=dataclasses.replace(params.ensemble, models=("chebsage",)),
        export=dataclasses.replace(params.export, out=str(tmp_path / "models")),
    )
    assert (export_collection(export_params, COLLECTION) / "manifest.json").is_file()
    curves = run / "live" / "plots" / "metrics" / "fold_0" / "oof_score.tsv"
    assert len(curves.read_text().strip().splitlines()) == 1 + params.train.epochs


def test_export_refuses_a_fold_finished_by_a_train_run_that_was_stopped(tiny_cache, tmp_path, monkeypatch):
    """A train run with another learning rate, stopped after its fold 0 finished (while scoring fold 0's valid and
    test graphs, before the fold file and the report): fold 0's checkpoint is new, fold 1's and the report (its
    out-of-fold score, the export's weights) the previous run's. With the learning rate edited back, every
    state.json is finished and trained for this cache and model (weights_for): the export packed the two runs'
    folds together. With the edit kept, the report is of other settings: the ensemble refuses it, the export
    did not."""
    from tpuperf.ranking.export import ExportError, export_collection
    from tpuperf.submission.ensemble import EnsembleError
    from tpuperf.training import trainer as train

    def params(lr: float) -> Config:
        p = small_params(tiny_cache, tmp_path, epochs=1, learning_rate=lr)
        return dataclasses.replace(
            p,
            ensemble=dataclasses.replace(p.ensemble, models=("sage",)),
            export=dataclasses.replace(p.export, out=str(tmp_path / "models")),
        )

    train.train_collection(COLLECTION, "sage", params(0.003))
    export_collection(params(0.003), COLLECTION)

    real_frame = train.prediction_frame

    def stopped(split, *args, **kwargs):
        if split != "oof":  # the fold's valid and test predictions, after its training finished
            raise KeyboardInterrupt("simulated kill")
        return real_frame(split, *args, **kwargs)

    monkeypatch.setattr(train, "prediction_frame", stopped)
    with pytest.raises(KeyboardInterrupt):
        train.train_collection(COLLECTION, "sage", params(0.01))
    state = tmp_path / "checkpoints" / COLLECTION.slug / "sage" / "fold_0" / "state.json"
    assert json.loads(state.read_text())["finished"]
    with pytest.raises(EnsembleError, match=r"train.learning_rate: 0.003 in its run report, 0.01 in params.yaml"):
        export_collection(params(0.01), COLLECTION)
    with pytest.raises(ExportError, match=rf"{state}: fold 0 of sage is not the checkpoint .*report.json describes"):
        export_collection(params(0.003), COLLECTION)


@pytest.mark.parametrize("kill", ["after_state", "before_state"])
def test_resume_after_interruption_matches_an_uninterrupted_run(tiny_cache, tmp_path, monkeypatch, kill):
    """Same weights, scores and predictions; and the same learning rate at every step (warm-up, then cosine decay).

    ``kill``: the run is killed after the second epoch has been recorded in state.json, or after that epoch's
    weights were checkpointed but before state.json said so (the last write of an epoch): the resumed run must
    then repeat the second epoch from the first one's weights, not train on from the second one's."""
    from tpuperf.training import trainer as train

    schedule = {"lr_schedule": {"warmup_epochs": 1, "final_fraction": 0.1}, "weight_decay": 0.01}
    seen: list[tuple[str, int, float]] = []  # (run, optimizer step before the update, learning rate it applied)
    real_step = train.ModelKit.train_step

    def recording_step(self, batches, shape):
        step = int(self.optimizer.iterations.numpy())
        loss = real_step(self, batches, shape)
        # with a schedule, the optimizer's learning_rate is the rate it has just applied
        seen.append((run, step, float(self.optimizer.learning_rate.numpy())))
        assert seen[-1][2] == pytest.approx(self.learning_rate(step), abs=1e-12)
        return loss

    monkeypatch.setattr(train.ModelKit, "train_step", recording_step)
    run = "straight"
    straight = train.train_collection(COLLECTION, "sage", small_params(tiny_cache, tmp_path / "a", **schedule))

    real_end_epoch, real_write_json = train.FoldRunner.end_epoch, train.write_json_atomic
    calls = {"n": 0}

    def killed_after_second_epoch(self, epoch, logs, seconds):
        real_end_epoch(self, epoch, logs, seconds)  # checkpoint written first, as in a real run
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")

    def killed_before_second_state(path, payload, **kwargs):
        if Path(path).name == "state.json":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt("simulated kill")
        return real_write_json(path, payload, **kwargs)

    if kill == "after_state":
        monkeypatch.setattr(train.FoldRunner, "end_epoch", killed_after_second_epoch)
    else:
        monkeypatch.setattr(train, "write_json_atomic", killed_before_second_state)
    params_b = small_params(tiny_cache, tmp_path / "b", **schedule)
    run = "killed"
    with pytest.raises(KeyboardInterrupt):
        train.train_collection(COLLECTION, "sage", params_b)
    for name in ("metrics.json", "report.json"):
        assert not (tmp_path / "b" / "runs" / COLLECTION.slug / "sage" / name).exists()
    state = json.loads(
        (tmp_path / "b" / "checkpoints" / COLLECTION.slug / "sage" / "fold_0" / "state.json").read_text()
    )
    done = 2 if kill == "after_state" else 1
    assert state["epochs_done"] == done and not state["finished"]

    monkeypatch.setattr(train.FoldRunner, "end_epoch", real_end_epoch)
    monkeypatch.setattr(train, "write_json_atomic", real_write_json)
    run = "resumed"
    resumed = train.train_collection(COLLECTION, "sage", params_b)
    rates = {name: [(step, lr) for r, step, lr in seen if r == name] for name in ("straight", "killed", "resumed")}
    per_epoch = len(rates["killed"]) // 2
    assert len({lr for _, lr in rates["straight"]}) > per_epoch  # the rate changes within and across epochs
    assert max(lr for _, lr in rates["straight"]) == pytest.approx(0.003, rel=1e-6)
    assert rates["straight"][0] == (0, 0.0)
    # fold 0 resumes after the last epoch state.json records (not at step 0, not after an epoch it does not
    # record), on the uninterrupted run's rates; fold 1 as well
    resume_at = done * per_epoch
    assert rates["resumed"][0][0] == resume_at
    assert rates["killed"][:resume_at] + rates["resumed"] == rates["straight"]
    for a, b in zip(straight["folds"], resumed["folds"]):
        assert a["best_epoch"] == b["best_epoch"]
        assert a["oof_score"] == pytest.approx(b["oof_score"], abs=1e-6)
        assert a["valid_score"] == pytest.approx(b["valid_score"], abs=1e-6)
    frame_a = pl.read_parquet(tmp_path / "a" / "runs" / COLLECTION.slug / "sage" / "predictions" / "fold_0.parquet")
    frame_b = pl.read_parquet(tmp_path / "b" / "runs" / COLLECTION.slug / "sage" / "predictions" / "fold_0.parquet")
    np.testing.assert_allclose(frame_a["pred"].to_numpy(), frame_b["pred"].to_numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "schedule, expected",
    [
        # 10 steps per epoch x 3 epochs: warm-up over steps 0..9 from 0 to the peak 0.01, cosine from step 10 to
        # 0.1 x peak at step 30 (halfway, step 20: 0.01 x (0.1 + 0.9 x 0.5)), constant after it
        (
            {"warmup_epochs": 1, "final_fraction": 0.1},
            {0: 0.0, 5: 0.005, 10: 0.01, 20: 0.0055, 30: 0.001, 100: 0.001},
        ),
        ({"warmup_epochs": 0.5, "final_fraction": 0.0}, {0: 0.0, 1: 0.002, 5: 0.01, 30: 0.0}),
        ({"warmup_epochs": 0, "final_fraction": 1.0}, {0: 0.01, 17: 0.01, 30: 0.01, 99: 0.01}),
    ],
)
def test_learning_rate_schedule_values(schedule, expected):
    from tpuperf.training.trainer import LearningRate

    settings = config_with({"train": {"learning_rate": 0.01, "epochs": 3, "lr_schedule": schedule}}).train
    rate = LearningRate(settings)
    assert rate.plan(10) == (round(schedule["warmup_epochs"] * 10), 30 - round(schedule["warmup_epochs"] * 10))
    assert {step: rate(step) for step in expected} == pytest.approx(expected, abs=1e-9)
    assert rate.plan(4) == (round(schedule["warmup_epochs"] * 4), 12 - round(schedule["warmup_epochs"] * 4))
    assert rate(12) == pytest.approx(0.01 * schedule["final_fraction"], abs=1e-9)  # a new plan, no retracing needed
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1, got 0"):
        rate.plan(0)


def build_cache(data: Path, cache: Path, **changes) -> None:
    settings = config_with({"preprocess": changes}).preprocess
    preprocess_collection(data, cache, COLLECTION, settings, progress=False)


def fold_frames(run: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(path) for path in sorted((run / "predictions").glob("fold_*.parquet"))])


def test_checkpoint_is_reused_only_for_the_same_data_settings_and_code(
    tmp_path, capsys, rewrite_npz, umask, file_modes, monkeypatch
):
    from tpuperf.data.cache import CollectionCache
    from tpuperf.training.trainer import train_collection

    umask(0o077)  # every file the run writes must follow it
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "runs" / COLLECTION.slug / "cheb"
    write_dataset(data, preset="tiny", seed=0)
    build_cache(data, cache)
    params = small_params(cache, tmp_path, epochs=1)
    first = train_collection(COLLECTION, "cheb", params)
    capsys.readouterr()

    def again(p: Config = params) -> tuple[dict, int, int]:
        metrics = train_collection(COLLECTION, "cheb", p)
        out = capsys.readouterr().out
        return (
            metrics,
            out.count("data, settings or code changed since this checkpoint"),
            out.count("resuming after epoch 1"),
        )

    build_cache(data, cache)  # the same data preprocessed again: every fold resumes
    metrics, afresh, resumed = again()
    assert (afresh, resumed) == (0, 2)
    assert [f["oof_score"] for f in metrics["folds"]] == [f["oof_score"] for f in first["folds"]]
    assert metrics["valid_score_mean_fold"] == pytest.approx(first["valid_score_mean_fold"], abs=1e-6)

    path = sorted(COLLECTION.split_dir(data, "train").glob("*.npz"))[0]  # relabelled runtimes, same features
    old = CollectionCache(cache, COLLECTION).load("train", path.stem)
    old_runtime = dict(zip(old.config_ids.tolist(), np.asarray(old.runtime).tolist()))
    with np.load(path) as npz:
        runtime = npz["config_runtime"]
    rewrite_npz(path, config_runtime=runtime[::-1].copy())
    build_cache(data, cache)
    metrics, afresh, resumed = again()
    assert (afresh, resumed) == (2, 0)
    new = CollectionCache(cache, COLLECTION).load("train", path.stem)
    new_runtime = dict(zip(new.config_ids.tolist(), np.asarray(new.runtime).tolist()))
    oof = fold_frames(run).filter(pl.col("split") == "oof", pl.col("graph_id") == path.stem)
    assert oof.height > 0
    assert oof["runtime"].to_list() == [new_runtime[c] for c in oof["config_id"]]  # the new labels, not the old
    assert oof["runtime"].to_list() != [old_runtime.get(c) for c in oof["config_id"]]

    build_cache(data, cache, hops=2)  # another pruning, params.yaml edited to match
    params = dataclasses.replace(params, preprocess=dataclasses.replace(params.preprocess, hops=2))
    assert again(params)[1:] == (2, 0)
    changed = dataclasses.replace(
        params, train=dataclasses.replace(params.train, learning_rate=0.01)
    )  # another setting
    assert again(changed)[1:] == (2, 0)
    assert again(changed)[1:] == (0, 2)
    # other source code (the installed package cannot be edited here: its fingerprint is replaced)
    monkeypatch.setattr("tpuperf.provenance.source_fingerprint", lambda: "0" * 64)
    assert again(changed)[1:] == (2, 0)
    assert file_modes(tmp_path / "runs") == file_modes(tmp_path / "checkpoints") == {"0o600"}


def test_constant_runtime_graphs_are_left_out_and_counted(tmp_path, capsys, rewrite_npz):
    from tpuperf.data.cache import CollectionCache
    from tpuperf.metrics import kendall_tau
    from tpuperf.training.trainer import train_collection

    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "runs" / COLLECTION.slug / "sage"
    write_dataset(data, preset="tiny", seed=0)
    flat = {split: sorted(COLLECTION.split_dir(data, split).glob("*.npz"))[0] for split in ("train", "valid")}
    for path in flat.values():
        with np.load(path) as npz:
            rewrite_npz(path, config_runtime=np.full_like(npz["config_runtime"], 5000))
    build_cache(data, cache)
    metrics = train_collection(COLLECTION, "sage", small_params(cache, tmp_path, epochs=1))
    assert capsys.readouterr().out.count("fewer than 2 distinct runtimes") == 1
    assert metrics["graphs_excluded_constant_runtime"] == {"train": 1, "valid": 1}
    assert json.loads((run / "report.json").read_text())["graphs_excluded_constant_runtime"] == {"train": 1, "valid": 1}

    valid = {g.graph_id: np.asarray(g.runtime) for g in CollectionCache(cache, COLLECTION).graphs("valid")}
    for fold in (0, 1):
        frame = pl.read_parquet(run / "predictions" / f"fold_{fold}.parquet")
        assert flat["train"].stem not in set(frame.filter(pl.col("split") == "oof")["graph_id"])  # in no fold
        rows = frame.filter(pl.col("split") == "valid")
        assert set(rows["graph_id"]) == set(valid)  # still predicted (the submission needs every graph)
        taus = [
            kendall_tau(rows.filter(pl.col("graph_id") == g).sort("config_id")["pred"].to_numpy(), runtime)
            for g, runtime in valid.items()
            if g != flat["valid"].stem
        ]
        assert len(taus) == len(valid) - 1
        assert metrics["folds"][fold]["valid_score"] == pytest.approx(np.mean(taus), abs=1e-9)


def test_bad_inputs_fail_clearly(tiny_cache, tmp_path):
    from tpuperf.data.cache import CacheError, CollectionCache
    from tpuperf.training.trainer import TrainingError, train_collection

    with pytest.raises(CacheError, match="missing: run `dvc repro preprocess`"):
        train_collection(COLLECTION, "chebsage", small_params(tmp_path / "nowhere", tmp_path))
    with pytest.raises(TrainingError, match="training graphs for 50 folds"):
        train_collection(COLLECTION, "chebsage", small_params(tiny_cache, tmp_path, folds=50))
    with pytest.raises(ConfigError, match=r"no models\.transformer"):
        train_collection(COLLECTION, "transformer", small_params(tiny_cache, tmp_path))
    max_opcode = CollectionCache(tiny_cache, COLLECTION).stats["max_opcode"]
    narrow = small_params(tiny_cache, tmp_path)
    sage = dataclasses.replace(narrow.models["sage"], opcode_vocab=max_opcode)  # ids 0..max need max + 1 rows
    narrow = dataclasses.replace(narrow, models={**narrow.models, "sage": sage})
    with pytest.raises(
        TrainingError,
        match=rf"stats.json: opcode ids up to {max_opcode}, but models.sage.opcode_vocab is {max_opcode}: raise it",
    ):
        train_collection(COLLECTION, "sage", narrow)
    # params.yaml's preprocess.hops edited, `tpuperf train` run by hand without `tpuperf preprocess`: the cache is
    # the old setting's, and the run would have been taken for the new one's
    params = small_params(tiny_cache, tmp_path)
    hops = params.preprocess.hops
    edited = dataclasses.replace(params, preprocess=dataclasses.replace(params.preprocess, hops=hops + 1))
    with pytest.raises(
        CacheError,
        match=rf"stats.json: built with preprocess.hops {hops} \(params.yaml: {hops + 1}\): run `dvc repro preprocess` "
        r"\(or `tpuperf preprocess --collection layout-xla-random`\)$",
    ):
        train_collection(COLLECTION, "chebsage", edited)
    assert not (tmp_path / "runs").exists()


def test_oof_fold_without_a_ranking_to_score_is_refused(tiny_cache, tmp_path):
    from tpuperf.training.trainer import TrainingError, train_collection

    # one evaluated config per held-out graph: early stopping would have nothing to rank
    with pytest.raises(
        TrainingError, match="fold 0: none of its .* held-out graphs has 2 distinct runtimes.*train.eval_configs"
    ):
        train_collection(COLLECTION, "sage", small_params(tiny_cache, tmp_path, eval_configs=1, live=False))
    assert not (tmp_path / "runs" / COLLECTION.slug / "sage" / "predictions").exists()


def test_nan_loss_stops_with_a_clear_error_and_no_predictions(tiny_cache, tmp_path):
    from tpuperf.training.trainer import TrainingError, train_collection

    # a NaN learning rate fails the config's check (> 0): replace() builds the diverging variant directly
    params = small_params(tiny_cache, tmp_path)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, learning_rate=float("nan")))
    with pytest.raises(TrainingError, match="loss became nan"):
        train_collection(COLLECTION, "sage", params)
    assert not (tmp_path / "runs" / COLLECTION.slug / "sage" / "predictions").exists()
