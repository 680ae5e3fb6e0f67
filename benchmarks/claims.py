"""Measure the project description's four claims (listed in RESULTS.md) against the official-style baseline.

One run generates (or reads) one dataset, trains every planned (collection, model, loss, seed)
with the project's own k-fold trainer on the same cached graphs, scores the valid split, times
training and inference of each model on identical batches (benchmarks/throughput.py, one
process per model for its peak RSS), and writes ``<out>/RESULTS.md``, ``<out>/plots/*.png`` and the
raw per-run records ``<out>/results.json``.
The figures and the definitions behind each verdict are in benchmarks/claims_analysis.py.
Every run trains to its plateau (early stopping, or a flat end of its OOF curve: section 4), and
each claim's verdict is the mean ± std over seeds of its per-seed figure.

    python benchmarks/claims.py                   # default plan: synthetic medium preset, chebsage vs baseline on the xla collections
    python benchmarks/claims.py --collections layout:xla:random   # the same plan on one collection
    python benchmarks/claims.py --full            # the whole table (every model and collection; hours)
    python benchmarks/claims.py --quick --out /tmp/claims   # smoke run: tiny preset, 1 seed, 1 epoch
    python benchmarks/claims.py --data DIR        # a local real-layout dataset (needs train + valid splits)
    python benchmarks/claims.py --work DIR --resume   # continue a stopped run (same plan and params) in DIR
                                                      # (DIR may hold only its results.partial.json and params.yaml,
                                                      # e.g. copied from another machine: the data is prepared again)

Everything not overridden by the plan (printed at start and written to RESULTS.md) comes from
``--params`` (params.yaml). The test split is never used: it is unlabelled, and scoring it would
only cost time. Runs execute ``--jobs`` at a time in worker processes, seed by seed; each
finished run is saved to ``<work>/results.partial.json``, which ``--render`` turns into a report
if the benchmark is stopped, and from which ``--resume`` continues it (unfinished runs restart
from their fold checkpoints).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import claims_analysis as ca
import numpy as np
import psutil
import yaml

from tpuperf.provenance import source_fingerprint

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SPLITS_USED = ("train", "valid")


@dataclass(frozen=True)
class Plan:
    """What one benchmark run trains and measures."""

    name: str
    preset: str  # synthetic preset when no --data
    seeds: tuple[int, ...]
    models: tuple[str, ...]
    model_collections: tuple[str, ...]  # 1. models (ListMLE) and 3. convergence
    losses: tuple[str, ...]  # 2. losses, with chebsage
    loss_collections: tuple[str, ...]
    error_models: tuple[str, ...]  # 3b. MAPE of MSE-trained models
    error_collections: tuple[str, ...]
    train: dict = field(default_factory=dict)  # overrides of params.yaml train.*
    model_overrides: dict = field(default_factory=dict)  # applied to every models.<name>
    loss_args: dict = field(default_factory=dict)  # per loss name: train.loss_args of its runs
    throughput_steps: int = 20
    jobs: int = 2

    @property
    def centred_mse(self) -> bool:
        """MSE runs regress runtime normalised per graph: only the level-fitted MAPE is defined."""
        return bool(self.loss_args.get("mse", {}).get("center"))

    def runs(self) -> list[Run]:
        """Every training run the sections need, each once (a run can serve several sections)."""
        wanted = [Run(c, m, "listmle", s) for c in self.model_collections for m in self.models for s in self.seeds]
        wanted += [Run(c, ca.OURS, loss, s) for c in self.loss_collections for loss in self.losses for s in self.seeds]
        wanted += [Run(c, m, "mse", s) for c in self.error_collections for m in self.error_models for s in self.seeds]
        unique = list(dict.fromkeys(wanted))
        # seed by seed (a stopped run has whole seeds), the slowest (baseline) first within one: better packing
        return sorted(unique, key=lambda r: (r.seed, r.model != ca.BASELINE))

    def restricted(self, keep: list[str]) -> dict:
        """The plan fields that keep only the ``keep`` collections (SystemExit naming any the plan lacks)."""
        unknown = sorted(set(keep) - set(self.collections))
        if unknown:
            raise SystemExit(f"--collections {unknown}: not in plan {self.name!r} ({', '.join(self.collections)})")
        kept = {
            name: tuple(c for c in getattr(self, name) if c in keep)
            for name in ("model_collections", "loss_collections", "error_collections")
        }
        return {
            **kept,
            "losses": self.losses if kept["loss_collections"] else (),
            "error_models": self.error_models if kept["error_collections"] else (),
        }

    @property
    def collections(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.model_collections + self.loss_collections + self.error_collections))


MIN_SEEDS = 3  # a verdict from fewer seeds is marked provisional

# Every run trains to its plateau: up to CONVERGE["epochs"] epochs, stopped after CONVERGE["patience"]
# epochs without a new best OOF score (section 4 shows which stopped and how flat the others ended).
CONVERGE = {"folds": 2, "epochs": 40, "patience": 4, "eval_configs": 64}
LAYOUT_COLLECTIONS = ("layout:xla:random", "layout:xla:default", "layout:nlp:random", "layout:nlp:default")

PLANS = {
    # Every claim's figure over 3 seeds: chebsage vs the baseline (ListMLE; sections 1 and 4) on the two xla
    # collections, the loss and error runs (sections 2 and 3) on layout:xla:random: 21 runs (the ListMLE runs
    # of layout:xla:random shared by sections 1, 2 and 4). Estimate, measured at 8e3dea5 with
    # `--seeds 1 --epochs 2` (2 jobs, load 5-10 from other jobs): an epoch costs 1.4-2.8 s chebsage and
    # 4.8-6.9 s baseline, plus ~40-65 s of XLA compilation and ~25 s of start-up and scoring per run; at the
    # ~22 epochs per fold to early stop of the last default run (2 folds), a chebsage run ~190 s, a baseline
    # run ~310 s loaded: (12 x 190 + 9 x 310) / 2 jobs ~42 min at that load, ~20-25 min on a quiet 2-core
    # machine if the load halves this run's share of the CPUs. Measured (benchmarks/RESULTS.md, 8af16c6): 60.6 min
    # at load 3-9 (runs 127-627 s, 18-31 epochs per fold); on a quiet machine (015eb0f) 24.8 min.
    # tile:xla, sage, cheb and the nlp collections are left to --full.
    "default": Plan(
        name="default",
        preset="medium",
        seeds=(0, 1, 2),
        models=("chebsage", "baseline"),
        model_collections=("layout:xla:random", "layout:xla:default"),
        losses=("listmle", "pairwise", "mse"),
        loss_collections=("layout:xla:random",),
        error_models=("chebsage", "baseline"),
        error_collections=("layout:xla:random",),
        train=CONVERGE,
        loss_args={"mse": {"center": True}},
        throughput_steps=20,
    ),
    "full": Plan(  # the whole table: every model on every collection (hours on 2 cores)
        name="full",
        preset="medium",
        seeds=(0, 1, 2),
        models=("chebsage", "sage", "cheb", "baseline"),
        model_collections=("tile:xla", *LAYOUT_COLLECTIONS),
        losses=("listmle", "pairwise", "mse"),
        loss_collections=LAYOUT_COLLECTIONS,
        error_models=("chebsage", "sage", "cheb", "baseline"),
        error_collections=LAYOUT_COLLECTIONS,
        train=CONVERGE,
        loss_args={"mse": {"center": True}},
        throughput_steps=20,
    ),
    "quick": Plan(
        name="quick",
        preset="tiny",
        seeds=(0,),
        models=("chebsage", "baseline"),
        model_collections=("layout:xla:random",),
        losses=(),
        loss_collections=(),
        error_models=(),
        error_collections=(),
        train={
            "folds": 2,
            "epochs": 1,
            "patience": 1,
            "eval_configs": 16,
            "configs_per_graph": 8,
            "predict_configs_per_graph": 32,
            "samples_per_graph": {"tile": 1, "layout": 1},
        },
        model_overrides={"units": 8, "config_units": 8, "shared_layers": 1, "config_layers": 1, "opcode_dim": 4},
        throughput_steps=2,
    ),
}


@dataclass(frozen=True)
class Run:
    collection: str
    model: str
    loss: str
    seed: int

    @property
    def tag(self) -> str:
        return f"{self.loss}/seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.collection} / {self.model} / {self.loss} / seed {self.seed}"


# ---------------------------------------------------------------- data


def data_view(source: Path, collections: tuple[str, ...], view: Path) -> Path:
    """A real-layout directory of symlinks to the train and valid splits of ``collections`` only."""
    for name in collections:
        collection = _collection(name)
        for split in SPLITS_USED:
            target = collection.split_dir(source, split)
            if not target.is_dir() or not any(target.glob("*.npz")):
                raise SystemExit(
                    f"{target}: no .npz files; the benchmark trains on train and scores valid, so "
                    f"{name} needs both splits under {source}"
                )
            link = collection.split_dir(view, split)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target.resolve(), target_is_directory=True)
    return view


def prepare(plan: Plan, params: dict, data: Path | None, work: Path) -> tuple[str, dict[str, dict[str, int]]]:
    """Dataset (generated unless ``data``) -> train/valid view -> preprocessed cache; returns a description."""
    from tpuperf.config import Config
    from tpuperf.data.cache import CollectionCache
    from tpuperf.data.preprocess import preprocess_collection
    from tpuperf.data.synthetic import write_dataset

    if data is None:
        data = work / "data"
        write_dataset(data, plan.preset, seed=0)
        described = f"synthetic preset `{plan.preset}` (tpuperf.data.synthetic, seed 0)"
    else:
        described = f"local dataset `{data}`"
    view = data_view(data, plan.collections, work / "view")
    settings = Config.from_dict(params).preprocess
    counts = {}
    for name in plan.collections:
        preprocess_collection(view, settings.out, _collection(name), settings, progress=False)
        cache = CollectionCache(settings.out, name)
        counts[name] = {split: len(cache.graph_ids(split)) for split in SPLITS_USED}
    return described, counts


def cache_digests(params: dict, plan: Plan) -> dict[str, str] | None:
    """Per collection, a sha256 (64 hex chars) of the prepared cache's stats.json and its train and valid graphs'
    content hashes (tpuperf.data.cache.ContentHash): what the runs trained on. None if the cache is missing or
    incomplete (a work directory moved to another machine without it)."""
    from tpuperf.config import Config
    from tpuperf.data.cache import STATS_FILE, CacheError, CollectionCache

    root = Config.from_dict(params).preprocess.out
    digests = {}
    for name in plan.collections:
        try:
            cache = CollectionCache(root, name)
            digest = hashlib.sha256((cache.dir / STATS_FILE).read_bytes())
            for split in SPLITS_USED:
                digest.update(json.dumps(sorted(cache.content_hashes(split).items())).encode())
        except (CacheError, OSError):
            return None
        digests[name] = digest.hexdigest()
    return digests


def prepare_again(plan: Plan, params: dict, data: Path | None, work: Path, earlier: dict) -> None:
    """``--resume`` in a work directory that holds the stopped run's results.partial.json and params.yaml but
    not its prepared data (e.g. copied to another machine): generate (or read ``data``) and preprocess again,
    then require the same graphs as the stopped run; SystemExit naming what differs. Runs finished
    earlier are kept; unfinished ones restart from scratch (their fold checkpoints are not there)."""
    for sub in ("data", "view", "cache"):
        shutil.rmtree(work / sub, ignore_errors=True)
    print(f"--resume: {work} has no prepared data: preparing it again", flush=True)
    described, counts = prepare(plan, params, data, work)
    if (described, counts) != (earlier["info"]["data"], earlier["info"]["counts"]):
        raise SystemExit(
            f"--resume: the data prepared again ({described}, {counts}) is not the stopped run's "
            f"({earlier['info']['data']}, {earlier['info']['counts']}): give the same --data"
        )
    before = earlier["info"].get("cache_digests")
    if before is None:
        print("--resume: the stopped run saved no cache digests (older claims.py): only graph counts checked")
    elif cache_digests(params, plan) != before:
        raise SystemExit("--resume: the data prepared again differs from the stopped run's (cache digests)")


def _collection(name: str):
    from tpuperf.collection import get_collection

    return get_collection(name)


def run_params(base: dict, plan: Plan, work: Path) -> dict:
    """params.yaml (a new dict) with the plan's overrides and the benchmark's own cache, runs and
    checkpoints; checked (ConfigError) before any work starts."""
    from tpuperf.config import Config, deep_merge

    params = deep_merge(
        base,
        {
            "preprocess": {"out": str(work / "cache")},
            "train": {**plan.train, "verbose": 0},
            "models": {name: dict(plan.model_overrides) for name in base["models"]},
        },
    )
    Config.from_dict(params)
    return params


# ---------------------------------------------------------------- training (worker processes)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent(parent: int) -> None:
    """Pool worker initializer: on Linux the worker gets SIGTERM when the benchmark process ``parent``
    ends, however it ends (prctl PR_SET_PDEATHSIG; the standard library has no portable form).
    Without it a killed benchmark left its runs training: two orphans trained on for 20+ minutes.
    A worker whose parent is already gone exits at once. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent ended before the signal was armed
        os._exit(1)


