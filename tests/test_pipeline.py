"""End to end: the real dvc.yaml on a tiny config, from download to a checked submission,
on synthetic data and on the real TpuGraphs files of ../shared/data, and the exported models
ranking the test files as the submission does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ABSENT_REASON, SHARED_DATA, params_with

from tpuperf.collection import COLLECTIONS, SPLITS, get_collection
from tpuperf.data.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
FOLDS = 2
MIN_GRAPHS = {"train": 2 * FOLDS, "valid": 1, "test": 1}  # per collection split of the real-file dataset


def run(cwd: Path, *args: str) -> str:
    """``args`` in ``cwd`` with this project copy's src first on the path (for ``tpuperf``)."""
    env = {**os.environ, "PYTHONPATH": str(cwd / "src")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def tiny_project(root: Path, data: dict) -> Path:
    """A copy of the repo's tracked files at ``root`` with a tiny training budget and ``data`` merged
    into params.yaml's data section; a DVC project without git or lock."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (REPO / name).is_file() and not name.startswith(("tests/", "benchmarks/")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    (root / "dvc.lock").unlink(missing_ok=True)
    run(root, sys.executable, "-m", "dvc", "config", "core.no_scm", "true")

    small_model = dict(units=8, config_units=8, shared_layers=1, config_layers=1)
    params = params_with(
        {
            "data": data,
            "train": dict(
                folds=FOLDS,
                epochs=1,
                graphs_per_batch=2,
                configs_per_graph=8,
                predict_configs_per_graph=32,
                samples_per_graph={"tile": 1, "layout": 1},
                eval_configs=16,
                jit_compile=False,
                verbose=0,
            ),
            "models": {name: small_model for name in ("chebsage", "sage", "cheb", "baseline")},
            "ensemble": {"models": ["chebsage"]},
        }
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def dvc_table(project: Path, *args: str) -> str:
    """``dvc <args>`` as a 200-column terminal shows it; asserts it fits (no line over 200, no '…')."""
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"COLUMNS": "200"},
    ).stdout
    print(shown)
    assert "…" not in shown and max(map(len, shown.splitlines())) <= 200, shown
    return shown


def repro_to_checked_submission(project: Path) -> list[str]:
    """download -> preprocess -> train (chebsage) through ``dvc repro``, then ensemble.py and
    ``tpuperf check-submission``; the submission's lines."""
    target = ["--glob", "train@*-chebsage"]
    log = run(project, sys.executable, "-m", "dvc", "repro", *target)
    assert "Running stage 'download'" in log and log.count("Running stage 'train@") == 5
    again = run(project, sys.executable, "-m", "dvc", "repro", *target)
    assert re.findall(r"Running stage '([^']+)'", again) == ["fingerprint"]  # it always runs; nothing changed

    run(project, sys.executable, "ensemble.py")
    submission = project / "submissions" / "submission.csv"
    check = run(
        project,
        "tpuperf",
        "check-submission",
        str(submission),
        "--sample",
        "data/raw/sample_submission.csv",
        "--data",
        "data/raw",
    )
    rows = submission.read_text().strip().splitlines()
    sample = (project / "data" / "raw" / "sample_submission.csv").read_text().strip().splitlines()
    assert rows[0] == "ID,TopConfigs" and len(rows) == len(sample)
    assert check.strip() == f"OK {submission}"
    # issue #15 item 3: the exported models rank every test file exactly as submission.csv does
    export = run(project, sys.executable, "-m", "dvc", "repro", "--single-item", "--glob", "export@*")
    assert export.count("Running stage 'export@") == 5
    test_files = sorted(str(p.relative_to(project)) for p in (project / "data/raw/npz").glob("**/test/*.npz"))
    done = subprocess.run(
        ["tpuperf", "rank", *test_files, "--format", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"PYTHONPATH": str(project / "src")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranked = json.loads(done.stdout)
    from_rank = {
        get_collection(r["collection"]).submission_id(Path(r["file"]).stem): ";".join(map(str, r["config_ids"]))
        for r in ranked
    }
    assert from_rank == dict(row.split(",") for row in rows[1:])
    # issue #13 item 4: the DVC metric is the ensemble's small flat file, so the table fits a
    # 200-column terminal; the per-run files are plain outputs that `dvc metrics show` prints when named
    shown = dvc_table(project, "metrics", "show")
    assert "runs/" not in shown and "submissions/ensemble_metrics.json" in shown
    assert shown.splitlines()[0].split() == ["Path", *sorted([*(c.slug for c in COLLECTIONS), "mean"])]
    runs = sorted(str(p.relative_to(project)) for p in (project / "runs").glob("*/chebsage/metrics.json"))
    assert len(runs) == 5
    per_run = dvc_table(project, "metrics", "show", *runs)
    assert all(run in per_run for run in runs) and per_run.splitlines()[0].split() == ["Path", "oof", "valid"]
    return rows


@pytest.mark.slow
def test_dvc_pipeline_to_submission_on_tiny_config(tmp_path):
    repro_to_checked_submission(
        tiny_project(tmp_path, {"source": "synthetic", "synthetic": {"preset": "tiny", "seed": 0}})
    )


def real_files_dir(root: Path) -> tuple[Path, dict[str, list[str]]]:
    """A ``data.source: local`` directory: every real file of ../shared/data, plus tiny synthetic
    graphs in each collection split holding fewer than MIN_GRAPHS (every split needs graphs; train
    needs some per fold). Also the names of the real test graphs per collection.

    The real sample_submission.csv lists all 894 competition test graphs, far more than the few
    real test files, so the sample written here holds the real sample's own rows of the real test
    files (each must have one) and the synthetic sample's rows of the synthetic test files used.
    """
    synth = root / "synthetic"
    write_dataset(synth, "tiny", seed=0)
    synth_rows = dict(line.split(",", 1) for line in (synth / "sample_submission.csv").read_text().splitlines()[1:])
    real_rows = dict(
        line.split(",", 1) for line in (SHARED_DATA / "sample_submission.csv").read_text().splitlines()[1:]
    )
    out = root / "local"
    rows, real_tests = [], {}
    for col in COLLECTIONS:
        for split in SPLITS:
            folder = col.split_dir(out, split)
            folder.mkdir(parents=True)
            real = sorted(col.split_dir(SHARED_DATA, split).glob("*.npz"))
            fill = sorted(col.split_dir(synth, split).glob("*.npz"))[: max(0, MIN_GRAPHS[split] - len(real))]
            assert len(real) + len(fill) >= MIN_GRAPHS[split], f"tiny preset too small for {col.name} {split}"
            for path in real + fill:
                shutil.copyfile(path, folder / path.name)
            if split == "test":
                real_tests[col.name] = [p.stem for p in real]
                for path in real:
                    row_id = col.submission_id(path.stem)
                    assert row_id in real_rows, f"{SHARED_DATA / 'sample_submission.csv'} has no row {row_id}"
                    rows.append(f"{row_id},{real_rows[row_id]}")
                rows += [f"{col.submission_id(p.stem)},{synth_rows[col.submission_id(p.stem)]}" for p in fill]
    (out / "sample_submission.csv").write_text("ID,TopConfigs\n" + "\n".join(rows) + "\n")
    return out, real_tests


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=ABSENT_REASON)
def test_dvc_pipeline_to_submission_on_real_files(tmp_path):
    local, real_tests = real_files_dir(tmp_path / "dataset")
    assert sum(map(len, real_tests.values())) > 0
    project = tiny_project(tmp_path / "project", {"source": "local", "dir": str(local)})
    rows = repro_to_checked_submission(project)
    ranked = dict(row.split(",", 1) for row in rows[1:])
    for col in COLLECTIONS:  # the real test graphs' rows: 5 distinct configs for tile, every config for layout
        for graph in real_tests[col.name]:
            with np.load(col.split_dir(local, "test") / f"{graph}.npz") as npz:
                configs = len(npz["config_runtime"])
            ids = [int(i) for i in ranked[col.submission_id(graph)].split(";")]
            assert len(set(ids)) == len(ids) == (min(5, configs) if col.is_tile else configs) and max(ids) < configs
