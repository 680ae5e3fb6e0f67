"""Figures, verdicts and plots of benchmarks/claims.py, from plain run records (no TensorFlow).

A run record is a dict written by one training run (one collection x model x loss x seed):
``collection``, ``model``, ``loss``, ``seed``, ``valid_score`` (mean over folds of the valid
metric), ``valid_ensemble`` (rank-normalised fold ensemble on valid), ``oof_score``,
``MAPE_FIELDS``, ``spread_scales`` and ``beats_flat`` (MSE-trained runs only, else None), ``wall_seconds`` and
``histories`` (per fold, the trainer's per-epoch ``{epoch, loss, oof_score, seconds}``).

Definitions used in RESULTS.md (and tested in tests/test_benchmarks.py):

- score: the competition metric on the valid split, Kendall tau for layout:*, tile score
  (2 - best of the predicted top 5 / best) for tile:xla; "accuracy" of a model is its mean score
  over the benchmarked collections (the competition score restricted to them).
- relative improvement: ``ours / baseline - 1`` of a higher-is-better figure; relative
  reduction: ``1 - ours / baseline`` of a lower-is-better one.
- MAPE: mean over valid graphs of mean over configs of ``|exp(pred) - y| / y``; an MSE-trained
  model predicts ``log y`` (y = runtime / normaliser for tile, runtime in ns for layout). A
  percentage error is unchanged by a per-graph normaliser of both sides. Level fitted: each
  graph's predictions shifted to its runtime level first; calibrated: also their spread scaled by
  the slope fitted on the fold's OOF graphs (:func:`spread_scale`); flat: a constant per graph.
- a claim's figure: per seed, the relative change of that seed's figures; then mean ± std
  over seeds (:func:`seed_changes`, :func:`pct_spread`).
- plateau: a fold stopped early (``patience`` epochs without a new best OOF score), or else the
  best OOF score it gained in its last ``patience`` epochs (:func:`plateau`).
- convergence cell: one (collection, seed, fold); its target is the baseline's best per-epoch
  OOF score there; a model reaches it at the first epoch whose OOF score is >= target. Its
  seconds are the trainer's per-epoch training seconds summed up to that epoch, with the one
  epoch that includes XLA compilation (a run's first epoch of its first fold: folds share the
  compiled step) counted at the run's median epoch time (see :func:`steady_histories`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BASELINE = "baseline"
OURS = "chebsage"


def select(records: Iterable[dict], **where) -> list[dict]:
    """Records whose fields equal every ``where`` value."""
    return [r for r in records if all(r[k] == v for k, v in where.items())]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for fewer than two values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else math.nan


def fmt(mean: float, std: float = math.nan, digits: int = 3, n: int | None = None, expected: int | None = None) -> str:
    """``0.123 ± 0.004``; says ``n=k`` when fewer values than expected went into it."""
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")
    return text + (f" (n={n})" if n is not None and expected is not None and n != expected else "")


def pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.1f}%"


def relative_improvement(ours: float, base: float) -> float:
    """``ours / base - 1`` for higher-is-better figures; NaN when the baseline is not positive."""
    return ours / base - 1.0 if base > 0 else math.nan


def relative_reduction(ours: float, base: float) -> float:
    """``1 - ours / base`` for lower-is-better figures (errors, seconds); NaN when base is not positive."""
    return 1.0 - ours / base if base > 0 else math.nan


# a record's MAPE figures (None unless MSE-trained): plain, level fitted, level fitted after the OOF
# spread calibration (:func:`spread_scale`), and a flat prediction's (every config at the graph's level)
MAPE_FIELDS = ("mape", "mape_scaled", "mape_calibrated", "mape_flat")


def graph_mape(log_pred: np.ndarray, runtime: np.ndarray, fit_level: bool = False) -> float:
    """Mean absolute percentage error of ``exp(log_pred)`` against ``runtime`` over one graph's configs.

    ``fit_level`` first scales the estimates by the median of ``runtime / estimate``: what is left
    is the error in the differences between configs, not in the graph's overall runtime level.
    """
    runtime = np.asarray(runtime, dtype=np.float64)
    if runtime.size == 0 or not (runtime > 0).all():
        raise ValueError("MAPE needs positive runtimes (unlabelled test rows cannot be scored)")
    log_pred = np.asarray(log_pred, dtype=np.float64)
    if fit_level:
        log_pred = log_pred + np.median(np.log(runtime) - log_pred)
    with np.errstate(over="ignore"):
        estimate = np.exp(log_pred)
    return float(np.mean(np.abs(estimate - runtime) / runtime))


def graph_mapes(log_pred: np.ndarray, runtime: np.ndarray, graph_ids: np.ndarray, fit_level: bool) -> np.ndarray:
    """:func:`graph_mape` of each graph (``graph_ids``, one per config), float64 [graphs] in sorted id order;
    ValueError as there."""
    log_pred, runtime, graph_ids = np.asarray(log_pred), np.asarray(runtime), np.asarray(graph_ids)
    return np.array(
        [graph_mape(log_pred[graph_ids == g], runtime[graph_ids == g], fit_level) for g in np.unique(graph_ids)]
    )


def mean_graph_mape(log_pred: np.ndarray, runtime: np.ndarray, graph_ids: np.ndarray, fit_level: bool) -> float:
    """Mean over graphs of :func:`graph_mapes`."""
    return float(np.mean(graph_mapes(log_pred, runtime, graph_ids, fit_level)))


def spread_scale(log_pred: np.ndarray, runtime: np.ndarray, graph_ids: np.ndarray) -> float:
    """Calibration of a per-graph-centred log-runtime model's spread: the least-squares slope ``a``.

    Both sides are centred per graph (``graph_ids``, one per config), then ``a`` minimises
    ``sum (a * pred_c - log(runtime)_c)^2`` pooled over every config of every graph:
    ``a = <pred_c, log_true_c> / <pred_c, pred_c>``. A model whose spread overshoots gets
    ``a < 1``; one unrelated to the runtimes ``a ~ 0`` (a flat prediction). Fitted on held-out
    train graphs (OOF), applied to valid. 0 when every prediction is constant within its graph.
    Raises ValueError on non-positive runtimes or mismatched lengths.
    """
    log_pred, runtime = np.asarray(log_pred, dtype=np.float64), np.asarray(runtime, dtype=np.float64)
    if not (log_pred.shape == runtime.shape == np.shape(graph_ids)) or runtime.size == 0:
        raise ValueError(f"pred, runtime, graph_ids need one equal length, got {log_pred.shape}, {runtime.shape}")
    if not (runtime > 0).all():
        raise ValueError("the spread scale needs positive runtimes (unlabelled test rows cannot be fitted)")
    _, group = np.unique(graph_ids, return_inverse=True)
    sizes = np.bincount(group)

    def centred(x: np.ndarray) -> np.ndarray:
        return x - (np.bincount(group, weights=x) / sizes)[group]

    pred_c, true_c = centred(log_pred), centred(np.log(runtime))
    denominator = float(pred_c @ pred_c)
    return float(pred_c @ true_c) / denominator if denominator > 0 else 0.0


def per_seed_means(records: list[dict], collections: Sequence[str], field: str) -> dict[int, float]:
    """Per seed, the mean of ``field`` over ``collections`` (only seeds that have all of them)."""
    out = {}
    for seed in sorted({r["seed"] for r in records}):
        values = [select(records, seed=seed, collection=c) for c in collections]
        if all(len(v) == 1 and v[0][field] is not None for v in values):
            out[seed] = float(np.mean([v[0][field] for v in values]))
    return out


def seed_changes(
    records: list[dict], collections: Sequence[str], field: str, ours: dict, base: dict, lower_is_better: bool
) -> list[float]:
    """Per shared seed (ascending), the relative change of ours vs base on the mean of ``field`` over collections."""
    mine = per_seed_means(select(records, **ours), collections, field)
    theirs = per_seed_means(select(records, **base), collections, field)
    change = relative_reduction if lower_is_better else relative_improvement
    return [change(mine[s], theirs[s]) for s in sorted(set(mine) & set(theirs))]


def compare(
    records: list[dict], collections: Sequence[str], field: str, ours: dict, base: dict, lower_is_better: bool
) -> float:
    """Mean over shared seeds of :func:`seed_changes` (NaN when no seed has both)."""
    changes = seed_changes(records, collections, field, ours, base, lower_is_better)
    return float(np.mean(changes)) if changes else math.nan


def pct_spread(changes: Sequence[float]) -> str:
    """``+4.0% ± 2.1% (3 seeds)``: mean ± sample std of per-seed relative changes."""
    mean, std = mean_std(changes)
    spread = "" if math.isnan(std) else f" ± {100 * std:.1f}%"
    return f"{pct(mean)}{spread} ({len(changes)} seed{'s' if len(changes) != 1 else ''})"


# ---------------------------------------------------------------- convergence


@dataclass(frozen=True)
class Reach:
    """When one model reached the baseline's best OOF score in one cell (None: never)."""

    collection: str
    seed: int
    fold: int
    target: float
    epochs: int | None
    seconds: float | None