def train_run(run: Run, params: dict, work: Path, keep_scatter: bool, loss_args: dict) -> dict:
    """Train one run with the project's trainer and reduce its outputs to a record (claims_analysis)."""
    import polars as pl

    from tpuperf.config import Config
    from tpuperf.runs import STATE_FILE, fold_checkpoint_dir, read_fold_predictions
    from tpuperf.submission.ensemble import combine, config_labels, score_predictions
    from tpuperf.training.trainer import train_collection

    runs_dir, ckpt_dir = work / "runs" / run.tag, work / "checkpoints" / run.tag
    train = {
        **params["train"],
        "seed": run.seed,
        "loss": run.loss,
        "loss_args": loss_args,
        "runs_dir": str(runs_dir),
        "checkpoints_dir": str(ckpt_dir),
    }
    config = Config.from_dict({**params, "train": train})
    folds = config.train.folds
    started = time.perf_counter()
    metrics = train_collection(run.collection, run.model, config)
    wall = time.perf_counter() - started

    collection = _collection(run.collection)
    histories = [
        json.loads((fold_checkpoint_dir(ckpt_dir, collection, run.model, k) / STATE_FILE).read_text())["history"]
        for k in range(folds)
    ]
    scored = read_fold_predictions(
        runs_dir, folds, collections=[collection.name], models=[run.model], splits={"valid", "oof"}
    )
    valid = scored.filter(pl.col("split") == "valid")
    record = {
        "collection": run.collection,
        "model": run.model,
        "loss": run.loss,
        "loss_args": loss_args,
        "seed": run.seed,
        "valid_score": metrics["valid_score_mean_fold"],
        # ranked as the submission ranks its rows (a tile top 5 of distinct configurations)
        "valid_ensemble": score_predictions(
            combine(valid, {run.model: 1.0}), config_labels(config.preprocess.out, collection, ["valid"])
        )[collection.name],
        "oof_score": metrics["oof_score"],
        "fold_valid_scores": [f["valid_score"] for f in metrics["folds"]],
        "wall_seconds": wall,
        "histories": histories,
        **{key: None for key in ca.MAPE_FIELDS},
        "spread_scales": None,
        "beats_flat": None,
    }
    if run.loss == "mse":
        record.update(error_figures(scored, folds))
    if keep_scatter:
        graph = sorted(valid["graph_id"].unique())[0]
        rows = valid.filter((pl.col("fold") == 0) & (pl.col("graph_id") == graph)).sort("config_id")
        record["scatter"] = {"graph_id": graph, "pred": rows["pred"].to_list(), "runtime": rows["runtime"].to_list()}
    return record


