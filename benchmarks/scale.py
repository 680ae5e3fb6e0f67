"""Real-scale benchmark: preprocess, one training epoch and scoring per collection.

Graphs are drawn with the real dataset's per-graph size distribution (TpuGraphs paper, Phothilimthana et al., NeurIPS 2023 Datasets and Benchmarks, Table 1: layout:xla
~14k nodes on average, up to ~44k; layout:nlp ~5.7k; 100-1,000 configurable nodes; tile kernels
of ~40 nodes on average, 2 to ~1,000) through tpuperf.data.synthetic, or read from a real directory
(``--data``, the TpuGraphs layout npz/...). Config counts are capped at ``--max-configs`` per
file (real files hold up to ~60k; training samples ``train.configs_per_graph`` of them anyway,
and scoring time is extrapolated per config).

Per collection, in two child processes (preprocess + train before; train after + score), so
that no stage's memory is counted in another's, with the peak RSS of each stage measured by
resetting the kernel's high-water mark (/proc/self/clear_refs) first:

  preprocess   wall time, peak RSS, cache bytes on disk
  train        one epoch (``train.samples_per_graph`` items per train graph) of ``--model``, twice
               on the same graphs: *before* = one static shape planned from every split with the
               session-start ops and model settings (throughput.session_start, as ``throughput.py`` and
               ``rank_speed.py --before``: the pipeline before size buckets, the op rewrites and the per-config
               layers removed since), *after* = ``train.buckets`` planned from the train graphs with the
               current ops and models; padding efficiency (real / padded node slots, real configs / config slots),
               steady real configs/s (compilation steps excluded), compilations, peak RSS
  score        valid + test graphs with the *after* model: wall, configs/s, peak RSS

Then it extrapolates one epoch, and scoring valid + test, to the full dataset's graph counts on
this machine (per-item and per config x node costs of the drawn sample), and prints the goals of
issue #12 with their verdicts: padding efficiency >= 70% on training batches of every collection,
peak RSS <= 8 GiB for every stage, layout training configs/s after >= 2x before.

``--padding-only`` stops after preprocess: the training padding efficiency before and after
buckets and the shapes (compilations) per collection, in seconds and without a model.

    python benchmarks/scale.py [--collections ...] [--data DIR] [--hops 0] [--scope configurable] [--quick] [--padding-only] [--json out.json]

``--scope`` sets the models' ``config_scope`` (all but the official-style baseline; default: params.yaml).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import numpy as np

from tpuperf.collection import COLLECTIONS, Collection, get_collection
from tpuperf.config import STRATEGIES, Config

GIB = 1 << 30
RSS_GOAL = 8 * GIB
FILL_GOAL = 0.70
SPEEDUP_GOAL = 2.0


@dataclass(frozen=True)
class Scale:
    """Full-dataset graph counts and per-graph size distribution of one collection family.

    Node counts are log-normal (``median``, ``sigma``) clipped to ``nodes``; configurable nodes a
    uniform fraction of the nodes clipped to ``configurable``; configs log-normal around
    ``configs`` (the per-graph mean of the real files)."""

    train: int
    valid: int
    test: int
    median: float
    sigma: float
    nodes: tuple[int, int]
    configurable: tuple[int, int]
    configs: int
    test_configs: int | None  # layout test files hold 1,000 configs


# TpuGraphs paper, Phothilimthana et al., NeurIPS 2023 Datasets and Benchmarks, Table 1: layout:xla 78 graphs (7 valid, 8 test), layout:nlp 244 (20 valid,
# 17 test), tile 6,988 kernels (676 valid, 844 test); train = total - valid - test.
SCALES = {
    "xla": Scale(
        63,
        7,
        8,
        median=10_000,
        sigma=0.8,
        nodes=(1_000, 44_000),
        configurable=(100, 1_000),
        configs=10_000,
        test_configs=1_000,
    ),
    "nlp": Scale(
        207,
        20,
        17,
        median=4_500,
        sigma=0.7,
        nodes=(1_000, 44_000),
        configurable=(100, 1_000),
        configs=60_000,
        test_configs=1_000,
    ),
    "tile": Scale(
        5_468, 676, 844, median=25, sigma=1.0, nodes=(5, 1_000), configurable=(0, 0), configs=1_800, test_configs=None
    ),
}
QUICK_SHRINK = 100  # --quick: layout node counts / 100, a few graphs, few configs


def family(collection: Collection) -> str:
    return "tile" if collection.is_tile else collection.source


def draw_sizes(rng: np.random.Generator, scale: Scale, count: int, shrink: int = 1) -> list[tuple[int, int, int]]:
    """``count`` (nodes, configurable nodes, configs) drawn from ``scale`` (node counts / ``shrink``)."""
    out = []
    for _ in range(count):
        nodes = int(np.clip(rng.lognormal(math.log(scale.median), scale.sigma), *scale.nodes)) // shrink
        configurable = int(np.clip(nodes * shrink * rng.uniform(0.02, 0.06), *scale.configurable)) // shrink
        configs = int(np.clip(rng.lognormal(math.log(scale.configs), 0.5), 2, 20 * scale.configs))
        out.append((max(nodes, 12), max(configurable, 2) if scale.configurable[1] else 0, configs))
    return out


def write_sample(
    raw: Path, collection: Collection, counts: dict[str, int], max_configs: int, shrink: int, seed: int
) -> None:
    """Synthetic TpuGraphs files of ``collection`` under ``raw``, sizes from :data:`SCALES`."""
    from tpuperf.data.synthetic import NODES_PER_CONFIGURABLE, make_layout_graph, make_tile_graph, write_graph

    scale = SCALES[family(collection)]
    rng = np.random.default_rng([seed, COLLECTIONS.index(collection)])
    for split, count in counts.items():
        folder = collection.split_dir(raw, split)
        folder.mkdir(parents=True, exist_ok=True)
        for i, (nodes, configurable, configs) in enumerate(
            draw_sizes(rng, scale, count, 1 if collection.is_tile else shrink)
        ):
            configs = min(configs if split != "test" or scale.test_configs is None else scale.test_configs, max_configs)
            if collection.is_tile:
                arrays = make_tile_graph(rng, nodes, configs, labelled=split != "test")
            else:
                nodes = max(nodes, NODES_PER_CONFIGURABLE * configurable)
                arrays = make_layout_graph(
                    rng,
                    nodes,
                    configurable,
                    configs,
                    source=collection.source,
                    search=collection.search,
                    labelled=split != "test",
                )
            write_graph(folder / f"{split}_{i}.npz", arrays)


# ----------------------------------------------------------------------------------------------
# child process: the stages of one collection
# ----------------------------------------------------------------------------------------------
def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _peak_bytes() -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def train_epoch(kit, graphs, buckets, samples: int, max_steps: int | None, min_steps: int) -> dict:
    """One epoch of training steps (at least ``min_steps``, at most ``max_steps``) on every replica of
    ``kit.strategy``; compilation steps timed apart."""
    from tpuperf.training.batches import SlotUsage
    from tpuperf.training.trainer import batch_stream, epoch_steps

    replicas = kit.strategy.num_replicas_in_sync
    steps = max(epoch_steps(graphs, buckets, samples, replicas), min_steps)
    steps = min(steps, max_steps) if max_steps else steps
    kit.reset(0, steps)
    stream = batch_stream(graphs, buckets, samples, seed=0, replicas=replicas)
    usage, steady_usage = SlotUsage(), SlotUsage()
    compile_s = steady_s = 0.0
    steady_items = 0
    for _ in range(steps):
        bucket, batches = next(stream)
        shape = buckets.shapes[bucket]
        traces, t0 = kit.train_compilations, time.perf_counter()
        loss = kit.train_step(batches, shape)
        seconds = time.perf_counter() - t0
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss}")
        for batch in batches:
            usage.add(batch, shape)
        if kit.train_compilations > traces:
            compile_s += seconds
        else:
            steady_s += seconds
            for batch in batches:
                steady_usage.add(batch, shape)
                steady_items += len(batch)
    return {
        "steps": steps,
        "shapes": [astuple(s) for s in buckets.shapes],
        "node_fill": usage.node_fill,
        "config_fill": usage.config_fill,
        "compile_seconds": compile_s,
        "steady_seconds": steady_s,
        "steady_items": steady_items,
        "configs_per_s": steady_usage.configs / steady_s if steady_s else math.nan,
        "seconds_per_item": steady_s / steady_items if steady_items else math.nan,
    }


def plan_buckets(settings, splits: dict[str, list], samples: int, mode: str):
    """Training buckets of ``mode``: ``before`` = one shape from the largest graph of every split
    (the pipeline before size buckets), ``after`` = ``train.buckets`` planned from the train graphs."""
    from tpuperf.training.batches import BucketPlan

    if mode == "before":
        every = [g for gs in splits.values() for g in gs]
        return BucketPlan(settings.graphs_per_batch, settings.batch_slack, 1, 2.0, 1 << 62, 1 << 62).plan(
            every, settings.configs_per_graph, samples
        )
    return BucketPlan.from_config(settings).plan(splits["train"], settings.configs_per_graph, samples)


def epoch_padding(graphs, buckets, samples: int) -> dict:
    """Padding efficiency of one epoch of training batches (the steps :func:`train_epoch` runs
    without ``--max-steps``), computed without a model."""
    from tpuperf.training.batches import SlotUsage
    from tpuperf.training.trainer import batch_stream, epoch_steps

    steps = epoch_steps(graphs, buckets, samples)
    stream, usage = batch_stream(graphs, buckets, samples, seed=0), SlotUsage()
    for _ in range(steps):
        bucket, batches = next(stream)
        usage.add(batches[0], buckets.shapes[bucket])
    return {
        "steps": steps,
        "shapes": [astuple(s) for s in buckets.shapes],
        "node_fill": usage.node_fill,
        "config_fill": usage.config_fill,
    }


def padding_only(raw: Path, work: Path, name: str, config: Config) -> dict:
    """``--padding-only``: preprocess, then the training padding before and after buckets; no model."""
    from tpuperf.data.cache import CollectionCache
    from tpuperf.data.preprocess import preprocess_collection

    collection = get_collection(name)
    preprocess_collection(raw, work / "cache", collection, config.preprocess, progress=False)
    cache = CollectionCache(work / "cache", collection)
    splits = {split: list(cache.graphs(split)) for split in ("train", "valid", "test")}
    samples = config.train.samples_per_graph[collection.kind.name]
    out = {"collection": name, "graphs": {split: len(g) for split, g in splits.items()}}
    out["nodes"] = {split: [g.num_nodes for g in gs] for split, gs in splits.items()}
    for mode in ("before", "after"):
        out[f"train_{mode}"] = epoch_padding(
            splits["train"], plan_buckets(config.train, splits, samples, mode), samples
        )
    return out


def run_collection(
    raw: Path, work: Path, name: str, config: Config, model: str, max_steps: int | None, min_steps: int, mode: str
) -> dict:
    """The stages of one collection in this process, a dict of figures: mode ``before``
    preprocesses and trains with one shape, the session-start ops and model settings on the default strategy; mode
    ``after:<strategy>`` (a fresh process, so that the first one's memory is not counted) trains with buckets
    and scores under ``train.strategy`` = ``<strategy>`` (graphs_per_batch per replica as the pipeline plans it)."""
    import tensorflow as tf
    from throughput import session_start

    import tpuperf  # noqa: F401
    from tpuperf.data.cache import CollectionCache
    from tpuperf.data.preprocess import preprocess_collection
    from tpuperf.training.trainer import ModelKit, strategy_settings

    collection = get_collection(name)
    out: dict = {"collection": name}
    if mode == "before":
        _reset_peak()
        t0 = time.perf_counter()
        preprocess_collection(raw, work / "cache", collection, config.preprocess, progress=False)
        out["preprocess"] = {
            "seconds": time.perf_counter() - t0,
            "peak_rss": _peak_bytes(),
            "cache_bytes": _dir_bytes(work / "cache" / collection.slug),
        }
    cache = CollectionCache(work / "cache", collection)

    splits = {split: list(cache.graphs(split)) for split in ("train", "valid", "test")}
    out["graphs"] = {split: len(g) for split, g in splits.items()}
    out["nodes"] = {split: [g.num_nodes for g in gs] for split, gs in splits.items()}
    settings = replace(config.train, verbose=0, live=False)
    if mode == "before":
        strategy = tf.distribute.get_strategy()
    else:  # before any TensorFlow op of this process: the strategy may split the CPU into logical devices
        mode, choice = mode.split(":")
        strategy, settings = strategy_settings(replace(settings, strategy=choice))
    samples = settings.samples_per_graph[collection.kind.name]
    buckets = plan_buckets(settings, splits, samples, mode)
    _reset_peak()
    with session_start(config) if mode == "before" else contextlib.nullcontext(config) as side:  # traced inside
        kit = ModelKit(
            collection,
            side.model(model),
            settings,
            strategy,
            cache.node_feat_dim,
            splits["train"][0],
        )
        out[f"train_{mode}"] = {
            **train_epoch(kit, splits["train"], buckets, samples, max_steps, min_steps),
            "peak_rss": _peak_bytes(),
        }
    if mode == "before":
        return out
    _reset_peak()
    scored = splits["valid"] + splits["test"]
    t0 = time.perf_counter()
    kit.scorer.score(scored)
    seconds = time.perf_counter() - t0
    configs = sum(g.num_configs for g in scored)
    out["score"] = {
        "seconds": seconds,
        "configs": configs,
        "config_nodes": sum(g.num_configs * g.num_nodes for g in scored),
        "compilations": kit.scorer.compilations,
        "configs_per_s": configs / seconds,
        "peak_rss": _peak_bytes(),
    }
    return out


# ----------------------------------------------------------------------------------------------
# parent: data, one child per collection, extrapolation and report
# ----------------------------------------------------------------------------------------------
def extrapolate(result: dict, collection: Collection, samples: int) -> dict:
    """Full-dataset epoch and valid+test scoring seconds on this machine, from the sample's costs:
    seconds per training item (steady) and per scored config x node, with the sample's mean node
    count after preprocessing standing for the full dataset's (the sample is drawn from its
    distribution; with ``--data`` it is whatever the directory holds)."""
    scale = SCALES[family(collection)]
    train = result["train_after"]
    epoch = scale.train * samples * train["seconds_per_item"] + train["compile_seconds"]
    score = result["score"]
    nodes = float(np.mean([n for split in result["nodes"].values() for n in split]))
    full_config_nodes = (scale.valid * scale.configs + scale.test * (scale.test_configs or scale.configs)) * nodes
    return {"epoch_seconds": epoch, "score_seconds": score["seconds"] / score["config_nodes"] * full_config_nodes}


def report(results: list[dict], args: argparse.Namespace, config: Config) -> list[str]:
    lines, verdicts = [], []
    for r in results:
        c = get_collection(r["collection"])
        b, p = r["train_before"], r["preprocess"]
        x = r["extrapolated"]
        lines.append(
            f"{c.name}: {r['graphs']['train']} train / {r['graphs']['valid']} valid / {r['graphs']['test']} test graphs, "
            f"train nodes {min(r['nodes']['train'])}..{max(r['nodes']['train'])} (after preprocess)"
        )
        lines.append(
            f"  preprocess  {p['seconds']:7.1f} s  peak RSS {p['peak_rss'] / GIB:5.2f} GiB  cache {p['cache_bytes'] / 2**20:8.1f} MiB"
        )
        for mode, t in [("before", b)] + [(f"after {a['strategy']}", a["train_after"]) for a in r["after"]]:
            lines.append(
                f"{padding_line(mode, t)}, {t['configs_per_s']:8.1f} configs/s steady, compile {t['compile_seconds']:6.1f} s, "
                f"peak RSS {t['peak_rss'] / GIB:5.2f} GiB"
            )
        for a in r["after"]:
            s = a["score"]
            lines.append(
                f"  score {a['strategy']:<8} {s['seconds']:7.1f} s  {s['configs']} configs, {s['configs_per_s']:.0f} "
                f"configs/s, {s['compilations']} compilations, peak RSS {s['peak_rss'] / GIB:5.2f} GiB"
            )
        lines.append(
            f"  full dataset on this machine: one epoch ~{x['epoch_seconds'] / 3600:.2f} h, scoring valid+test "
            f"~{x['score_seconds'] / 3600:.2f} h"
        )
        verdicts.append(fill_verdict(c.name, r["train_after"]))
        # the pipeline's stages (before is the comparison)
        peak = max([p["peak_rss"]] + [a[k]["peak_rss"] for a in r["after"] for k in ("train_after", "score")])
        verdicts.append((f"{c.name}: peak RSS of every stage <= 8 GiB ({peak / GIB:.2f} GiB)", peak <= RSS_GOAL))
        for strategy in [] if c.is_tile else dict.fromkeys(a["strategy"] for a in r["after"]):
            ratio = float(
                np.median([a["train_after"]["configs_per_s"] for a in r["after"] if a["strategy"] == strategy])
                / b["configs_per_s"]
            )
            verdicts.append(
                (
                    f"{c.name}: training configs/s after (buckets, current ops, strategy {strategy}; median of its "
                    f"runs) / before (one shape, session-start ops and model) >= {SPEEDUP_GOAL:.0f}x ({ratio:.2f}x)",
                    ratio >= SPEEDUP_GOAL,
                )
            )
    lines.append(
        f"goals (hops {config.preprocess.hops}, model {args.model} scope {config.model(args.model).config_scope}, "
        f"{'quick' if args.quick else 'real-size'} "
        f"{'data ' + str(args.data) if args.data else 'synthetic sample'}):"
    )
    lines += [f"  [{'MET' if ok else 'NOT MET'}] {text}" for text, ok in verdicts]
    return lines


def padding_line(mode: str, t: dict) -> str:
    return (
        f"  train {mode:<6} {t['steps']:4d} steps, {len(t['shapes'])} shapes, fill nodes {t['node_fill']:6.1%} configs "
        f"{t['config_fill']:6.1%}"
    )


def fill_verdict(name: str, t: dict) -> tuple[str, bool]:
    return (
        f"{name}: training padding efficiency >= {FILL_GOAL:.0%} (nodes {t['node_fill']:.1%}, configs {t['config_fill']:.1%})",
        min(t["node_fill"], t["config_fill"]) >= FILL_GOAL,
    )


def padding_report(results: list[dict], args: argparse.Namespace, config: Config) -> list[str]:
    """``--padding-only``: per collection the training batches' padding before/after buckets and the goal."""
    lines = []
    for r in results:
        lines.append(
            f"{r['collection']}: {r['graphs']['train']} train graphs, nodes {min(r['nodes']['train'])}.."
            f"{max(r['nodes']['train'])} (after preprocess)"
        )
        lines += [padding_line(mode, r[f"train_{mode}"]) for mode in ("before", "after")]
    lines.append(
        f"goal (hops {config.preprocess.hops}, {'data ' + str(args.data) if args.data else 'synthetic sample'}):"
    )
    for r in results:
        text, ok = fill_verdict(r["collection"], r["train_after"])
        lines.append(f"  [{'MET' if ok else 'NOT MET'}] {text}")
    return lines


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--collections", nargs="+", default=[c.name for c in COLLECTIONS])
    parser.add_argument(
        "--data", type=Path, default=None, help="a real TpuGraphs directory (npz/...) instead of drawn graphs"
    )
    parser.add_argument("--model", default="chebsage")
    parser.add_argument("--hops", type=int, default=None, help="preprocess.hops (default: params.yaml)")
    parser.add_argument(
        "--scope", choices=("nodes", "configurable"), default=None, help="models' config_scope (default: params.yaml)"
    )
    parser.add_argument(
        "--graphs",
        type=int,
        nargs=3,
        default=(6, 1, 1),
        metavar=("TRAIN", "VALID", "TEST"),
        help="layout graphs drawn per split (tile: 20x as many)",
    )
    parser.add_argument("--max-configs", type=int, default=2_000, help="configs per drawn file at most")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="training steps per epoch at most (default: a full epoch)"
    )
    parser.add_argument(
        "--min-steps",
        type=int,
        default=4,
        help="training steps at least (steady configs/s needs steps "
        "after the compiling ones; a few real graphs make a short epoch)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny graphs (node counts / 100), 2 collections"
    )
    parser.add_argument(
        "--padding-only",
        action="store_true",
        help="draw + preprocess, then only the training padding efficiency before/after buckets (no model)",
    )
    parser.add_argument(
        "--strategies",
        nargs="+",
        choices=STRATEGIES,
        default=None,
        help="train.strategy of the after stage, one child each in this order (repeat one to interleave "
        "repeats; default: params.yaml's); the first one's figures are extrapolated",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch dir (default: a temp dir, removed)")
    parser.add_argument("--child", nargs=4, metavar=("RAW", "WORK", "COLLECTION", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from rank_speed import scope_changes

    from tpuperf.config import deep_merge, load_params

    raw = load_params(args.params)
    changes: dict = {"preprocess": {"jobs": 1}, **scope_changes(raw, args.scope)}
    if args.hops is not None:
        changes["preprocess"]["hops"] = args.hops
    if args.quick:  # smoke run: no XLA compilation (tens of seconds per shape on a loaded CPU)
        changes["train"] = {"jit_compile": False}
    config = Config.from_dict(deep_merge(raw, changes))
    if args.child:
        raw, work, name, mode = args.child
        result = run_collection(Path(raw), Path(work), name, config, args.model, args.max_steps, args.min_steps, mode)
        Path(work, "child.json").write_text(json.dumps(result))
        return [result]

    shrink = QUICK_SHRINK if args.quick else 1
    tile_factor = 20  # tile graphs drawn per layout graph of each split
    if args.quick:
        args.collections = (
            ["tile:xla", "layout:xla:random"]
            if args.collections == parser.get_default("collections")
            else args.collections
        )
        args.graphs, args.max_configs, tile_factor = (4, 1, 1), min(args.max_configs, 48), 4
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name in args.collections:
            collection = get_collection(name)
            raw = args.data or Path(tmp, "raw")
            if args.data is None:
                factor = tile_factor if collection.is_tile else 1
                counts = dict(zip(("train", "valid", "test"), (n * factor for n in args.graphs)))
                t0 = time.perf_counter()
                write_sample(raw, collection, counts, args.max_configs, shrink, seed=0)
                print(f"{name}: drew {counts} graphs in {time.perf_counter() - t0:.0f} s", flush=True)
            work = Path(tmp, collection.slug)
            work.mkdir()
            if args.padding_only:
                results.append(padding_only(raw, work, name, config))
                continue
            cmd = [
                sys.executable,
                __file__,
                "--params",
                args.params,
                "--model",
                args.model,
                "--hops",
                str(config.preprocess.hops),
            ]
            cmd += ["--max-steps", str(args.max_steps)] if args.max_steps else []
            cmd += ["--min-steps", str(args.min_steps)]
            cmd += ["--quick"] if args.quick else []
            cmd += ["--scope", args.scope] if args.scope else []
            strategies = args.strategies or [config.train.strategy]
            result = {"after": []}
            # one process each: one's memory stays out of another's peak; a strategy named twice is a repeat
            for mode in ["before"] + [f"after:{s}" for s in strategies]:
                subprocess.run(cmd + ["--child", str(raw), str(work), name, mode], check=True)
                figures = json.loads((work / "child.json").read_text())
                if mode == "before":
                    result.update(figures)
                else:
                    result["after"].append({"strategy": mode.split(":")[1], **figures})
            result.update(train_after=result["after"][0]["train_after"], score=result["after"][0]["score"])
            samples = config.train.samples_per_graph[collection.kind.name]
            result["extrapolated"] = extrapolate(result, collection, samples)
            results.append(result)
    for line in (padding_report if args.padding_only else report)(results, args, config):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
