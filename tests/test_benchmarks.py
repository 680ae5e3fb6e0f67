"""benchmarks/claims.py and benchmarks/scale.py: the figures behind each claim verdict, the report, --quick end-to-end runs."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import claims  # noqa: E402
import claims_analysis as ca  # noqa: E402

from tpuperf.config import load_params  # noqa: E402
from tpuperf.provenance import source_fingerprint  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(scores: list[float], seconds: list[float]) -> list[dict]:
    return [{"epoch": i, "loss": 1.0, "oof_score": s, "seconds": t} for i, (s, t) in enumerate(zip(scores, seconds))]


def record(collection: str, model: str, loss: str, seed: int, score: float, histories=None, mape=None) -> dict:
    return {
        "collection": collection,
        "model": model,
        "loss": loss,
        "seed": seed,
        "valid_score": score,
        "valid_ensemble": score + 0.01,
        "oof_score": score,
        "wall_seconds": 10.0,
        "mape": mape,
        "mape_scaled": None if mape is None else mape / 2,
        "mape_calibrated": None if mape is None else mape / 3,
        "mape_flat": None if mape is None else 0.05,
        "spread_scales": None if mape is None else [0.5, 0.5],
        "beats_flat": None if mape is None else [2, 3],
        "histories": histories or [history([score], [1.0])],
    }


def test_graph_mape_is_the_mean_relative_error_of_exp_pred():
    runtime = np.array([100.0, 200.0])
    assert ca.graph_mape(np.log([110.0, 150.0]), runtime) == pytest.approx((0.1 + 0.25) / 2)
    # level fitted: a prediction off by a constant factor has no error left
    assert ca.graph_mape(np.log([200.0, 400.0]), runtime, fit_level=True) == pytest.approx(0.0)
    assert ca.graph_mape(
        np.log([100.0, 100.0, 400.0]), np.array([100.0, 200.0, 400.0]), fit_level=True
    ) == pytest.approx(0.5 / 3)
    with pytest.raises(ValueError, match="positive"):
        ca.graph_mape(np.zeros(2), np.array([1.0, 0.0]))


def test_spread_scale_corrects_an_overshooting_spread_fitted_across_graph_levels():
    runtime = np.array([1.0, 2.0, 4.0, 8.0, 100.0, 300.0, 200.0])
    graphs = np.array(["a"] * 4 + ["b"] * 3)
    offset = np.where(graphs == "a", 5.0, -3.0)  # a per-graph level the model does not know: centred away
    overshoot = 2.0 * np.log(runtime) + offset  # twice the true spread
    assert ca.spread_scale(overshoot, runtime, graphs) == pytest.approx(0.5)
    assert ca.mean_graph_mape(overshoot, runtime, graphs, fit_level=True) > 0.5
    per_graph = ca.graph_mapes(overshoot, runtime, graphs, fit_level=True)  # sorted ids: a, b
    assert per_graph.shape == (2,) and per_graph[0] == pytest.approx(
        ca.graph_mape(overshoot[:4], runtime[:4], fit_level=True)
    )
    assert ca.mean_graph_mape(0.5 * overshoot, runtime, graphs, fit_level=True) == pytest.approx(0.0, abs=1e-12)
    # predictions unrelated to the runtimes (orthogonal once centred) calibrate to a flat prediction
    unrelated = np.array([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0])
    centred_log = np.log(runtime[:4]) - np.log(runtime[:4]).mean()
    assert unrelated[:4] @ centred_log == pytest.approx(0.0)
    assert ca.spread_scale(unrelated, runtime, graphs) == pytest.approx(0.0, abs=1e-12)
    assert ca.spread_scale(np.zeros(7), runtime, graphs) == 0.0  # no spread at all
    with pytest.raises(ValueError, match="equal length"):
        ca.spread_scale(np.zeros(3), runtime, graphs)
    with pytest.raises(ValueError, match="positive"):
        ca.spread_scale(np.zeros(2), np.array([1.0, 0.0]), np.array(["a", "a"]))


def test_error_figures_calibrate_each_fold_on_its_oof_rows_only():
    import polars as pl

    def rows(split: str, fold: int, graph: str, runtime: list[float], spread: float) -> list[dict]:
        return [
            {
                "split": split,
                "fold": fold,
                "graph_id": graph,
                "config_id": i,
                "pred": spread * math.log(y) + 1.0,
                "runtime": y,
            }
            for i, y in enumerate(runtime)
        ]

    valid_runtime = [1.0, 2.0, 4.0]
    frame = pl.DataFrame(
        rows("oof", 0, "t0", [1.0, 3.0, 9.0], 3.0)  # fold 0 overshoots x3 on its OOF graph: a = 1/3
        + rows("valid", 0, "v", valid_runtime, 3.0)
        + rows("oof", 1, "t1", [1.0, 3.0, 9.0], 1.0)  # fold 1 is right on OOF (a = 1) but overshoots on valid
        + rows("valid", 1, "v", valid_runtime, 3.0)
    )
    figures = claims.error_figures(frame, folds=2)
    assert figures["spread_scales"] == [pytest.approx(1 / 3), pytest.approx(1.0)]
    log_y = np.log(valid_runtime)
    overshoot = ca.graph_mape(3.0 * log_y, np.array(valid_runtime), fit_level=True)
    assert overshoot == pytest.approx((0.75 + 0.0 + 3.0) / 3)  # y^3 / 4 (level at the median config): 1/4, 2, 16
    assert figures["mape_scaled"] == pytest.approx(overshoot)
    assert figures["mape_calibrated"] == pytest.approx((0.0 + overshoot) / 2)  # valid never fits the scale
    flat = ca.graph_mape(np.zeros(3), np.array(valid_runtime), fit_level=True)
    assert figures["mape_flat"] == pytest.approx(flat) == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert figures["mape"] == pytest.approx(ca.graph_mape(3.0 * log_y + 1.0, np.array(valid_runtime)))
    assert figures["beats_flat"] == [1, 2]  # fold 0's calibrated spread is exact, fold 1's overshoots: worse than flat


def test_normalised_pair_divides_by_the_geometric_mean_and_fits_scores():
    runtime = np.array([1.0, 4.0, 16.0])  # geometric mean 4
    true, est = ca.normalised_pair(np.log([2.0, 8.0, 8.0]), runtime, is_log_runtime=True)
    np.testing.assert_allclose(true, [0.25, 1.0, 4.0])
    np.testing.assert_allclose(est, np.array([2.0, 8.0, 8.0]) / 128 ** (1 / 3))  # level only: the spread stays
    # a ranking score linear in log runtime maps back exactly, whatever its sign-preserving scale and offset
    _, est = ca.normalised_pair(3.0 * np.log(runtime) + 7.0, runtime, is_log_runtime=False)
    np.testing.assert_allclose(est, [0.25, 1.0, 4.0])
    _, flat = ca.normalised_pair(np.zeros(3), runtime, is_log_runtime=False)
    np.testing.assert_allclose(flat, 1.0)
    with pytest.raises(ValueError, match="positive"):
        ca.normalised_pair(np.zeros(2), np.array([1.0, 0.0]), is_log_runtime=True)


def test_scatter_panels_one_per_model_with_a_kept_scatter(tmp_path: Path):
    plan = claims.PLANS["full"]  # models on tile:xla and the layout collections: layout:xla:random is shown
    scatter = {"graph_id": "g" * 12, "pred": [0.0, 1.0, 2.0], "runtime": [1.0, 3.0, 2.0]}
    records = [
        dict(record(c, m, loss, 0, 0.3), scatter=scatter)
        for c, m, loss in (
            ("layout:xla:random", "chebsage", "listmle"),
            ("layout:xla:random", "baseline", "listmle"),
            ("layout:xla:random", "baseline", "mse"),
            ("tile:xla", "sage", "listmle"),
        )
    ]
    records.append(record("layout:xla:random", "chebsage", "listmle", 1, 0.3))  # no scatter kept
    panels = claims.scatter_panels(plan, records)
    assert [(p["title"].split()[0], p["is_runtime"]) for p in panels] == [
        ("chebsage", False),
        ("baseline", False),
        ("baseline", True),
    ]
    path = tmp_path / "pred_vs_true.png"
    ca.plot_pred_vs_true(panels, path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_relative_figures_and_formatting():
    assert ca.relative_improvement(0.46, 0.40) == pytest.approx(0.15)
    assert ca.relative_reduction(0.82, 1.0) == pytest.approx(0.18)
    assert math.isnan(ca.relative_improvement(0.3, -0.1))  # a negative baseline tau has no relative scale
    assert ca.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert ca.fmt(0.5, 0.25, digits=2, n=2, expected=3) == "0.50 ± 0.25 (n=2)"
    assert ca.pct(0.153) == "+15.3%"


def test_reach_counts_epochs_and_seconds_up_to_the_first_epoch_at_target():
    h = history([0.1, 0.3, 0.5], [2.0, 3.0, 4.0])
    assert ca.reach(h, 0.3) == (2, 5.0)
    assert ca.reach(h, 0.6) == (None, None)


def test_steady_histories_retimes_only_the_compile_epoch():
    fold0, fold1 = history([0.1, 0.2], [20.0, 2.0]), history([0.1, 0.2], [3.0, 4.0])
    fixed, removed = ca.steady_histories([fold0, fold1])
    assert [e["seconds"] for e in fixed[0]] == [3.0, 2.0]  # median of 2, 3, 4
    assert fixed[1] == fold1 and removed == 17.0
    assert ca.steady_histories([history([0.1], [9.0])]) == ([history([0.1], [9.0])], 0.0)


def test_convergence_against_the_baselines_best_per_fold():
    base = record(
        "layout:xla:random",
        "baseline",
        "listmle",
        0,
        0.3,
        [history([0.1, 0.2, 0.4], [1.0, 1.0, 1.0]), history([0.2, 0.3, 0.1], [1.0, 1.0, 1.0])],
    )
    ours = record(
        "layout:xla:random",
        "chebsage",
        "listmle",
        0,
        0.4,
        [history([0.4, 0.5, 0.5], [1.0, 1.0, 1.0]), history([0.1, 0.2, 0.25], [1.0, 1.0, 1.0])],
    )
    cells = ca.convergence([base, ours], "chebsage", ["layout:xla:random"], "listmle")
    assert [(c.fold, c.target, c.epochs) for c in cells] == [(0, 0.4, 1), (1, 0.3, None)]
    base_cells = ca.convergence([base, ours], "baseline", ["layout:xla:random"], "listmle")
    assert [c.epochs for c in base_cells] == [3, 2]
    seconds, epochs, hit, total = ca.convergence_speedup(cells, base_cells)
    assert (seconds, epochs, hit, total) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 1, 2)


def test_compare_uses_per_seed_means_over_collections_and_shared_seeds():
    records = [
        record("tile:xla", "chebsage", "listmle", 0, 0.9),
        record("layout:xla:random", "chebsage", "listmle", 0, 0.3),
        record("tile:xla", "baseline", "listmle", 0, 0.8),
        record("layout:xla:random", "baseline", "listmle", 0, 0.2),
        record("tile:xla", "chebsage", "listmle", 1, 0.0),  # seed 1 lacks a collection and a baseline: ignored
    ]
    rel = ca.compare(
        records, ["tile:xla", "layout:xla:random"], "valid_score", {"model": "chebsage"}, {"model": "baseline"}, False
    )
    assert rel == pytest.approx(0.6 / 0.5 - 1)


def test_seed_changes_are_per_seed_and_their_spread_is_reported():
    records = [
        record("tile:xla", m, "listmle", seed, score)
        for seed, (ours, base) in enumerate([(0.6, 0.5), (0.5, 0.5), (0.4, 0.5)])
        for m, score in (("chebsage", ours), ("baseline", base))
    ]
    changes = ca.seed_changes(records, ["tile:xla"], "valid_score", {"model": "chebsage"}, {"model": "baseline"}, False)
    assert changes == [pytest.approx(0.2), pytest.approx(0.0), pytest.approx(-0.2)]
    assert ca.pct_spread(changes) == "+0.0% ± 20.0% (3 seeds)"
    assert ca.pct_spread([0.1]) == "+10.0% (1 seed)"


def test_plateau_tells_early_stopped_folds_from_still_rising_ones():
    stopped = ca.plateau(history([0.1, 0.5, 0.4, 0.45], [1.0] * 4), epochs=10, window=2)
    assert stopped == ca.Plateau(epochs_run=4, stopped_early=True, last_gain=0.0)
    rising = ca.plateau(history([0.1, 0.3, 0.35, 0.5], [1.0] * 4), epochs=4, window=2)
    assert not rising.stopped_early and rising.last_gain == pytest.approx(0.5 - 0.3)
    flat = ca.plateau(history([0.1, 0.3, 0.3, 0.301], [1.0] * 4), epochs=4, window=2)
    assert flat.last_gain == pytest.approx(0.001)
    assert math.isnan(ca.plateau(history([0.2], [1.0]), epochs=1, window=1).last_gain)  # too short to tell
    with pytest.raises(ValueError, match="empty"):
        ca.plateau([], epochs=1, window=1)


def test_plan_restricted_to_collections_drops_sections_left_without_one():
    plan = claims.PLANS["full"]
    layout = claims.Plan(**{**plan.__dict__, **plan.restricted(["layout:xla:random"])})
    assert layout.model_collections == layout.loss_collections == layout.error_collections == ("layout:xla:random",)
    # 4 models x 3 seeds with ListMLE, + chebsage pairwise and mse, + sage, cheb and baseline mse
    assert {r.collection for r in layout.runs()} == {"layout:xla:random"} and len(layout.runs()) == 12 + 6 + 9
    tile = claims.Plan(**{**plan.__dict__, **plan.restricted(["tile:xla"])})
    assert tile.losses == tile.error_models == () and len(tile.runs()) == 12
    default = claims.PLANS["default"]
    with pytest.raises(SystemExit, match="layout:nlp:random"):
        default.restricted(["layout:nlp:random"])


def test_default_plan_shares_the_listmle_runs_between_sections():
    plan = claims.PLANS["default"]
    runs = plan.runs()
    assert len(plan.seeds) >= claims.MIN_SEEDS and len(runs) == 21 == len(set(runs))
    for seed in plan.seeds:  # 2 ListMLE models x 2 collections, chebsage pairwise + mse, baseline mse: 7 per seed
        assert sorted((r.collection, r.model, r.loss) for r in runs if r.seed == seed) == [
            ("layout:xla:default", "baseline", "listmle"),
            ("layout:xla:default", "chebsage", "listmle"),
            ("layout:xla:random", "baseline", "listmle"),
            ("layout:xla:random", "baseline", "mse"),
            ("layout:xla:random", "chebsage", "listmle"),
            ("layout:xla:random", "chebsage", "mse"),
            ("layout:xla:random", "chebsage", "pairwise"),
        ]


def test_plateau_lines_count_early_stops_per_model():
    plan = claims.Plan(**{**claims.PLANS["quick"].__dict__, "train": {"epochs": 3, "patience": 1}})
    records = [
        record("layout:xla:random", "chebsage", "listmle", 0, 0.5, [history([0.5, 0.4], [1, 1])] * 2),
        record("layout:xla:random", "baseline", "listmle", 0, 0.5, [history([0.1, 0.2, 0.4], [1, 1, 1])] * 2),
    ]
    text = "\n".join(claims.plateau_lines(plan, records))
    assert "| layout:xla:random | chebsage | listmle | 2/2 | 2.0 ± 0.0 | 0.0000 | 0.0000 |" in text
    assert "| layout:xla:random | baseline | listmle | 0/2 | 3.0 ± 0.0 | 0.2000 | 0.2000 |" in text


def test_mean_curve_averages_unequal_lengths_while_they_last():
    x, mean, std = ca.mean_curve([history([0.0, 1.0], [1, 1]), history([1.0], [1])])
    assert x.tolist() == [1, 2] and mean.tolist() == [0.5, 1.0] and std.tolist() == [0.5, 0.0]


def _fabricated_results(plan: claims.Plan) -> list[dict]:
    """Records where chebsage beats the baseline by 20% and its MAPE is 30% lower; ListMLE beats MSE by 5%."""
    records = []
    for seed in plan.seeds:
        for c in plan.model_collections:
            for m, score in (("chebsage", 0.48), ("sage", 0.42), ("cheb", 0.41), ("baseline", 0.40)):
                curve = [score * 0.5, score, score]
                records.append(record(c, m, "listmle", seed, score, [history(curve, [1.0, 1.0, 1.0])] * 2))
        for c in plan.loss_collections:
            records.append(record(c, "chebsage", "pairwise", seed, 0.47))
        for c in plan.error_collections:
            records.append(record(c, "chebsage", "mse", seed, 0.4572, mape=0.07))
            records.append(record(c, "baseline", "mse", seed, 0.30, mape=0.10))
    return records


def test_error_section_counts_graphs_where_calibration_beats_flat_over_seeds():
    plan = claims.Plan(**{**claims.PLANS["default"].__dict__, "seeds": (0, 1)})
    rows = [line for line in claims.section_error(plan, _fabricated_results(plan)) if line.startswith("| ")]
    assert "graphs calibrated < flat" in rows[0]
    assert rows[1].startswith("| chebsage |") and "| 0.500 ± 0.000 | 4/6 |" in rows[1]  # [2, 3] per seed


def test_report_states_each_claim_with_its_figure_and_verdict():
    plan = claims.Plan(**{**claims.PLANS["default"].__dict__, "seeds": (0, 1)})
    records = _fabricated_results(plan)
    lines = "\n".join(claims.claim_lines(plan, records))
    rows = {
        line.split("|")[1].strip(): line
        for line in lines.splitlines()
        if line.startswith("| ") and "claim" not in line[:8]
    }
    assert "**reached** (provisional: 2 seed(s) < 3)" in rows["15% better runtime-prediction accuracy than baseline"]
    assert "+20.0%" in rows["15% better runtime-prediction accuracy than baseline"]
    error = rows["18% lower estimation error than baseline"]
    assert plan.centred_mse  # the default plan's MSE runs have no runtime level: only the level-fitted MAPE counts
    assert "**reached**" in error and "+30.0% ± 0.0% (2 seeds) (calibrated level-fitted MAPE)" in error
    assert "calibrated MAPE chebsage 0.023 ± 0.000, baseline 0.033 ± 0.000; flat prediction 0.050 ± 0.000" in error
    raw_mse = claims.Plan(**{**plan.__dict__, "loss_args": {}})
    error = next(line for line in claims.claim_lines(raw_mse, records) if "18% lower" in line)
    assert "**reached**" in error and "+30.0% ± 0.0% (2 seeds) (calibrated level-fitted MAPE: +30.0%" in error
    listmle = rows["ListMLE improves ranking by 10%"]
    assert "**not reached** (7.9 points short of +10.0%; provisional: 2 seed(s) < 3)" in listmle  # vs every loss
    assert "vs pairwise +2.1% ± 0.0% (2 seeds); vs mse +5.0% ± 0.0% (2 seeds)" in listmle
    three = claims.Plan(**{**plan.__dict__, "seeds": (0, 1, 2)})
    accuracy = next(line for line in claims.claim_lines(three, _fabricated_results(three)) if "15% better" in line)
    assert "| **reached** | +20.0% ± 0.0% (3 seeds) |" in accuracy  # >= 3 seeds: a final verdict
    # identical curves: chebsage reaches the baseline's best at the same epoch, 0% faster
    assert (
        "**not reached** (12.0 points short of +12.0%; provisional" in rows["12% faster convergence"]
        and "+0.0% ± 0.0% (2 seeds) training time" in rows["12% faster convergence"]
    )


def test_convergence_verdict_names_the_cells_where_the_target_was_missed():
    plan = claims.Plan(**{**claims.PLANS["default"].__dict__, "seeds": (0, 1, 2)})
    records = _fabricated_results(plan)
    for r in ca.select(records, model="chebsage", loss="listmle", collection="layout:xla:default", seed=1):
        r["histories"] = [history([0.1, 0.2], [1.0, 1.0])] * 2  # both folds stay below the baseline's 0.40
    line = next(line for line in claims.claim_lines(plan, records) if "12% faster" in line)
    assert "| **not reached** (target missed in 2/12 cells) |" in line and "reached in 10/12 cells" in line


def test_render_has_every_section_even_when_the_plan_skips_some():
    plan = claims.PLANS["quick"]
    records = _fabricated_results(plan)
    speed = {
        "layout:xla:random": {
            m: {
                "params": 10,
                "train_configs_per_s": v,
                "predict_configs_per_s": 2 * v,
                "rss_before_mb": 600.0,
                "peak_rss_mb": 900.0,
            }
            for m, v in (("chebsage", 300.0), ("baseline", 200.0))
        }
    }
    info = {
        "command": "python benchmarks/claims.py --quick",
        "date": "today",
        "load": (1.0, 2.0),
        "wall": 60.0,
        "phases": {"data": 1.0, "train": 50.0, "speed": 9.0},
        "data": "synthetic",
        "machine": claims.machine(),
        "counts": {"layout:xla:random": {"train": 6, "valid": 3}},
    }
    text = claims.render(
        plan, claims.argparse.Namespace(params="params.yaml"), info, records, [("a run", "boom")], speed
    )
    for heading in (
        "## Claims",
        "## 1. Models",
        "## 2. Losses",
        "## 3. Runtime-prediction error",
        "## 4. Convergence",
        "## 5. Speed and memory",
        "## Plots",
        "## Failed runs",
    ):
        assert heading in text
    assert "| layout:xla:random | chebsage | 10 | 300 | x1.50 | 600 | x1.50 | 600 MB | 900 MB |" in text
    assert "Not measured in this plan." in text and "- a run: boom" in text


@pytest.mark.slow
def test_quick_run_writes_results_and_plots(tmp_path: Path):
    """The whole benchmark on the tiny preset (~1.5 min on 2 shared cores: two trainings, two throughput processes)."""
    work = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "claims.py"), "--quick", "--out", str(tmp_path), "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "- Command: `python " in text and "--quick" in text and "- Commit: `" in text and "2 training runs" in text
    for claim in (
        "15% better runtime-prediction accuracy",
        "18% lower estimation error",
        "ListMLE improves ranking",
        "12% faster convergence",
    ):
        assert f"| {claim}" in text
    assert "| chebsage | " in text and "| baseline | " in text
    assert "| layout:xla:random | baseline |" in text  # speed table
    for plot in ("learning_curves.png", "pred_vs_true.png"):
        assert (tmp_path / "plots" / plot).read_bytes()[:8] == PNG_MAGIC
    raw = json.loads((tmp_path / "results.json").read_text())
    assert {(r["model"], r["collection"]) for r in raw["records"]} == {
        ("chebsage", "layout:xla:random"),
        ("baseline", "layout:xla:random"),
    }
    again = tmp_path / "again"
    claims.main(["--render", str(tmp_path / "results.json"), "--out", str(again)])  # no training
    assert (again / "RESULTS.md").read_text() == text

    # stopped after the baseline's run, and only results.partial.json + params.yaml moved to another machine:
    # --resume prepares the data again, trains only chebsage's run and keeps the baseline's record
    stopped = {**raw, "records": [r for r in raw["records"] if r["model"] == "baseline"]}
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "results.partial.json").write_text(json.dumps(stopped))
    shutil.copy(work / "params.yaml", moved / "params.yaml")
    resumed = tmp_path / "resumed"
    cmd = [sys.executable, str(BENCHMARKS / "claims.py"), "--quick", "--out", str(resumed), "--work", str(moved)]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "is not empty" in refused.stderr
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "has no prepared data: preparing it again" in done.stdout
    assert "[1/1] layout:xla:random / chebsage / listmle / seed 0" in done.stdout
    again = json.loads((resumed / "results.json").read_text())
    assert again["records"][0] == stopped["records"][0] and len(again["records"]) == 2
    assert again["info"]["resumes"][0]["command"] == raw["info"]["command"]
    assert "- Resumes a run stopped after" in (resumed / "RESULTS.md").read_text()


def test_resume_refuses_other_settings(tmp_path: Path):
    """--resume names what differs: records of other settings are never mixed into one report."""
    with pytest.raises(SystemExit, match="needs --work"):
        claims.resumed(None)
    with pytest.raises(SystemExit, match="results.partial.json not found"):
        claims.resumed(tmp_path)
    plan = claims.PLANS["quick"]
    earlier = {"plan": json.loads(json.dumps(plan.__dict__)), "info": {"source_sha256": source_fingerprint()}}
    params_path = tmp_path / "params.yaml"
    params_path.write_text("train: {epochs: 1}\nmodels: {}\n")
    claims.check_resumable(earlier, plan, {"train": {"epochs": 1}, "models": {}}, params_path)  # same: passes
    with pytest.raises(SystemExit, match="plan differs .* in seeds"):
        claims.check_resumable(earlier, claims.Plan(**{**plan.__dict__, "seeds": (0, 1)}), {}, params_path)
    with pytest.raises(SystemExit, match="section\\(s\\) train"):
        claims.check_resumable(earlier, plan, {"train": {"epochs": 2}, "models": {}}, params_path)
    earlier["info"]["source_sha256"] = "0" * 64
    with pytest.raises(SystemExit, match="tpuperf sources differ"):
        claims.check_resumable(earlier, plan, {"train": {"epochs": 1}, "models": {}}, params_path)


def test_resume_prepares_the_data_again_only_if_it_is_the_stopped_runs(tmp_path: Path):
    """A work directory moved without its data: --resume regenerates it and refuses other graphs or arrays."""
    plan = claims.PLANS["quick"]
    first = tmp_path / "first"
    params = claims.run_params(load_params(BENCHMARKS.parent / "params.yaml"), plan, first)
    described, counts = claims.prepare(plan, params, None, first)
    digests = claims.cache_digests(params, plan)
    assert set(digests) == {"layout:xla:random"} and len(digests["layout:xla:random"]) == 64
    moved = tmp_path / "moved"
    params = claims.run_params(load_params(BENCHMARKS.parent / "params.yaml"), plan, moved)
    assert claims.cache_digests(params, plan) is None  # nothing prepared there
    earlier = {"info": {"data": described, "counts": counts, "cache_digests": digests}}
    claims.prepare_again(plan, params, None, moved, earlier)  # the same synthetic data: passes
    assert claims.cache_digests(params, plan) == digests
    with pytest.raises(SystemExit, match="cache digests"):
        claims.prepare_again(plan, params, None, moved, {"info": {**earlier["info"], "cache_digests": {"x": "0"}}})
    other = {name: {**split, "train": split["train"] + 1} for name, split in counts.items()}
    with pytest.raises(SystemExit, match="is not the stopped run's"):
        claims.prepare_again(plan, params, None, moved, {"info": {**earlier["info"], "counts": other}})


def test_scale_draws_the_real_size_distribution():
    import scale

    rng = np.random.default_rng(0)
    for name, mean, top in (("xla", 14_000, 44_000), ("nlp", 5_700, 44_000), ("tile", 40, 1_000)):
        sizes = np.array(scale.draw_sizes(rng, scale.SCALES[name], 4_000))
        assert abs(sizes[:, 0].mean() / mean - 1) < 0.1 and sizes[:, 0].max() <= top, (name, sizes[:, 0].mean())
        if name != "tile":
            assert 100 <= sizes[:, 1].min() and sizes[:, 1].max() <= 1_000


def test_scale_padding_only_reports_the_training_padding_without_a_model(tmp_path: Path, capsys):
    """--padding-only --quick: drawn tiny graphs preprocessed, one epoch of training batches planned
    and packed before (one shape from every split) and after (params.yaml's buckets); no training."""
    import scale

    results = {r["collection"]: r for r in scale.main(["--quick", "--padding-only", "--workdir", str(tmp_path)])}
    assert sorted(results) == ["layout:xla:random", "tile:xla"]
    figures = {
        name: {
            mode: (len(r[f"train_{mode}"]["shapes"]), round(r[f"train_{mode}"]["node_fill"], 3))
            for mode in ("before", "after")
        }
        for name, r in results.items()
    }
    assert figures == {
        "tile:xla": {"before": (1, 0.760), "after": (2, 0.879)},
        "layout:xla:random": {"before": (1, 0.672), "after": (3, 0.8)},
    }
    assert results["layout:xla:random"]["train_after"]["config_fill"] == 1.0
    out = capsys.readouterr().out
    assert "[MET] tile:xla: training padding efficiency >= 70% (nodes 87.9%, configs 93.9%)" in out
    assert "[MET] layout:xla:random: training padding efficiency >= 70% (nodes 80.0%, configs 100.0%)" in out
    assert "peak RSS" not in out and "configs/s" not in out


@pytest.mark.slow
def test_scale_quick_run_prints_every_stage_and_goal(tmp_path: Path):
    """benchmarks/scale.py --quick (~1 min on 2 free cores: one child per collection, no XLA)."""
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "scale.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = {r["collection"]: r for r in json.loads(out.read_text())}
    assert sorted(results) == ["layout:xla:random", "tile:xla"]
    for name, r in results.items():
        for stage in ("preprocess", "train_before", "train_after", "score"):
            assert r[stage]["peak_rss"] > 100 * 2**20, (name, stage)
        assert r["preprocess"]["cache_bytes"] > 0 and r["score"]["configs"] > 0
        assert r["train_before"]["configs_per_s"] > 0 and r["train_after"]["configs_per_s"] > 0
        assert 0 < r["train_after"]["node_fill"] <= 1 and 0 < r["train_after"]["config_fill"] <= 1
        assert r["extrapolated"]["epoch_seconds"] > 0 and r["extrapolated"]["score_seconds"] > 0
    layout = results["layout:xla:random"]
    assert (
        len(layout["train_after"]["shapes"]) > 1
        and layout["train_after"]["node_fill"] > layout["train_before"]["node_fill"]
    )
    for line in (
        "train before",
        "train after",
        "full dataset on this machine",
        "padding efficiency >= 70%",
        "peak RSS of every stage <= 8 GiB",
        "session-start ops and model) >= 2x",
    ):
        assert line in done.stdout, line


def test_layout_feature_ceiling_on_the_tiny_preset(tmp_path: Path, capsys):
    """The diagnosis' hand-computed features: one row per config, non-negative costs (ns), and a
    printed line per collection with the oracle's and each feature set's valid Kendall tau."""
    import layout_feature_ceiling as lfc

    from tpuperf.collection import get_collection
    from tpuperf.data.npz import load_graph
    from tpuperf.data.synthetic import operand_edge_index, write_dataset

    data = tmp_path / "data"
    write_dataset(data, "tiny", seed=0)
    col = get_collection("layout:xla:random")
    path = sorted(col.split_dir(data, "train").glob("*.npz"))[0]
    g = load_graph(path, col, "train")
    features = lfc.layout_features(g, operand_edge_index(path, "tiny", 0))
    assert features.shape == (len(g.config_runtime), 8) and (features >= 0).all() and features.sum() > 0
    with pytest.raises(SystemExit, match="manifest.json not found: pass --preset and --seed"):
        lfc.main(["--data", str(data), "--collections", "layout:xla:random"])
    lfc.main(["--data", str(data), "--collections", "layout:xla:random", "--preset", "tiny", "--seed", "0"])
    line = capsys.readouterr().out.strip()
    taus = [float(part.rsplit(" ", 1)[1]) for part in line.split(": ", 1)[1].split(", ")]
    assert line.startswith("layout:xla:random: oracle ") and len(taus) == 1 + len(lfc.FEATURE_SETS)
    assert taus[0] > 0.5 and all(-1 <= t <= 1 for t in taus)  # noise-free cost model vs noisy runtimes


def test_tile_feature_ceiling_on_the_tiny_preset(tmp_path: Path, capsys):
    """The ridge with tile features reads 24 x 2 config columns plus 6 x 2 tile-feature columns and
    prints both feature sets' valid tile scores, each in [0, 1]."""
    import tile_feature_ceiling as tfc

    from tpuperf.collection import get_collection
    from tpuperf.data.npz import load_graph
    from tpuperf.data.synthetic import write_dataset

    data = tmp_path / "data"
    write_dataset(data, "tiny", seed=0)
    col = get_collection("tile:xla")
    g = load_graph(sorted(col.split_dir(data, "train").glob("*.npz"))[0], col, "train")
    assert tfc.ridge_features(g).shape == (g.num_configs, 60)
    tfc.main(["--data", str(data)])
    line = capsys.readouterr().out.strip()
    assert line.startswith("tile:xla (6 train / 3 valid graphs), config ")
    scores = [float(part.rsplit(" ", 1)[1]) for part in line.split("), ", 1)[1].split(", ")]
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)