def error_figures(scored, folds: int) -> dict:
    """MAPE figures of an MSE-trained run (claims_analysis.MAPE_FIELDS, each the mean over folds), the
    per-fold spread scales, fitted on the fold's OOF rows and applied to its valid rows, and ``beats_flat``:
    [valid graphs whose calibrated MAPE is below the flat prediction's, valid graphs], summed over folds."""
    import polars as pl

    per_fold, scales, beats_flat = {key: [] for key in ca.MAPE_FIELDS}, [], [0, 0]
    for k in range(folds):
        fold = scored.filter(pl.col("fold") == k)
        oof, valid = (fold.filter(pl.col("split") == split) for split in ("oof", "valid"))
        scale = ca.spread_scale(oof["pred"].to_numpy(), oof["runtime"].to_numpy(), oof["graph_id"].to_numpy())
        pred, runtime, graphs = (valid[c].to_numpy() for c in ("pred", "runtime", "graph_id"))
        per_fold["mape"].append(ca.mean_graph_mape(pred, runtime, graphs, fit_level=False))
        per_fold["mape_scaled"].append(ca.mean_graph_mape(pred, runtime, graphs, fit_level=True))
        calibrated = ca.graph_mapes(scale * pred, runtime, graphs, fit_level=True)
        flat = ca.graph_mapes(np.zeros_like(pred), runtime, graphs, fit_level=True)
        per_fold["mape_calibrated"].append(float(calibrated.mean()))
        per_fold["mape_flat"].append(float(flat.mean()))
        beats_flat = [beats_flat[0] + int(np.sum(calibrated < flat)), beats_flat[1] + flat.size]
        scales.append(scale)
    return {
        **{key: float(np.mean(v)) for key, v in per_fold.items()},
        "spread_scales": scales,
        "beats_flat": beats_flat,
    }


