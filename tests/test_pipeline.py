"""End to end: the real dvc.yaml on a tiny config, from synthetic download to a checked submission,
and the exported models ranking the test files as the submission does."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tpuperf.collection import get_collection

REPO = Path(__file__).resolve().parents[1]


def run(cwd: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_dvc_pipeline_to_submission_on_tiny_config(tmp_path):
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (REPO / name).is_file() and not name.startswith(("tests/", "benchmarks/")):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tmp_path / name)
    (tmp_path / "dvc.lock").unlink(missing_ok=True)
    run(tmp_path, sys.executable, "-m", "dvc", "config", "core.no_scm", "true")

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["data"].update(source="synthetic", synthetic={"preset": "tiny", "seed": 0})
    params["train"].update(folds=2, epochs=1, graphs_per_batch=2, configs_per_graph=8, predict_configs_per_graph=32,
                           samples_per_graph={"tile": 1, "layout": 1}, eval_configs=16, jit_compile=False, verbose=0)
    for model in params["models"].values():
        model.update(units=8, config_units=8, shared_layers=1, config_layers=1)
    params["ensemble"]["models"] = ["chebsage"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    target = ["--glob", "train@*-chebsage"]
    log = run(tmp_path, sys.executable, "-m", "dvc", "repro", *target)
    assert "Running stage 'download'" in log and log.count("Running stage 'train@") == 5
    assert "Running stage" not in run(tmp_path, sys.executable, "-m", "dvc", "repro", *target)  # nothing changed

    run(tmp_path, sys.executable, "ensemble.py")
    submission = tmp_path / "submissions" / "submission.csv"
    check = run(tmp_path, "tpuperf", "check-submission", str(submission),
                "--sample", "data/raw/sample_submission.csv", "--data", "data/raw")
    rows = submission.read_text().strip().splitlines()
    sample = (tmp_path / "data" / "raw" / "sample_submission.csv").read_text().strip().splitlines()
    assert rows[0] == "ID,TopConfigs" and len(rows) == len(sample)
    assert "problem" not in check.lower()
    # item 3 of issue #15: the exported models rank every test file exactly as submission.csv does
    export = run(tmp_path, sys.executable, "-m", "dvc", "repro", "--single-item", "--glob", "export@*")
    assert export.count("Running stage 'export@") == 5
    test_files = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "data/raw/npz").glob("**/test/*.npz"))
    done = subprocess.run(["tpuperf", "rank", *test_files, "--format", "json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranked = json.loads(done.stdout)
    from_rank = {get_collection(r["collection"]).submission_id(Path(r["file"]).stem): ";".join(map(str, r["config_ids"]))
                 for r in ranked}
    assert from_rank == dict(row.split(",") for row in rows[1:])
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--md"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300).stdout
    for collection in ("tile-xla", "layout-xla-random", "layout-nlp-default"):
        assert f"runs/{collection}/chebsage/metrics.json" in shown