def test_before_side_is_the_session_start_ops_and_models():
    """throughput.session_start, the before side of scale.py, throughput.py --before and rank_speed.py
    --before: chebsage with the per-config depth it had when issue #12 was filed (2 layers; params.yaml
    now sets 1), every other model and setting as params.yaml has them, traced with the session-start ops."""
    import tensorflow as tf
    from throughput import session_start

    from tpuperf.config import load_config
    from tpuperf.models import layers

    config = load_config(BENCHMARKS.parent / "params.yaml")
    with session_start(config) as before:
        assert layers.LayerNorm.call is tf.keras.layers.LayerNormalization.call  # the session-start ops
    assert layers.LayerNorm.call is not tf.keras.layers.LayerNormalization.call
    chebsage = config.model("chebsage")
    assert (chebsage.config_layers, before.model("chebsage").config_layers) == (1, 2)
    assert dataclasses.replace(before.model("chebsage"), config_layers=chebsage.config_layers) == chebsage
    assert before.model("sage") == config.model("sage")
    assert dataclasses.replace(before, models=config.models) == config


def test_throughput_before_measures_the_session_start_models(tmp_path: Path, monkeypatch):
    """throughput.py --before times each model as session_start has it (ops and model settings), like
    scale.py's before: it used to apply the ops only, so its chebsage ratio compared other programs."""
    import tensorflow as tf
    import throughput
    from conftest import config_with

    from tpuperf.collection import get_collection
    from tpuperf.data.preprocess import preprocess_collection
    from tpuperf.data.synthetic import write_dataset
    from tpuperf.models import layers

    config = config_with({"preprocess": {"out": str(tmp_path / "cache"), "jobs": 1}})
    write_dataset(tmp_path / "data", "tiny", seed=0)
    col = get_collection("layout:xla:random")
    preprocess_collection(tmp_path / "data", config.preprocess.out, col, config.preprocess, progress=False)
    seen = []

    def measure(model, kind, train_batches, predict_batches, settings):
        seen.append((model.conv, model.config_layers, layers.LayerNorm.call is tf.keras.layers.LayerNormalization.call))
        return {}

    monkeypatch.setattr(throughput, "measure", measure)
    out = throughput.throughput(config, config.preprocess.out, col.slug, ["chebsage", "sage"], 1, before=True)
    assert list(out) == ["chebsage (before)", "chebsage", "sage (before)", "sage"]
    assert seen == [("chebsage", 2, True), ("chebsage", 1, False), ("sage", 2, True), ("sage", 2, False)]