def train_all(
    plan: Plan,
    params: dict,
    work: Path,
    on_run: Callable[[list[dict], list[tuple[str, str]]], None],
    done: list[dict] | None = None,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Run every planned training run, ``plan.jobs`` at a time; returns records and failures.

    ``done``: records of runs finished earlier (``--resume``), kept and not re-run; a run stopped
    mid-way resumes from its fold checkpoints (tpuperf.training.trainer).
    ``on_run(records, failures)`` is called after each run ends (e.g. to save what is done so far)."""
    records, failures = list(done or []), []
    finished = {Run(r["collection"], r["model"], r["loss"], r["seed"]) for r in records}
    runs = [run for run in plan.runs() if run not in finished]
    context = multiprocessing.get_context("spawn")  # no forked TensorFlow state; the parent never imports TF
    with ProcessPoolExecutor(
        max_workers=plan.jobs, mp_context=context, initializer=end_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = {
            pool.submit(train_run, run, params, work, run.seed == plan.seeds[0], plan.loss_args.get(run.loss, {})): run
            for run in runs
        }
        for count, future in enumerate(as_completed(futures), 1):
            run = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # one failed run must not discard the others; it is reported
                failures.append((str(run), f"{type(exc).__name__}: {exc}"))
                print(f"[{count}/{len(runs)}] FAILED {run}: {exc}", flush=True)
            else:
                records.append(record)
                epochs = [e["seconds"] for h in ca.steady_histories(record["histories"])[0] for e in h]
                print(
                    f"[{count}/{len(runs)}] {run}: valid {record['valid_score']:.4f}, {record['wall_seconds']:.0f} s; "
                    f"{len(epochs)} epochs over {len(record['histories'])} folds, median {np.median(epochs):.1f} s "
                    "per epoch (compile excluded)",
                    flush=True,
                )
            on_run(records, failures)
    return records, failures


# ---------------------------------------------------------------- throughput (one process per model)


def measure_speed(plan: Plan, params_path: Path, cache: Path, work: Path) -> dict[str, dict[str, dict]]:
    """benchmarks/throughput.py per model and collection, each in its own process (isolated peak RSS);
    every model of a collection sees the same batches."""
    results: dict[str, dict[str, dict]] = {}
    for collection in plan.model_collections:
        for model in plan.models:
            out = work / f"throughput_{_collection(collection).slug}_{model}.json"
            cmd = [
                sys.executable,
                str(HERE / "throughput.py"),
                "--params",
                str(params_path),
                "--cache",
                str(cache),
                "--collection",
                collection,
                "--models",
                model,
                "--steps",
                str(plan.throughput_steps),
                "--json",
                str(out),
            ]
            subprocess.run(cmd, check=True)
            results.setdefault(collection, {}).update(json.loads(out.read_text())[collection])
    return results


# ---------------------------------------------------------------- report


def machine() -> dict[str, str]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "tree": "uncommitted changes in the working tree"
        if git("status", "--porcelain", "--untracked-files=no")
        else "clean",
        "cpus": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "tfgnn": version("tensorflow-gnn"),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor() or "unknown",
        ),
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _cell(records: list[dict], field: str, digits: int = 3, expected: int | None = None) -> str:
    values = [r[field] for r in records if r[field] is not None]
    return ca.fmt(*ca.mean_std(values), digits=digits, n=len(values), expected=expected)


def _mean_cell(records: list[dict], collections, field: str, expected: int, digits: int = 3) -> str:
    means = ca.per_seed_means(records, collections, field)
    return ca.fmt(*ca.mean_std(list(means.values())), digits=digits, n=len(means), expected=expected)


def section_models(plan: Plan, records: list[dict]) -> list[str]:
    cols, n = plan.model_collections, len(plan.seeds)
    lines = [
        "## 1. Models (ListMLE loss)",
        "",
        f"Valid score, mean ± std over {n} seed(s); per seed, the mean over the {plan.train['folds']} fold models "
        "of each fold's valid score (tile score for tile:xla, Kendall tau for layout). *Fold ensemble*: the "
        "rank-normalised ensemble of a run's folds (tpuperf.submission.ensemble), mean over seeds and collections. "
        "*vs baseline*: relative improvement of the mean score, `ours / baseline - 1`.",
        "",
    ]
    rows = []
    for model in plan.models:
        mine = ca.select(records, model=model, loss="listmle")
        rel = ca.compare(
            records,
            cols,
            "valid_score",
            {"model": model, "loss": "listmle"},
            {"model": ca.BASELINE, "loss": "listmle"},
            lower_is_better=False,
        )
        rows.append(
            [
                model,
                *(_cell(ca.select(mine, collection=c), "valid_score", expected=n) for c in cols),
                _mean_cell(mine, cols, "valid_score", n),
                _mean_cell(mine, cols, "valid_ensemble", n),
                _mean_cell(mine, cols, "oof_score", n),
                "—" if model == ca.BASELINE else ca.pct(rel),
            ]
        )
    return lines + _table(["model", *cols, "mean", "fold ensemble", "OOF (train folds)", "vs baseline"], rows) + [""]


def section_losses(plan: Plan, records: list[dict]) -> list[str]:
    lines = ["## 2. Losses (chebsage)", ""]
    if not plan.losses:
        return lines + ["Not measured in this plan.", ""]
    cols, n = plan.loss_collections, len(plan.seeds)
    lines += [
        "Valid score of chebsage trained with each loss, mean ± std over seeds. *ListMLE vs this*: "
        "`listmle / this - 1` of the mean score.",
        "",
    ]
    rows = []
    for loss in plan.losses:
        mine = ca.select(records, model=ca.OURS, loss=loss)
        rel = ca.compare(
            records,
            cols,
            "valid_score",
            {"model": ca.OURS, "loss": "listmle"},
            {"model": ca.OURS, "loss": loss},
            lower_is_better=False,
        )
        rows.append(
            [
                loss,
                *(_cell(ca.select(mine, collection=c), "valid_score", expected=n) for c in cols),
                _mean_cell(mine, cols, "valid_score", n),
                "—" if loss == "listmle" else ca.pct(rel),
            ]
        )
    return lines + _table(["loss", *cols, "mean", "ListMLE vs this"], rows) + [""]


def section_error(plan: Plan, records: list[dict]) -> list[str]:
    lines = ["## 3. Runtime-prediction error (MSE-trained models)", ""]
    if not plan.error_models:
        return lines + ["Not measured in this plan.", ""]
    cols, n = plan.error_collections, len(plan.seeds)
    lines += [
        "Only a model trained with the `mse` loss predicts a runtime (it regresses log runtime); ListMLE and "
        "pairwise scores have no runtime scale, so no runtime error is defined for them. MAPE on valid: mean "
        "over graphs of mean over configs of `|exp(pred) - y| / y` (y = runtime / normaliser for tile, runtime "
        "in ns for layout), mean over folds, then mean ± std over seeds. *level fitted*: the same after scaling "
        "each graph's predictions by the median of `y / exp(pred)` over its configs, i.e. the error left once the "
        "per-graph runtime level is right (how well the model tells configs apart in runtime terms). "
        "*calibrated*: level fitted after multiplying the predicted log runtimes by the fold's spread scale `a`, "
        "the least-squares slope of per-graph centred log runtime on per-graph centred prediction over the fold's "
        "OOF graphs (held-out train graphs; valid is never used to fit it; claims_analysis.spread_scale): `a < 1` "
        "shrinks an overshooting spread, `a = 0` is a flat prediction. *flat*: every config of a graph predicted "
        "at the graph's fitted level, the error of knowing nothing about the configs (the same for every model). "
        "*graphs calibrated < flat*: valid graphs (counted per fold and seed) whose calibrated MAPE is below the "
        "flat one's; the mean MAPE over few graphs is dominated by the widest-spread ones, and a single scale `a` "
        "cannot correct a spread that is too wide on some graphs and too narrow on others. "
        "*vs baseline*: relative reduction `1 - ours / baseline` of the mean "
        + ("calibrated MAPE." if plan.centred_mse else "MAPE."),
        "",
    ]
    if plan.centred_mse:
        lines += [
            "Here the `mse` runs regress log runtime centred per graph (`loss_args: {center: true}`, i.e. "
            "runtime normalised by the graph's geometric mean): their predictions carry no runtime level, so "
            "the plain MAPE is not defined (—).",
            "",
        ]
    field_compared = "mape_calibrated" if plan.centred_mse else "mape"
    rows = []
    for model in plan.error_models:
        mine = ca.select(records, model=model, loss="mse")
        rel = ca.compare(
            records,
            cols,
            field_compared,
            {"model": model, "loss": "mse"},
            {"model": ca.BASELINE, "loss": "mse"},
            lower_is_better=True,
        )
        scales = [a for r in mine for a in (r["spread_scales"] or [])]
        counts = [r["beats_flat"] for r in mine if r.get("beats_flat")]  # absent from records before it existed
        rows.append(
            [
                model,
                *("—" if plan.centred_mse else _cell(ca.select(mine, collection=c), "mape", expected=n) for c in cols),
                *(
                    _cell(ca.select(mine, collection=c), key, expected=n)
                    for c in cols
                    for key in ("mape_scaled", "mape_calibrated", "mape_flat")
                ),
                ca.fmt(*ca.mean_std(scales)),
                f"{sum(k for k, _ in counts)}/{sum(t for _, t in counts)}" if counts else "n/a",
                *(_cell(ca.select(mine, collection=c), "valid_score", expected=n) for c in cols),
                "—" if model == ca.BASELINE else ca.pct(rel),
            ]
        )
    header = [
        "model",
        *(f"MAPE {c}" for c in cols),
        *(f"{what}, {c}" for c in cols for what in ("level fitted", "calibrated", "flat")),
        "spread scale a (folds x seeds)",
        "graphs calibrated < flat (graphs x folds x seeds)",
        *(f"score {c}" for c in cols),
        "vs baseline",
    ]
    return lines + _table(header, rows) + [""]


def section_convergence(plan: Plan, records: list[dict]) -> list[str]:
    cols = plan.model_collections
    lines = [
        "## 4. Convergence (ListMLE loss)",
        "",
        "Per cell (collection x seed x fold), the target is the baseline's best per-epoch OOF score (the trainer "
        f"scores {plan.train.get('eval_configs')} configs of each held-out train graph after every epoch; valid is "
        "scored only at the end, so convergence is judged out-of-fold). Epochs and training seconds (the trainer's "
        "per-epoch wall time, excluding the epoch-end evaluation) until the first epoch at or above the target, "
        "averaged over the cells where it was reached. The one epoch per run that includes XLA compilation (the "
        "first of fold 0; later folds reuse the compiled step) is counted at the run's median epoch time; the "
        "removed compile time is shown apart. The baseline row is the baseline reaching its own best.",
        "",
    ]
    base = ca.convergence(records, ca.BASELINE, cols, "listmle")
    rows = []
    for model in plan.models:
        cells = ca.convergence(records, model, cols, "listmle")
        reached = [c for c in cells if c.epochs is not None]
        secs, epochs, _, _ = ca.convergence_speedup(cells, base)
        compile_s = [ca.steady_histories(r["histories"])[1] for r in ca.select(records, model=model, loss="listmle")]
        rows.append(
            [
                model,
                f"{len(reached)}/{len(cells)}",
                ca.fmt(*ca.mean_std([c.epochs for c in reached]), digits=1) if reached else "not reached",
                ca.fmt(*ca.mean_std([c.seconds for c in reached]), digits=1) if reached else "not reached",
                "—" if model == ca.BASELINE else ca.pct(epochs),
                "—" if model == ca.BASELINE else ca.pct(secs),
                ca.fmt(*ca.mean_std(compile_s), digits=1),
            ]
        )
    lines += _table(
        [
            "model",
            "cells reached",
            "epochs to target",
            "seconds to target",
            "fewer epochs vs baseline",
            "less time vs baseline",
            "compile s per run (excluded)",
        ],
        rows,
    )
    lines += [
        "",
        "*fewer epochs / less time vs baseline*: `1 - sum(ours) / sum(baseline)` over the cells the model "
        "reached (negative: slower than the baseline).",
        "",
    ]
    return lines + plateau_lines(plan, records)


def plateau_lines(plan: Plan, records: list[dict]) -> list[str]:
    """Whether every run (each fold) of the plan reached its plateau: early stopped, or how flat its curve ended."""
    epochs, window = plan.train["epochs"], plan.train["patience"]
    lines = [
        "### Plateau of every run",
        "",
        f"Each fold trains up to {epochs} epochs and stops early after {window} epochs without a new best OOF "
        f"score. *early-stopped*: folds that stopped so; *gain in last {window} epochs*: best OOF score over all "
        f"epochs minus the best before the last {window} (0 for an early-stopped fold; a fold that ran all "
        f"{epochs} epochs with a small gain was still flat; n/a: a fold not longer than {window} epochs), mean and "
        "max over folds.",
        "",
    ]
    rows = []
    for loss in dict.fromkeys(r["loss"] for r in records):
        for model in dict.fromkeys(r["model"] for r in ca.select(records, loss=loss)):
            for collection in plan.collections:
                ends = ca.plateaus(ca.select(records, collection=collection, model=model, loss=loss), epochs, window)
                if not ends:
                    continue
                gains = [p.last_gain for p in ends]
                rows.append(
                    [
                        collection,
                        model,
                        loss,
                        f"{sum(p.stopped_early for p in ends)}/{len(ends)}",
                        ca.fmt(*ca.mean_std([p.epochs_run for p in ends]), digits=1),
                        ca.fmt(float(np.mean(gains)), digits=4),
                        ca.fmt(float(np.max(gains)), digits=4),
                    ]
                )
    header = ["collection", "model", "loss", "early-stopped", "epochs run", f"gain in last {window}, mean", "max"]
    return lines + _table(header, rows) + [""]


def section_speed(plan: Plan, records: list[dict], speed: dict) -> list[str]:
    lines = [
        "## 5. Speed and memory",
        "",
        f"benchmarks/throughput.py on the same {plan.throughput_steps} padded batches for every model (after one "
        "warm-up step that compiles), one process per model and collection: configs/s counts real configs. *ratio*: ours / "
        "baseline, measured in this run. *RSS before*: the process (TensorFlow runtime + batches) before the model "
        "is built; *peak RSS*: the process peak right after the timed training steps.",
        "",
    ]
    if not speed:
        return lines + ["Not measured: the run was stopped before this phase.", ""]
    rows = []
    for collection, models in speed.items():
        base = models.get(ca.BASELINE)
        for model, r in models.items():

            def ratio(key: str, model=model, r=r, base=base) -> str:
                return "—" if model == ca.BASELINE or not base else f"x{r[key] / base[key]:.2f}"

            rows.append(
                [
                    collection,
                    model,
                    f"{r['params']:,}",
                    f"{r['train_configs_per_s']:.0f}",
                    ratio("train_configs_per_s"),
                    f"{r['predict_configs_per_s']:.0f}",
                    ratio("predict_configs_per_s"),
                    f"{r['rss_before_mb']:.0f} MB",
                    f"{r['peak_rss_mb']:.0f} MB",
                ]
            )
    lines += _table(
        [
            "collection",
            "model",
            "weights",
            "train configs/s",
            "train ratio",
            "inference configs/s",
            "inference ratio",
            "RSS before",
            "peak RSS (training)",
        ],
        rows,
    )
    lines += [
        "",
        f"End to end, one k-fold training run (training, per-epoch evaluation on the held-out fold, whose best "
        f"epoch's scores are the OOF predictions, and scoring every valid config; {plan.jobs} runs at a time share "
        "the machine), wall seconds, mean ± std over runs:",
        "",
    ]
    rows = [
        [
            m,
            *(
                _cell(ca.select(records, model=m, loss="listmle", collection=c), "wall_seconds", digits=0)
                for c in plan.model_collections
            ),
        ]
        for m in plan.models
    ]
    return lines + _table(["model", *plan.model_collections], rows) + [""]


def claim_lines(plan: Plan, records: list[dict]) -> list[str]:
    """One line per claim of the project description: reached or not, the figure (mean ± std of the
    per-seed relative changes), and how it was computed. A claim is reached when the mean is."""

    def verdict(changes: list[float], goal: float) -> str:
        """Reached or not (by how many percentage points the mean misses ``goal``), provisional below MIN_SEEDS."""
        value = float(np.mean(changes)) if changes else math.nan
        if math.isnan(value):
            return "n/a"
        notes = [] if value >= goal else [f"{100 * (goal - value):.1f} points short of {ca.pct(goal)}"]
        if len(changes) < MIN_SEEDS:
            notes.append(f"provisional: {len(changes)} seed(s) < {MIN_SEEDS}")
        said = "**reached**" if value >= goal else "**not reached**"
        return f"{said} ({'; '.join(notes)})" if notes else said

    cols = plan.model_collections
    acc = ca.seed_changes(
        records,
        cols,
        "valid_score",
        {"model": ca.OURS, "loss": "listmle"},
        {"model": ca.BASELINE, "loss": "listmle"},
        lower_is_better=False,
    )
    rows = [
        [
            "15% better runtime-prediction accuracy than baseline",
            verdict(acc, 0.15),
            ca.pct_spread(acc),
            f"accuracy = mean valid score over {', '.join(cols)} (Kendall tau / tile score); per seed "
            "chebsage / baseline - 1, both ListMLE; mean ± std over seeds",
        ]
    ]
    if plan.error_models:

        def mape_changes(field_name: str) -> list[float]:
            return ca.seed_changes(
                records,
                plan.error_collections,
                field_name,
                {"model": ca.OURS, "loss": "mse"},
                {"model": ca.BASELINE, "loss": "mse"},
                lower_is_better=True,
            )

        def level(model: str, field_name: str) -> str:
            mine = ca.select(records, model=model, loss="mse")
            return _mean_cell(mine, plan.error_collections, field_name, len(plan.seeds))

        calibrated = mape_changes("mape_calibrated")
        side_by_side = (
            f"calibrated MAPE chebsage {level(ca.OURS, 'mape_calibrated')}, baseline "
            f"{level(ca.BASELINE, 'mape_calibrated')}; flat prediction {level(ca.BASELINE, 'mape_flat')}"
        )
        if plan.centred_mse:  # no runtime level: only level-fitted MAPEs are defined
            err, measured = calibrated, f"{ca.pct_spread(calibrated)} (calibrated level-fitted MAPE); {side_by_side}"
            what = (
                "valid MAPE of exp(predicted log runtime) once each graph's runtime level is fitted and the spread "
                "calibrated on the fold's OOF graphs, both trained with MSE on per-graph centred log runtime"
            )
        else:
            err = mape_changes("mape")
            measured = (
                f"{ca.pct_spread(err)} (calibrated level-fitted MAPE: {ca.pct_spread(calibrated)}); {side_by_side}"
            )
            what = "valid MAPE of exp(predicted log runtime), both MSE-trained"
        rows.append(
            [
                "18% lower estimation error than baseline",
                verdict(err, 0.18),
                measured,
                f"per seed 1 - MAPE(chebsage) / MAPE(baseline), {what}, on {', '.join(plan.error_collections)}; "
                "mean ± std over seeds; see section 3",
            ]
        )
    else:
        rows.append(
            ["18% lower estimation error than baseline", "not measured", "—", "no MSE-trained runs in this plan"]
        )
    if {"listmle", "mse"} <= set(plan.losses):
        parts = [
            (
                other,
                ca.seed_changes(
                    records,
                    plan.loss_collections,
                    "valid_score",
                    {"model": ca.OURS, "loss": "listmle"},
                    {"model": ca.OURS, "loss": other},
                    lower_is_better=False,
                ),
            )
            for other in plan.losses
            if other != "listmle"
        ]
        worst = min(parts, key=lambda part: np.mean(part[1]) if part[1] else -math.inf)[1]
        rows.append(
            [
                "ListMLE improves ranking by 10%",
                verdict(worst, 0.10),
                "; ".join(f"vs {o} {ca.pct_spread(r)}" for o, r in parts),
                f"chebsage valid score (Kendall tau) on {', '.join(plan.loss_collections)}; per seed "
                "listmle / other - 1 for each other loss, mean ± std over seeds; reached only if >= 10% against "
                "every one",
            ]
        )
    else:
        rows.append(["ListMLE improves ranking by 10%", "not measured", "—", "no loss ablation in this plan"])
    ours = ca.convergence(records, ca.OURS, cols, "listmle")
    base = ca.convergence(records, ca.BASELINE, cols, "listmle")
    per_seed = [
        ca.convergence_speedup([c for c in ours if c.seed == s], [c for c in base if c.seed == s])
        for s in sorted({c.seed for c in ours})
    ]
    secs = [p[0] for p in per_seed if not math.isnan(p[0])]
    epochs = [p[1] for p in per_seed if not math.isnan(p[1])]
    hit, total = sum(p[2] for p in per_seed), sum(p[3] for p in per_seed)
    rows.append(
        [
            "12% faster convergence",
            (verdict(secs, 0.12) if hit == total else f"**not reached** (target missed in {total - hit}/{total} cells)")
            if total
            else "n/a",
            f"{ca.pct_spread(secs)} training time, {ca.pct_spread(epochs)} epochs; target reached in {hit}/{total} "
            "cells",
            "per seed 1 - sum of chebsage's training seconds (compile excluded) to reach the baseline's best OOF "
            "score / the baseline's own seconds to its best, over that seed's cells (collection x fold); mean ± std "
            "over seeds; reached only if every cell reached it",
        ]
    )
    return ["## Claims of the project description", ""] + _table(["claim", "verdict", "measured", "how"], rows) + [""]


def render(plan: Plan, args: argparse.Namespace, info: dict, records: list[dict], failures: list, speed: dict) -> str:
    m = info["machine"]
    counts = "; ".join(f"{c}: {v['train']} train / {v['valid']} valid graphs" for c, v in info["counts"].items())
    overrides = ", ".join(f"{k}={v}" for k, v in plan.train.items())
    lines = [
        "# Claims benchmark: ChebSAGE (and SAGE, Cheb) vs the official-style baseline",
        "",
        "_Generated by `benchmarks/claims.py`; do not edit by hand. Definitions: benchmarks/claims_analysis.py._",
        "",
        f"- Command: `{info['command']}`",
        f"- Commit: `{m['commit']}` ({m['tree']}); date {info['date']}",
        f"- Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram']} RAM; Python {m['python']}, TensorFlow "
        f"{m['tensorflow']}, tensorflow-gnn {m['tfgnn']}; 1-min load average {info['load'][0]:.1f} at start, "
        f"{info['load'][1]:.1f} at end (other jobs may share the machine)",
        f"- Wall time: {info['wall'] / 60:.1f} min (data + preprocess {info['phases']['data']:.0f} s, training "
        f"{info['phases']['train']:.0f} s, throughput {info['phases']['speed']:.0f} s)",
        *(
            f"- Resumes a run stopped after `{r['command']}` (commit `{r['commit']}`, {r['date']}); wall time and "
            "phases above sum every session"
            for r in info.get("resumes", [])
        ),
        f"- Data: {info['data']}; train + valid splits only; {counts}",
        f"- Plan `{plan.name}`: seeds {list(plan.seeds)}; train.* overrides {overrides}"
        + (f"; model overrides {plan.model_overrides}" if plan.model_overrides else "")
        + f"; everything else from `{args.params}`; {len(records)} training runs"
        + ("" if len(records) == len(plan.runs()) else f" of {len(plan.runs())} planned (the run was stopped)")
        + f", {plan.jobs} at a time",
        "",
    ]
    lines += claim_lines(plan, records)
    lines += section_models(plan, records) + section_losses(plan, records) + section_error(plan, records)
    lines += section_convergence(plan, records) + section_speed(plan, records, speed)
    lines += [
        "## Plots",
        "",
        "![learning curves](plots/learning_curves.png)",
        "",
        "![predicted vs true runtime](plots/pred_vs_true.png)",
        "",
    ]
    if failures:
        lines += ["## Failed runs", "", *(f"- {run}: {error}" for run, error in failures), ""]
    return "\n".join(lines)


def scatter_panels(plan: Plan, records: list[dict]) -> list[dict]:
    """One panel per model with a kept scatter: the ListMLE runs on the first layout collection of
    the model plan (else its first), then the MSE-trained runs (predicted log runtimes)."""
    layout = [c for c in plan.model_collections if c.startswith("layout")]
    runs = [("listmle", (layout or list(plan.model_collections))[0], plan.models)]
    if plan.error_models:
        runs.append(("mse", plan.error_collections[0], plan.error_models))
    panels = []
    for loss, collection, models in runs:
        for model in models:
            found = [r for r in ca.select(records, collection=collection, model=model, loss=loss) if "scatter" in r]
            if found:
                s = found[0]["scatter"]
                panels.append(
                    {
                        "title": f"{model} ({loss}), {collection}\nvalid graph {s['graph_id'][:10]}, fold 0",
                        "pred": s["pred"],
                        "runtime": s["runtime"],
                        "is_runtime": loss == "mse",
                    }
                )
    return panels


def print_plan(plan: Plan, runs: list[Run]) -> None:
    print(
        f"claims benchmark, plan {plan.name!r}: {len(runs)} training runs, {plan.jobs} at a time, "
        f"seeds {list(plan.seeds)}, train overrides {plan.train}"
    )
    print(
        f"  1. models {list(plan.models)} x {list(plan.model_collections)} (listmle); 4. convergence from their histories"
    )
    print(f"  2. losses {list(plan.losses)} x {list(plan.loss_collections)} (chebsage)")
    print(f"  3. MSE-trained {list(plan.error_models)} x {list(plan.error_collections)} (MAPE)")
    print(
        f"  5. throughput: {plan.throughput_steps} steps per model on {list(plan.model_collections)}, one process each"
    )
    for run in runs:
        print(f"     {run}")


def write_outputs(raw: dict, out: Path) -> None:
    """RESULTS.md and the plots from one run's raw results (a fresh run or a saved results.json)."""
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["plan"].items()})
    records, failures = raw["records"], [tuple(f) for f in raw["failures"]]
    ca.plot_learning_curves(
        records,
        plan.model_collections,
        plan.models,
        "listmle",
        out / "plots" / "learning_curves.png",
        plan.train["epochs"],
        plan.train["patience"],
    )
    ca.plot_pred_vs_true(scatter_panels(plan, records), out / "plots" / "pred_vs_true.png")
    args = argparse.Namespace(params=raw["params"])
    (out / "RESULTS.md").write_text(render(plan, args, raw["info"], records, failures, raw["speed"]))


