import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import params_with, put_on_path

from tpuperf.cli import main
from tpuperf.collection import get_collection, locate
from tpuperf.kaggle.submit import KaggleError, submit
from tpuperf.runs import PredictionFormatError, prediction_path, read_fold_predictions
from tpuperf.submission.csv import (
    SubmissionError,
    check_submission,
    parse_id,
    rankings_from_predictions,
    score_submission,
    write_submission,
)

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_SAMPLE = REAL_DATA / "sample_submission.csv"


def write_npz(root: Path, collection: str, split: str, graph: str, runtime, normalizers=None) -> Path:
    """A minimal valid TpuGraphs file with the given runtimes (only their count matters to the checker)."""
    col = get_collection(collection)
    runtime = np.asarray(runtime, np.int64)
    c, n = len(runtime), 3
    arrays = dict(
        node_feat=np.zeros((n, 140), np.float32),
        node_opcode=np.zeros(n, np.uint8),
        edge_index=np.array([[1, 0], [2, 1]], np.int64),
        config_runtime=runtime,
    )
    if col.is_tile:
        arrays["config_feat"] = np.zeros((c, 24), np.float32)
        arrays["config_runtime_normalizers"] = np.asarray(
            normalizers if normalizers is not None else np.ones(c), np.int64
        )
    else:
        arrays["node_config_ids"] = np.array([1], np.int64)
        arrays["node_config_feat"] = np.zeros((c, 1, 18), np.float32)
    path = col.split_dir(root, split) / f"{graph}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_csv(path: Path, rows: list[str], header: str = "ID,TopConfigs") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    """Test split: one 7-config kernel, one 4-config layout graph, one 1,001-config layout graph."""
    root = tmp_path / "data"
    write_npz(root, "tile:xla", "test", "k1", np.zeros(7))
    write_npz(root, "layout:xla:random", "test", "g1", np.zeros(4))
    write_npz(root, "layout:nlp:default", "test", "big", np.zeros(1001))
    return root


FULL_RANKINGS = {
    "tile:xla:k1": np.array([6, 5, 4, 3, 2, 1, 0]),
    "layout:xla:random:g1": np.array([2, 0, 3, 1]),
    "layout:nlp:default:big": np.arange(1001)[::-1],
}
FULL_ROWS = [
    "tile:xla:k1,6;5;4;3;2",
    "layout:xla:random:g1,2;0;3;1",
    "layout:nlp:default:big," + ";".join(map(str, range(1000, -1, -1))),
]


def test_parse_id():
    assert parse_id("tile:xla:abc") == (get_collection("tile:xla"), "abc")
    assert parse_id("layout:nlp:random:x:y") == (get_collection("layout:nlp:random"), "x:y")
    with pytest.raises(ValueError, match="collection name"):
        parse_id("layout:tpu:random:g")


@pytest.mark.skipif(not REAL_SAMPLE.exists(), reason=f"real data absent: {REAL_SAMPLE}")
def test_real_sample_passes_against_itself():
    assert check_submission(REAL_SAMPLE, sample=REAL_SAMPLE) == []


@pytest.mark.skipif(not REAL_SAMPLE.exists(), reason=f"real data absent: {REAL_SAMPLE}")
def test_real_sample_rows_of_the_real_test_files_pass_against_the_files(tmp_path):
    present = set()
    for path in (REAL_DATA / "npz").rglob("*.npz"):
        collection, split = locate(path)
        if split == "test":
            present.add(collection.submission_id(path.stem))
    lines = REAL_SAMPLE.read_text().splitlines()
    rows = [line for line in lines[1:] if line.split(",")[0] in present]
    assert len(rows) == len(present) == 5
    assert check_submission(write_csv(tmp_path / "s.csv", rows), data_dir=REAL_DATA) == []


def test_written_file_exact_and_valid(tmp_path, data):
    out = write_submission(FULL_RANKINGS, tmp_path / "sub" / "submission.csv", data_dir=data)
    lines = out.read_text().splitlines()
    assert lines[0] == "ID,TopConfigs"
    assert lines[1] == "tile:xla:k1,6;5;4;3;2"  # tile keeps the 5 predicted fastest
    assert lines[2] == "layout:xla:random:g1,2;0;3;1"
    big = lines[3].split(",")[1].split(";")
    assert len(big) == 1001 and big[0] == "1000" and big[-1] == "0"  # all 1,001 configs ranked
    assert check_submission(out, data_dir=data) == []
    assert check_submission(out) == []
    assert [p.name for p in out.parent.iterdir()] == ["submission.csv"]  # no temp file left


def test_one_thousand_entries_for_a_1001_config_file_is_flagged(tmp_path, data):
    rows = [
        "tile:xla:k1,0;1;2;3;4",
        "layout:xla:random:g1,0;1;2;3",
        "layout:nlp:default:big," + ";".join(map(str, range(1000))),
    ]
    sub = write_csv(tmp_path / "s.csv", rows)
    assert check_submission(sub) == []  # without the data it is a permutation of 0..999
    problems = check_submission(sub, data_dir=data)
    assert problems == [
        "line 4: layout:nlp:default:big: layout row has 1000 config ids but the file has 1001 configs; "
        "a row must rank every config of its file (unranked: 1000)"
    ]


def test_row_length_is_the_one_rule():
    tile, layout = get_collection("tile:xla"), get_collection("layout:nlp:default")
    assert [tile.kind.row_length(n) for n in (1, 2, 3, 5, 7, 1282)] == [1, 2, 3, 5, 5, 5]
    assert [layout.kind.row_length(n) for n in (1, 4, 1000, 1001)] == [1, 4, 1000, 1001]
    with pytest.raises(ValueError, match="at least one config, got 0"):
        tile.kind.row_length(0)


def test_tile_kernel_with_fewer_than_5_configs_writer_checker_scorer_agree(tmp_path, data):
    write_npz(data, "tile:xla", "test", "k3", np.zeros(3))
    out = write_submission({**FULL_RANKINGS, "tile:xla:k3": np.array([2, 0, 1])}, tmp_path / "s.csv", data_dir=data)
    assert out.read_text().splitlines()[1:] == [*FULL_ROWS, "tile:xla:k3,2;0;1"]  # every config of the kernel
    assert check_submission(out, data_dir=data) == []
    assert check_submission(out) == [  # without config counts a short tile row cannot be verified
        "line 5: tile:xla:k3: tile row has 3 config ids, expected 5 (fewer only for a kernel with fewer configs: "
        "check against the data, --data)"
    ]
    padded = write_csv(tmp_path / "p.csv", [*FULL_ROWS, "tile:xla:k3,0;1;2;3;4"])
    assert check_submission(padded, data_dir=data) == [
        "line 5: tile:xla:k3: tile row has 5 config ids but the kernel has 3 configs: expected 3, the predicted fastest first",
        "line 5: tile:xla:k3: config ids outside 0..2: 3, 4",
    ]
    short = write_csv(tmp_path / "q.csv", [*FULL_ROWS, "tile:xla:k3,2;0"])
    assert check_submission(short, data_dir=data) == [
        "line 5: tile:xla:k3: tile row has 2 config ids but the kernel has 3 configs: expected 3, the predicted fastest first"
    ]

    root = tmp_path / "labelled"  # the scorer reads the same rows: 3 ids score, 5 are refused
    write_npz(root, "tile:xla", "valid", "k3", [30, 10, 20])
    write_npz(root, "tile:xla", "valid", "k7", [70, 60, 50, 40, 30, 20, 10])
    rows = write_submission(
        {"tile:xla:k3": np.array([0, 2, 1]), "tile:xla:k7": np.arange(7)},
        tmp_path / "v.csv",
        data_dir=root,
        split="valid",
    )
    assert rows.read_text().splitlines()[1:] == ["tile:xla:k3,0;2;1", "tile:xla:k7,0;1;2;3;4"]
    # k3 lists every config: best 10 -> 2 - 10/10 = 1; k7's top 5 best 30 -> 2 - 30/10 = -1
    assert score_submission(rows, root, split="valid") == pytest.approx({"tile:xla": 0.0, "mean": 0.0})
    with pytest.raises(SubmissionError, match=r"tile:xla:k3: config ids outside 0..2: 3, 4"):
        score_submission(
            write_csv(tmp_path / "w.csv", ["tile:xla:k3,0;1;2;3;4", "tile:xla:k7,0;1;2;3;4"]), root, split="valid"
        )


def test_submit_runs_the_full_data_check_and_sends_nothing_it_refuses(tmp_path, data, fake_kaggle, capsys):
    write_npz(data, "tile:xla", "test", "k3", np.zeros(3))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_with({"data": {"out": str(data), "competition": "comp"}})))
    refused = {
        "3-config kernel, ids out of range": [*FULL_ROWS, "tile:xla:k3,0;1;2;3;4"],
        "1,000 ids for the 1,001-config file": [
            *FULL_ROWS[:2],
            "layout:nlp:default:big," + ";".join(map(str, range(1000))),
            "tile:xla:k3,2;0;1",
        ],
        "a test file without a row": FULL_ROWS,
    }
    for case, rows in refused.items():
        sub = write_csv(tmp_path / "bad.csv", rows)
        problems = check_submission(sub, data_dir=data)
        assert problems, case
        assert main(["submit", str(sub), "-m", "m", "--params", str(params)]) == 1, case
        assert not fake_kaggle.exists(), case  # nothing was sent
        err = capsys.readouterr().err
        assert err.startswith(f"tpuperf submit failed: {sub}: {len(problems)} problem(s):") and all(
            p in err for p in problems
        )

    good = write_csv(tmp_path / "good.csv", [*FULL_ROWS, "tile:xla:k3,2;0;1"])  # what check-submission --data accepts
    assert main(["check-submission", str(good), "--data", str(data)]) == 0
    assert main(["submit", str(good), "-m", "m", "--params", str(params)]) == 0
    assert fake_kaggle.read_text().splitlines() == ["competitions", "submit", "-c", "comp", "-f", str(good), "-m", "m"]

    fake_kaggle.unlink()
    nowhere = tmp_path / "nowhere"
    params.write_text(yaml.safe_dump(params_with({"data": {"out": str(nowhere), "competition": "comp"}})))
    capsys.readouterr()
    assert main(["submit", str(good), "-m", "m", "--params", str(params)]) == 1
    assert (
        f"{nowhere}: no data directory to check the submission against (data.out in {params})"
        in capsys.readouterr().err
    )
    assert not fake_kaggle.exists()
    assert main(["submit", str(good), "-m", "m", "--params", str(params), "--data", str(data)]) == 0  # the override
    assert fake_kaggle.exists()


def test_missing_extra_and_duplicate_ids(tmp_path):
    sample = write_csv(tmp_path / "sample.csv", ["tile:xla:a,0;1;2;3;4", "tile:xla:b,0;1;2;3;4"])
    sub = write_csv(tmp_path / "s.csv", ["tile:xla:a,0;1;2;3;4", "tile:xla:c,0;1;2;3;4", "tile:xla:a,4;3;2;1;0"])
    problems = check_submission(sub, sample=sample)
    assert "duplicate ID (2 rows): tile:xla:a" in problems
    assert "missing ID (in sample sample.csv but not in the file): tile:xla:b" in problems
    assert "extra ID (not in sample sample.csv): tile:xla:c" in problems
    assert len(problems) == 3


def test_ids_checked_against_data_files(tmp_path, data):
    sub = write_csv(tmp_path / "s.csv", ["tile:xla:k1,0;1;2;3;4", "tile:xla:zz,0;1;2;3;4"])
    problems = check_submission(sub, data_dir=data)
    assert f"extra ID (not in the test files of {data}): tile:xla:zz" in problems
    assert f"missing ID (in the test files of {data} but not in the file): layout:xla:random:g1" in problems


def test_bad_rows_each_caught(tmp_path, data):
    rows = [
        "tile:xla:k1,0;1;2;3",  # 4 entries
        "layout:xla:random:g1,0;1;1;3",  # not a permutation
        "layout:nlp:default:big,nan;1;2",  # NaN that leaked into the file
    ]
    problems = check_submission(write_csv(tmp_path / "s.csv", rows))
    assert problems == [
        "line 2: tile:xla:k1: tile row has 4 config ids, expected 5 (fewer only for a kernel with fewer configs: "
        "check against the data, --data)",
        "line 3: layout:xla:random:g1: repeated config ids 1",
        "line 3: layout:xla:random:g1: layout row is not a permutation of 0..3 (unranked: 2)",
        "line 4: layout:nlp:default:big: 1 entries are not integers, e.g. ['nan']",
    ]
    rows = ["tile:xla:k1,0;1;2;3;7", "tile:xla:x,0;0;1;2;-3", "layout:xla:random:g1,", "tile:xla,1", "a,b,c"]
    problems = check_submission(write_csv(tmp_path / "t.csv", rows), data_dir=data)
    assert "line 2: tile:xla:k1: config ids outside 0..6: 7" in problems
    assert "line 3: tile:xla:x: repeated config ids 0" in problems
    assert "line 3: tile:xla:x: config ids outside non-negative: -3" in problems
    assert "line 4: layout:xla:random:g1: no config ids" in problems
    assert any(p.startswith("line 5: ID 'tile:xla' does not start with a collection name") for p in problems)
    assert "line 6: 3 comma-separated fields, expected 2" in problems


def test_bad_header_and_missing_file(tmp_path):
    problems = check_submission(write_csv(tmp_path / "s.csv", ["tile:xla:a,0;1;2;3;4"], header="id,configs"))
    assert problems == ["line 1: header is 'id,configs', expected 'ID,TopConfigs'"]
    assert check_submission(tmp_path / "nope.csv")[0].startswith(f"cannot read {tmp_path / 'nope.csv'}")


def test_write_refuses_invalid_file_and_leaves_nothing(tmp_path, data):
    target = tmp_path / "out" / "submission.csv"
    with pytest.raises(SubmissionError, match="layout row has 4 config ids but the file has 1001"):
        write_submission({**FULL_RANKINGS, "layout:nlp:default:big": np.arange(4)}, target, data_dir=data)
    with pytest.raises(SubmissionError, match="missing ID"):
        write_submission({"tile:xla:k1": np.arange(7)}, target, data_dir=data)
    with pytest.raises(SubmissionError, match="integer config ids"):
        write_submission({"tile:xla:k1": np.array([0.5, 1.0])}, target, data_dir=data)
    with pytest.raises(
        SubmissionError, match=r"tile:xla:k1: ranking of 8 has repeated ids or ids outside 0..6 beyond the 5"
    ):
        write_submission({**FULL_RANKINGS, "tile:xla:k1": np.array([6, 5, 4, 3, 2, 1, 0, 7])}, target, data_dir=data)
    with pytest.raises(SubmissionError, match=r"layout:xla:random:g1: ranking of 5 has repeated ids"):
        write_submission({**FULL_RANKINGS, "layout:xla:random:g1": np.array([2, 0, 3, 1, 2])}, target, data_dir=data)
    assert list(target.parent.iterdir()) == []


def test_rankings_from_predictions_and_nan():
    df = pl.DataFrame(
        {
            "collection": ["tile:xla"] * 3 + ["layout:xla:default"] * 2,
            "graph_id": ["k"] * 3 + ["g"] * 2,
            "config_id": [2, 0, 1, 1, 0],
            "pred": [0.1, 0.5, 0.1, 3.0, 4.0],
        }
    )
    rankings = rankings_from_predictions(df)
    np.testing.assert_array_equal(rankings["tile:xla:k"], [1, 2, 0])  # tie 0.1: config 1 before 2
    np.testing.assert_array_equal(rankings["layout:xla:default:g"], [1, 0])
    with pytest.raises(ValueError, match="tile:xla:k: 1 non-finite"):
        rankings_from_predictions(
            df.with_columns(pl.when(pl.col("config_id") == 0).then(np.nan).otherwise(pl.col("pred")).alias("pred"))
        )
    with pytest.raises(ValueError, match="more than one prediction"):
        rankings_from_predictions(pl.concat([df, df]))


def test_score_submission_hand_computed(tmp_path):
    root = tmp_path / "data"
    # tile: runtime/normaliser = [8, 6, 4, 3, 5, 2] / 2 -> best 1.0 (config 5)
    write_npz(root, "tile:xla", "valid", "k", [16, 12, 8, 6, 10, 4], normalizers=[2] * 6)
    write_npz(root, "layout:xla:random", "valid", "g", [10, 30, 20, 40])
    rows = [
        "tile:xla:k,0;1;2;3;4",  # best of top 5 is config 3 (3.0): 2 - 3 / 2 = 0.5
        "layout:xla:random:g,0;2;1;3",
    ]  # exactly the true order: tau 1
    scores = score_submission(write_csv(tmp_path / "v.csv", rows), root, split="valid")
    assert scores == pytest.approx({"tile:xla": 0.5, "layout:xla:random": 1.0, "mean": 0.75})
    rows[1] = "layout:xla:random:g,1;0;2;3"
    # predicted positions [1, 0, 2, 3] vs runtime [10, 30, 20, 40]: concordant 4, discordant 2 -> 1/3
    scores = score_submission(write_csv(tmp_path / "w.csv", rows), root, split="valid")
    assert scores["layout:xla:random"] == pytest.approx(1 / 3)
    with pytest.raises(SubmissionError, match="outside 0..5"):
        score_submission(write_csv(tmp_path / "x.csv", ["tile:xla:k,0;1;2;3;9", rows[1]]), root, split="valid")


def test_score_refuses_unlabelled_split(tmp_path, data):
    out = write_submission(FULL_RANKINGS, tmp_path / "s.csv", data_dir=data)
    with pytest.raises(ValueError, match="labelled split"):
        score_submission(out, data, split="test")


def write_fold(runs: Path, slug: str, model: str, fold: int, frame: pl.DataFrame) -> Path:
    path = runs / slug / model / "predictions" / f"fold_{fold}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


def fold_frame(pred=(0.2, 0.1)) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "split": ["test", "test"],
            "graph_id": ["k", "k"],
            "config_id": [0, 1],
            "pred": list(pred),
            "runtime": [0.0, 0.0],
        }
    )


def test_read_fold_predictions(tmp_path):
    runs = tmp_path / "runs"
    assert write_fold(runs, "tile-xla", "sage", 0, fold_frame()) == prediction_path(
        runs, get_collection("tile:xla"), "sage", 0
    )
    write_fold(runs, "tile-xla", "sage", 1, fold_frame((0.3, 0.4)).cast({"config_id": pl.Int32}))
    df = read_fold_predictions(runs)
    assert df.columns == ["collection", "model", "fold", "split", "graph_id", "config_id", "pred", "runtime"]
    assert df.schema["config_id"] == pl.Int64
    assert df.select("collection", "model", "fold").unique().sort("fold").rows() == [
        ("tile:xla", "sage", 0),
        ("tile:xla", "sage", 1),
    ]
    assert df["pred"].to_list() == [0.2, 0.1, 0.3, 0.4]
    assert read_fold_predictions(runs, 2, models=["sage"], collections=["tile:xla"]).height == 4
    valid = fold_frame().with_columns(split=pl.lit("valid"), graph_id=pl.lit("v"), runtime=pl.lit(1.0))
    write_fold(runs, "layout-xla-random", "sage", 0, pl.concat([fold_frame(), valid]))
    df = read_fold_predictions(runs, collections=["layout-xla-random"], splits=["valid"])
    assert df.select("collection", "split", "graph_id").unique().rows() == [("layout:xla:random", "valid", "v")]


def test_read_fold_predictions_missing_folds_and_models(tmp_path):
    runs = tmp_path / "runs"
    for fold in (0, 2):
        write_fold(runs, "tile-xla", "sage", fold, fold_frame())
    assert read_fold_predictions(runs)["fold"].unique().sort().to_list() == [0, 2]  # no expected count: as found
    with pytest.raises(
        PredictionFormatError,
        match=r"sage/predictions/fold_1.parquet: missing: tile:xla / sage has "
        r"fold_0.parquet, fold_2.parquet but train.folds is 3",
    ):
        read_fold_predictions(runs, 3)
    write_fold(runs, "tile-xla", "sage", 1, fold_frame())
    with pytest.raises(PredictionFormatError, match=r"fold_2.parquet: unexpected: train.folds is 2, so folds are 0..1"):
        read_fold_predictions(runs, 2)
    with pytest.raises(
        PredictionFormatError, match=r"tile-xla/cheb/predictions: missing: train cheb on tile:xla first"
    ):
        read_fold_predictions(runs, 3, collections=["tile:xla"], models=["sage", "cheb"])
    with pytest.raises(PredictionFormatError, match=r"layout-xla-random/sage/predictions: missing"):
        read_fold_predictions(runs, 3, models=["sage"])  # every collection is required
    (runs / "tile-xla" / "gat" / "predictions").mkdir(parents=True)
    with pytest.raises(PredictionFormatError, match=r"gat/predictions: no fold_<k>.parquet files"):
        read_fold_predictions(runs)


def test_read_fold_predictions_errors(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(FileNotFoundError, match="train models first"):
        read_fold_predictions(runs)
    write_fold(runs, "tile-xla", "sage", 0, fold_frame())
    with pytest.raises(FileNotFoundError, match="no <collection>/<model>/predictions/"):
        read_fold_predictions(runs / "tile-xla")
    write_fold(runs, "tile-xla", "sage", 0, fold_frame((np.nan, 0.1)))
    with pytest.raises(PredictionFormatError, match=r"fold_0.parquet: 1 NaN/inf preds \(graphs \['k'\]\)"):
        read_fold_predictions(runs)
    write_fold(runs, "tile-xla", "sage", 0, fold_frame().drop("pred"))
    with pytest.raises(PredictionFormatError, match=r"missing columns \['pred'\]"):
        read_fold_predictions(runs)
    write_fold(runs, "tile-xla", "sage", 0, fold_frame().with_columns(split=pl.lit("train")))
    with pytest.raises(PredictionFormatError, match="unknown split values"):
        read_fold_predictions(runs)
    write_fold(runs, "tile-xla", "sage", 0, fold_frame().with_columns(split=pl.lit("valid")))
    with pytest.raises(PredictionFormatError, match="without a positive runtime"):
        read_fold_predictions(runs)
    write_fold(runs, "tile-xla", "sage", 0, pl.concat([fold_frame(), fold_frame()]))
    with pytest.raises(PredictionFormatError, match="2 duplicate"):
        read_fold_predictions(runs)
    write_fold(runs, "tile-xla", "sage", 0, fold_frame())
    (runs / "tile-xla" / "sage" / "predictions" / "fold_x.parquet").write_bytes(b"")
    with pytest.raises(PredictionFormatError, match=r"fold_x.parquet: file name is not fold_<integer>.parquet"):
        read_fold_predictions(runs)
    (runs / "tile-xla" / "sage" / "predictions" / "fold_x.parquet").unlink()
    (runs / "tile-xla" / "sage" / "predictions" / "fold_1.parquet").write_bytes(b"not parquet")
    with pytest.raises(PredictionFormatError, match=r"fold_1.parquet: unreadable parquet"):
        read_fold_predictions(runs)
    (runs / "tile-xla" / "sage" / "predictions" / "fold_1.parquet").unlink()
    write_fold(runs, "tile-tpu", "sage", 0, fold_frame())
    with pytest.raises(PredictionFormatError, match="unknown collection 'tile-tpu'"):
        read_fold_predictions(runs)


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    """A ``kaggle`` executable on PATH that records its argv (one per line) and exits with $FAKE_RC."""
    record = tmp_path / "argv.txt"
    put_on_path(
        tmp_path,
        monkeypatch,
        "kaggle",
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "Successfully submitted"\nexit ${{FAKE_RC:-0}}\n',
    )
    return record


def test_submit_calls_kaggle(tmp_path, data, fake_kaggle):
    sub = write_submission(FULL_RANKINGS, tmp_path / "s.csv", data_dir=data)
    out = submit(sub, "fold ensemble v1", "predict-ai-model-runtime", data_dir=data)
    assert out == "Successfully submitted"
    assert fake_kaggle.read_text().splitlines() == [
        "competitions",
        "submit",
        "-c",
        "predict-ai-model-runtime",
        "-f",
        str(sub),
        "-m",
        "fold ensemble v1",
    ]


def test_submit_refuses_invalid_file_and_reports_kaggle_failure(tmp_path, data, fake_kaggle, monkeypatch):
    bad = write_csv(tmp_path / "bad.csv", ["tile:xla:k1,0;1;2;3", *FULL_ROWS[1:]])
    with pytest.raises(SubmissionError, match="tile row has 4 config ids but the kernel has 7 configs: expected 5"):
        submit(bad, "m", "c", data_dir=data)
    assert not fake_kaggle.exists()  # nothing was sent
    good = write_submission(FULL_RANKINGS, tmp_path / "s.csv", data_dir=data)
    monkeypatch.setenv("FAKE_RC", "1")
    with pytest.raises(KaggleError, match=r"failed \(exit code 1\): Successfully submitted"):
        submit(good, "m", "c", data_dir=data)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KaggleError, match="kaggle CLI not found on PATH"):
        submit(good, "m", "c", data_dir=data)


def test_submit_refuses_a_submission_of_the_synthetic_dataset(tmp_path, data, fake_kaggle):
    """data.out built by the synthetic source (the default pipeline without credentials): its test files are not
    Kaggle's, yet the file passed the check against them and was sent (the competition then fails it, a daily
    submission spent). Its manifest.json says the source; nothing is sent then."""
    good = write_submission(FULL_RANKINGS, tmp_path / "s.csv", data_dir=data)
    (data / "manifest.json").write_text(json.dumps({"source": "synthetic"}))
    with pytest.raises(SubmissionError, match=r"data.source synthetic: .* not the competition's test files"):
        submit(good, "m", "predict-ai-model-runtime", data_dir=data)
    assert not fake_kaggle.exists()  # nothing was sent
    (data / "manifest.json").write_text(json.dumps({"source": "kaggle"}))
    assert submit(good, "m", "predict-ai-model-runtime", data_dir=data) == "Successfully submitted"


def test_submit_reports_a_failure_the_cli_prints_with_exit_0(tmp_path, data, monkeypatch):
    put_on_path(tmp_path, monkeypatch, "kaggle", '#!/bin/sh\necho "Could not submit to competition"\nexit 0\n')
    good = write_submission(FULL_RANKINGS, tmp_path / "s.csv", data_dir=data)
    with pytest.raises(KaggleError, match=r"failed \(Could not submit to competition\)"):
        submit(good, "m", "c", data_dir=data)


def test_cli(tmp_path, data, fake_kaggle, capsys):
    good = write_submission(FULL_RANKINGS, tmp_path / "good.csv", data_dir=data)
    bad = write_csv(tmp_path / "bad.csv", ["tile:xla:k1,0;1;2;3", "tile:xla:k1,0;1;2;3;4"])
    assert main(["check-submission", str(good), "--data", str(data)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["check-submission", str(bad), "--sample", str(good)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "duplicate ID (2 rows): tile:xla:k1" in out and any(
        p.startswith("line 2: tile:xla:k1: tile row has 4 config ids, expected 5") for p in out
    )
    assert out[-1] == "4 problem(s) in " + str(bad)
    assert main(["submit", str(good), "-m", "msg", "--competition", "comp", "--data", str(data)]) == 0
    assert fake_kaggle.read_text().splitlines()[3] == "comp"
    assert main(["submit", str(bad), "-m", "msg", "--competition", "comp", "--data", str(data)]) == 1

    root = tmp_path / "valid_data"
    write_npz(root, "tile:xla", "valid", "k", [5, 4, 3, 2, 1, 9])
    valid = write_csv(tmp_path / "v.csv", ["tile:xla:k,5;4;3;2;1"])  # misses nothing: best is config 4
    capsys.readouterr()
    assert main(["score", str(valid), "--data", str(root), "--split", "valid"]) == 0
    out = capsys.readouterr().out
    assert "tile:xla" in out and "1.0000" in out and "1 of 5 collections" in out


@pytest.mark.skipif(not REAL_SAMPLE.exists(), reason=f"real data absent: {REAL_DATA}")
def test_real_labelled_files_score_perfect_for_the_true_order(tmp_path):
    rankings = {}
    for path in (REAL_DATA / "npz").rglob("train/*.npz"):
        collection, _ = locate(path)
        with np.load(path) as arrays:
            runtime = arrays["config_runtime"] / arrays.get("config_runtime_normalizers", 1)
        rankings[collection.submission_id(path.stem)] = np.argsort(runtime, kind="stable")
    sub = write_submission(rankings, tmp_path / "train.csv", data_dir=REAL_DATA, split="train")
    assert "tile:xla:retinanet.2x2.fp32_-342c949e14733d96,1;0" in sub.read_text().splitlines()  # 2-config kernel
    scores = score_submission(sub, REAL_DATA, split="train")
    assert scores == pytest.approx({"tile:xla": 1.0, "layout:xla:random": 1.0, "layout:xla:default": 1.0, "mean": 1.0})