def test_claims_pool_workers_end_with_the_benchmark_process(tmp_path: Path):
    """A claims run killed outright (SIGKILL) takes its training workers with it (claims.end_with_parent):
    the worker below would otherwise sleep on for a minute."""
    psutil = pytest.importorskip("psutil")
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    script = f"""
import multiprocessing, os, signal, sys, time
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, {str(BENCHMARKS)!r})
import claims
pool = ProcessPoolExecutor(
    1, mp_context=multiprocessing.get_context("spawn"), initializer=claims.end_with_parent, initargs=(os.getpid(),)
)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 60)
time.sleep(0.5)
os.kill(os.getpid(), signal.SIGKILL)
"""
    out = tmp_path / "worker_pid"
    with out.open("w") as f:  # a file, not a pipe: a surviving worker would hold a pipe open
        subprocess.Popen([sys.executable, "-c", script], stdout=f).wait(timeout=120)
    worker = int(out.read_text().split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(worker).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        psutil.Process(worker).kill()
        pytest.fail(f"worker {worker} outlived the killed benchmark process")


def test_config_repeats_counts_configurations_identical_to_an_earlier_one(tmp_path: Path, capsys):
    import config_repeats
    from conftest import _write_graph

    feat = np.repeat(np.array([1, 2, 1, 1, 3, 4, 5], np.float32)[:, None], 24, axis=1)  # 2 repeats of config 0
    runtime, ones = np.arange(1, 8, dtype=np.int64), np.ones(7, np.int64)
    _write_graph(
        tmp_path,
        "tile:xla",
        "valid",
        name="a",
        config_feat=feat,
        config_runtime=runtime,
        config_runtime_normalizers=ones,
    )
    same = np.zeros((3, 24), np.float32)  # one configuration 3 times: fewer than 5 distinct
    _write_graph(
        tmp_path,
        "tile:xla",
        "valid",
        name="b",
        config_feat=same,
        config_runtime=runtime[:3],
        config_runtime_normalizers=ones[:3],
    )
    layout = np.load(_write_graph(tmp_path, "layout:xla:random", "test", name="l"))["node_config_feat"]
    repeated = layout[[0, 1, 0, 2, 3, 1]].copy()  # 4 configurations, 2 repeats over every configurable node
    repeated[2, -1, -1] = 5 if repeated[0, -1, -1] != 5 else 4  # config 2 differs from 0 at one node: distinct
    _write_graph(
        tmp_path, "layout:xla:random", "test", name="l", node_config_feat=repeated, config_runtime=np.zeros(6, np.int64)
    )
    assert config_repeats.main([str(tmp_path), "--per-file"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [{k: v for k, v in line.items() if k != "labels_ms"} for line in lines[:2]] == [
        {
            "file": str(tmp_path / "npz/tile/xla/valid/a.npz"),
            "collection": "tile:xla",
            "configs": 7,
            "distinct": 5,
            "most_copies": 3,
        },
        {
            "file": str(tmp_path / "npz/tile/xla/valid/b.npz"),
            "collection": "tile:xla",
            "configs": 3,
            "distinct": 1,
            "most_copies": 3,
        },
    ]
    assert lines[2] == {
        "data": str(tmp_path),
        "collection": "tile:xla",
        "split": "valid",
        "files": 2,
        "configs": 10,
        "repeated_configs": 4,
        "files_with_repeats": 2,
        "files_with_fewer_than_5_distinct": 1,
        "largest_repeat_share": round(2 / 3, 4),
    }
    assert {k: v for k, v in lines[3].items() if k != "labels_ms"} == {
        "file": str(tmp_path / "npz/layout/xla/random/test/l.npz"),
        "collection": "layout:xla:random",
        "configs": 6,
        "distinct": 5,
        "most_copies": 2,
    }
    assert lines[4]["repeated_configs"] == 1 and len(lines) == 5


def test_outlier_sigma_counts_what_rank_counts(tmp_path: Path, capsys):
    """benchmarks/outlier_sigma.py counts, per split, the files with standardised feature values beyond each sigma
    (tpuperf.ranking.ranker.outlying_masks, what `tpuperf rank` warns of); a file under --other is transformed with
    the same train statistics, so copies of the test files count as they do."""
    import outlier_sigma

    from tpuperf.collection import get_collection
    from tpuperf.data.synthetic import write_dataset

    write_dataset(tmp_path / "data", "tiny", 0)
    col = get_collection("layout:xla:random")
    test_files = sorted(col.split_dir(tmp_path / "data", "test").glob("*.npz"))
    other = col.split_dir(tmp_path / "other", "test")
    other.mkdir(parents=True)
    for f in test_files:
        shutil.copy(f, other / f.name)
    argv = [
        str(tmp_path / "data"),
        "--collections",
        col.name,
        "--sigmas",
        "0.5",
        "1000",
        "--other",
        str(tmp_path / "other"),
    ]
    assert outlier_sigma.main(argv) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (
        row["collection"] == col.name
        and row["test"]["files"] == len(test_files)
        and row["other"]["files"] == len(test_files)
    )
    for split in ("train", "valid", "test", "other"):
        assert row[split]["0.5"]["files_warned"] == 1.0 and row[split]["0.5"]["max_count"] > 0  # half a std: most
        assert row[split]["1000"] == {"files_warned": 0.0, "max_count": 0}
    assert row["other"] == row["test"]  # the same files, transformed by rank's path (prepare_graph) and the cache