def reach(history: list[dict], target: float) -> tuple[int | None, float | None]:
    """(epochs, cumulative training seconds) up to the first epoch with OOF score >= target."""
    seconds = 0.0
    for i, entry in enumerate(history):
        seconds += entry["seconds"]
        if entry["oof_score"] >= target:
            return i + 1, seconds
    return None, None


def steady_histories(histories: list[list[dict]]) -> tuple[list[list[dict]], float]:
    """Histories with the compile epoch (fold 0, epoch 0) re-timed at the median of the other epochs.

    Returns them and the seconds removed (the compile overhead; 0 when there is no other epoch
    to take a median from, in which case nothing is changed).
    """
    others = [e["seconds"] for h in histories for e in (h[1:] if h is histories[0] else h)]
    if not histories or not histories[0] or not others:
        return histories, 0.0
    typical = float(np.median(others))
    first = histories[0][0]
    fixed = [[{**first, "seconds": typical}, *histories[0][1:]], *histories[1:]]
    return fixed, max(first["seconds"] - typical, 0.0)


def convergence(records: list[dict], model: str, collections: Sequence[str], loss: str) -> list[Reach]:
    """Per (collection, seed, fold) where both ran: when ``model`` reached the baseline's best OOF score."""
    cells = []
    for collection in collections:
        for base in select(records, collection=collection, model=BASELINE, loss=loss):
            mine = select(records, collection=collection, model=model, loss=loss, seed=base["seed"])
            if not mine:
                continue
            pairs = zip(steady_histories(base["histories"])[0], steady_histories(mine[0]["histories"])[0])
            for fold, (b_hist, m_hist) in enumerate(pairs):
                if not b_hist:
                    continue
                target = max(e["oof_score"] for e in b_hist)
                cells.append(Reach(collection, base["seed"], fold, target, *reach(m_hist, target)))
    return cells