def render_saved(results_json: Path, out: Path) -> None:
    """Re-render an earlier run (e.g. after a wording or analysis change) without training again."""
    write_outputs(json.loads(results_json.read_text()), out)
    print(f"re-rendered {out / 'RESULTS.md'} and {out / 'plots'} from {results_json}")


def results(
    args: argparse.Namespace,
    plan: Plan,
    host: dict,
    load_start: float,
    wall: float,
    phases: dict,
    data_description: str,
    counts: dict,
    digests: dict[str, str],
    earlier: dict | None = None,
) -> dict:
    """What results.json holds besides ``records``, ``failures`` and ``speed``: command, machine, plan, timings
    (``earlier``: the results.partial.json this session resumes; its sessions are listed under ``resumes``)."""
    resumes = []
    if earlier:
        before = earlier["info"]
        resumes = [
            *before.get("resumes", []),
            {"command": before["command"], "date": before["date"], "commit": before["machine"]["commit"]},
        ]
    info = {
        "resumes": resumes,
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "source_sha256": source_fingerprint(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": host,
        "load": (load_start, os.getloadavg()[0]),
        "wall": wall,
        "phases": phases,
        "data": data_description,
        "counts": counts,
        "cache_digests": digests,
    }
    return {"info": info, "params": str(args.params), "plan": plan.__dict__}


def resumed(work: Path | None) -> dict:
    """The results.partial.json of a stopped run in ``work`` (``--resume``); SystemExit if there is none."""
    if work is None:
        raise SystemExit("--resume needs --work: the directory of the stopped run")
    partial = work / "results.partial.json"
    if not partial.is_file():
        raise SystemExit(f"--resume: {partial} not found: no finished run to continue (start without --resume)")
    return json.loads(partial.read_text())


def settings_only(params: dict) -> dict:
    """``params`` without ``preprocess.out``: the cache path is the --work directory's, not a setting."""
    return {**params, "preprocess": {k: v for k, v in params.get("preprocess", {}).items() if k != "out"}}


def check_resumable(earlier: dict, plan: Plan, params: dict, params_path: Path) -> None:
    """SystemExit naming what differs when this session's plan, params or tpuperf sources are not those of
    the stopped run: records of different settings or code must not be mixed in one report."""
    if earlier["info"].get("source_sha256") != source_fingerprint():
        raise SystemExit(
            "--resume: the tpuperf sources differ from the stopped run's (tpuperf.provenance.source_fingerprint): "
            "start a new run in a new --work directory"
        )
    now = json.loads(json.dumps(plan.__dict__))  # tuples as lists, as saved
    changed = sorted(k for k in now.keys() | earlier["plan"].keys() if now.get(k) != earlier["plan"].get(k))
    if changed:
        raise SystemExit(f"--resume: the plan differs from the stopped run's in {', '.join(changed)}")
    before, now = (settings_only(p) for p in (yaml.safe_load(params_path.read_text()), params))
    changed = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
    if changed:
        raise SystemExit(
            f"--resume: params differ from the stopped run's ({params_path}) in section(s) {', '.join(changed)}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: tiny preset, 1 seed, 1 epoch, tiny models")
    size.add_argument("--full", action="store_true", help="the whole table: every model on every collection (hours)")
    parser.add_argument("--data", type=Path, default=None, help="local real-layout dataset (default: synthetic)")
    parser.add_argument("--out", type=Path, default=HERE, help="RESULTS.md and plots/ go here (default: benchmarks/)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (train.seed = 0..n-1)")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs per fold (early stopping as planned)")
    parser.add_argument("--jobs", type=int, default=None, help="training runs at a time")
    parser.add_argument(
        "--collections",
        default=None,
        help="comma-separated: keep only these of the plan's collections (a section left with none is not measured)",
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="keep data/cache/runs here (default: a temp dir, removed)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the stopped run in --work: finished runs are kept, the rest resume from their checkpoints",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="no training: write RESULTS.md and plots to --out from a results.json of an earlier run",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        render_saved(args.render, args.out)
        return

    plan = PLANS["quick" if args.quick else "full" if args.full else "default"]
    changes: dict = {}
    if args.seeds is not None:
        changes["seeds"] = tuple(range(args.seeds))
    if args.epochs is not None:
        changes["train"] = {**plan.train, "epochs": args.epochs, "patience": min(plan.train["patience"], args.epochs)}
    if args.jobs is not None:
        changes["jobs"] = args.jobs
    if args.collections is not None:
        changes.update(plan.restricted(args.collections.split(",")))
    plan = Plan(**{**plan.__dict__, **changes})
    print_plan(plan, plan.runs())

    from tpuperf.atomic import write_json_atomic
    from tpuperf.config import load_params

    started, load_start, host = time.perf_counter(), os.getloadavg()[0], machine()  # the commit that runs
    earlier = resumed(args.work) if args.resume else None
    if earlier is None and args.work is not None and args.work.exists() and any(args.work.iterdir()):
        raise SystemExit(
            f"--work {args.work} is not empty: give a new or empty directory, or --resume to continue the run there"
        )
    work = args.work or Path(tempfile.mkdtemp(prefix="tpuperf-claims-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        params = run_params(load_params(args.params), plan, work)
        params_path = work / "params.yaml"
        if earlier is None:
            params_path.write_text(yaml.safe_dump(params, sort_keys=False))
            data_description, counts = prepare(plan, params, args.data, work)
        else:
            check_resumable(earlier, plan, params, params_path)
            params_path.write_text(yaml.safe_dump(params, sort_keys=False))  # the cache path of this --work
            if cache_digests(params, plan) is None:
                prepare_again(plan, params, args.data, work, earlier)
            data_description, counts = earlier["info"]["data"], earlier["info"]["counts"]
            load_start = earlier["info"]["load"][0]
        digests = cache_digests(params, plan)
        t_data = time.perf_counter()
        partial = work / "results.partial.json"

        def timing(t_train: float, t_speed: float) -> tuple[float, dict[str, float]]:
            """Wall time (until ``t_speed``) and phases of this session plus those of the sessions it resumes."""
            phases = {"data": t_data - started, "train": t_train - t_data, "speed": t_speed - t_train}
            before = earlier["info"]["phases"] if earlier else {}
            return (
                t_speed - started + (earlier["info"]["wall"] if earlier else 0.0),
                {k: v + before.get(k, 0.0) for k, v in phases.items()},
            )

        def save_partial(records: list[dict], failures: list[tuple[str, str]]) -> None:
            now = time.perf_counter()
            wall, phases = timing(now, now)
            raw = results(args, plan, host, load_start, wall, phases, data_description, counts, digests, earlier)
            write_json_atomic(partial, {**raw, "records": records, "failures": failures, "speed": {}}, indent=1)

        print(f"finished runs are saved to {partial} as they end (render it with --render if this run is stopped)")
        done = earlier["records"] if earlier else None
        records, failures = train_all(plan, params, work, save_partial, done)
        t_train = time.perf_counter()
        speed = measure_speed(plan, params_path, work / "cache", work)
        t_speed = time.perf_counter()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    wall, phases = timing(t_train, t_speed)
    raw = results(args, plan, host, load_start, wall, phases, data_description, counts, digests, earlier)
    raw.update(records=records, failures=failures, speed=speed)
    info = raw["info"]
    write_outputs(raw, args.out)
    (args.out / "results.json").write_text(json.dumps(raw, indent=1))  # re-render (--render) without re-running
    print(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'plots'} in {info['wall'] / 60:.1f} min")
    if failures:
        raise SystemExit(
            f"{len(failures)} training run(s) failed; see the Failed runs section of {args.out / 'RESULTS.md'}"
        )


if __name__ == "__main__":
    main()