def convergence_speedup(ours: list[Reach], base: list[Reach]) -> tuple[float, float, int, int]:
    """(relative reduction in seconds, in epochs, cells ours reached, cells) to the baseline's best.

    Sums over the cells both reached (the baseline always reaches its own best), so a slow
    cell weighs by its seconds; cells ours never reached count against the verdict, not here.
    """
    by_cell = {(r.collection, r.seed, r.fold): r for r in base}
    pairs = [(r, by_cell[(r.collection, r.seed, r.fold)]) for r in ours if r.epochs is not None]
    if not pairs:
        return math.nan, math.nan, 0, len(ours)
    seconds = relative_reduction(sum(a.seconds for a, _ in pairs), sum(b.seconds for _, b in pairs))
    epochs = relative_reduction(sum(a.epochs for a, _ in pairs), sum(b.epochs for _, b in pairs))
    return seconds, epochs, len(pairs), len(ours)


@dataclass(frozen=True)
class Plateau:
    """Whether one fold's training reached its plateau."""

    epochs_run: int
    stopped_early: bool  # fewer epochs than allowed: ``window`` epochs in a row without a new best OOF score
    last_gain: float  # best OOF score gained during the last ``window`` epochs (0 when early-stopped; NaN: too short)


def plateau(history: list[dict], epochs: int, window: int) -> Plateau:
    """How flat one fold's OOF curve ended: early-stopped, or the best score gained in its last ``window`` epochs.

    ``last_gain`` = best OOF score over all epochs - best before the last ``window``; NaN when the
    run is not longer than ``window`` (no epoch before them to compare with). Raises ValueError on
    an empty history.
    """
    if not history:
        raise ValueError("an empty history has no plateau")
    scores = [e["oof_score"] for e in history]
    before = scores[:-window] if window > 0 else scores
    gain = max(scores) - max(before) if before else math.nan
    return Plateau(len(history), len(history) < epochs, float(gain))


def plateaus(records: list[dict], epochs: int, window: int) -> list[Plateau]:
    """:func:`plateau` of every fold of every record."""
    return [plateau(h, epochs, window) for r in records for h in r["histories"]]


# ---------------------------------------------------------------- plots


def mean_curve(histories: list[list[dict]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs 1..E, mean OOF score, std) over folds/seeds; shorter (early-stopped) curves count while they last."""
    length = max((len(h) for h in histories), default=0)
    table = np.full((len(histories), length), np.nan)
    for i, h in enumerate(histories):
        table[i, : len(h)] = [e["oof_score"] for e in h]
    counts = np.sum(~np.isnan(table), axis=0)
    mean = np.nansum(table, axis=0) / np.maximum(counts, 1)
    std = np.sqrt(np.nansum((table - mean) ** 2, axis=0) / np.maximum(counts, 1))
    return np.arange(1, length + 1), mean, std


def plot_learning_curves(
    records: list[dict],
    collections: Sequence[str],
    models: Sequence[str],
    loss: str,
    path: Path,
    epochs: int,
    window: int,
) -> None:
    """One panel per collection: mean OOF score per epoch of each model (band: ±1 std over seeds x folds).

    Each fold's last epoch is marked (x: early-stopped, o: ran all ``epochs``); the legend gives
    the early-stopped folds and the largest best-score gain in any fold's last ``window`` epochs
    (:func:`plateau`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(collections), figsize=(5 * len(collections), 3.8), squeeze=False)
    for ax, collection in zip(axes[0], collections):
        for model in models:
            histories = [
                h for r in select(records, collection=collection, model=model, loss=loss) for h in r["histories"]
            ]
            if not histories:
                continue
            x, mean, std = mean_curve(histories)
            ends = [plateau(h, epochs, window) for h in histories]
            stopped = sum(p.stopped_early for p in ends)
            label = (
                f"{model}: early-stopped {stopped}/{len(ends)}, "
                f"max gain in last {window} epochs {fmt(float(np.max([p.last_gain for p in ends])))}"
            )
            style = "--" if model == BASELINE else "-"
            (line,) = ax.plot(x, mean, style, marker="o", ms=3, label=label)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
            for h, p in zip(histories, ends):
                marker = "x" if p.stopped_early else "o"
                ax.plot(len(h), h[-1]["oof_score"], marker, color=line.get_color(), ms=6, mfc="none")
        metric = "tile score" if collection.startswith("tile") else "Kendall tau"
        ax.set(title=collection, xlabel="epoch", ylabel=f"OOF {metric}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Learning curves ({loss} loss; line: mean over seeds x folds)\nmarkers: each fold's last epoch, x = early stop",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def normalised_pair(pred: np.ndarray, runtime: np.ndarray, is_log_runtime: bool) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) runtime of one graph's configs, each divided by the graph's geometric mean.

    true = runtime / geomean(runtime). A log-runtime prediction (MSE-trained) gives
    exp(pred - mean(pred)): its level is fitted, its spread is the model's own. A ranking score has
    no runtime scale, so its level and scale are fitted: exp(a (pred - mean(pred))) with a the
    least-squares slope of log(true) on pred. Neither changes the order of the configs.
    Raises ValueError on non-positive runtimes (unlabelled rows).
    """
    runtime, pred = np.asarray(runtime, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if runtime.size == 0 or not (runtime > 0).all():
        raise ValueError("normalised runtimes need positive runtimes (unlabelled test rows cannot be plotted)")
    log_true = np.log(runtime) - np.log(runtime).mean()
    centred = pred - pred.mean()
    slope = 1.0 if is_log_runtime else float(centred @ log_true / max(centred @ centred, 1e-300))
    return np.exp(log_true), np.exp(slope * centred)


def plot_pred_vs_true(panels: list[dict], path: Path) -> None:
    """One panel per model: per-graph normalised predicted vs true runtime of one valid graph.

    A panel: ``title``, ``pred``, ``runtime``, ``is_runtime`` (True: pred is a log runtime, False:
    a ranking score; see :func:`normalised_pair`). Both axes are log-scaled to the panel's data,
    with y = x; the title adds the graph's Kendall tau (tpuperf.metrics.kendall_tau).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    from tpuperf.metrics import kendall_tau

    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    for ax, panel in zip(axes.flat, panels):
        true, estimate = normalised_pair(panel["pred"], panel["runtime"], panel["is_runtime"])
        low, high = min(true.min(), estimate.min()), max(true.max(), estimate.max())
        margin = (high / low) ** 0.04
        ax.scatter(true, estimate, s=6, alpha=0.5)
        ax.plot([low, high], [low, high], "k--", lw=1, label="y = x")
        fitted = "exp(pred - mean)" if panel["is_runtime"] else "score, level + scale fitted"
        ax.set(
            xscale="log",
            yscale="log",
            xlim=(low / margin, high * margin),
            ylim=(low / margin, high * margin),
            xlabel="true runtime / graph geometric mean",
            ylabel=f"predicted, same ({fitted})",
            title=f"{panel['title']}\nKendall tau {kendall_tau(panel['pred'], panel['runtime']):.3f}",
        )
        ax.title.set_fontsize(9)
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers: the range is often within one decade
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
