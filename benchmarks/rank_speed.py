"""Speed of `tpuperf rank` on new programs (prints figures; not a timed test).

Goal (issue #15): rank all configurations of one graph on 2 CPU cores, excluding the one-time
load, in <= 2 s for a 1,000-config layout graph of 20,000 nodes and <= 0.5 s for a 2,000-config
tile kernel. Graphs are drawn with the synthetic generator (tpuperf.data.synthetic) and written as
.npz outside any dataset, like a compiler engineer's new program; the model is an export
(tpuperf.ranking.export) of params.yaml's ensemble (``ensemble.models`` x ``train.folds`` members, model
sizes and ``train.predict_configs_per_graph`` / ``jit_compile`` as there) with untrained
weights, whose values do not change the cost. The export's transform is fitted on a few small
train graphs of the same collection.

Printed per collection: load (build every member + read weights), the first rank call (file
read + validation + transform + scoring, including tracing and compiling the forward pass for
the graph's batch shape, paid once per shape) and the median of the following calls (the
steady per-graph time, what the goal is about), split into preparing and scoring, and each
model's median time to score the graph with one of its folds (where the time goes).

    python benchmarks/rank_speed.py [--repeats 3] [--quick] [--models chebsage] [--jit on|off] [--kinds layout tile]
                                    [--scope nodes|configurable] [--before] [--chunks 32 64 256]
                                    [--members all best] [--profile chebsage] [--params params.yaml]

``--scope`` sets ``config_scope`` of every model but the official-style baseline (which stays
``nodes``), to compare the per-config stage over all nodes with the one over configurable nodes;
``--models chebsage sage cheb`` shows what leaving the baseline out (``ensemble.min_weight``) gives.
``--before`` also exports the same ensemble as at the session start (``throughput.session_start``: the
session-start per-config ops, the old XLA program, and model settings, ``throughput.SESSION_START_MODELS``,
as ``throughput.py --before`` and ``scale.py``'s before; same train graphs and transform, its own
untrained weights), loads it and interleaves its timed calls with the current code's, printing both
and the speed-up. Likewise ``--chunks C ...`` times the
export scoring in batch items of C configs per graph (``train.predict_configs_per_graph``, with
``predict_config_nodes`` scaled alike: the working set of the per-config tensors; exact) and
``--members all best`` ranks with ``tpuperf rank --members`` each (the first is the reference);
each version prints how far a config's ensemble score moved (0 = every member orders the configs alike; a swap
of two configs a member scores within float rounding moves it by that member's share of a rank step; not a
check for ``--before`` when ``SESSION_START_MODELS`` changes a member: other weights).
``--profile MODEL`` runs TensorFlow's profiler over one fold of MODEL scoring the graph and prints
its seconds per call by layer and op class of the compiled XLA program, host time and retraces.
Figures and where the time goes: README, "Ranking new programs" (neither goal is met with the
default 8 members on a shared machine; the baseline is most of the time).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tpuperf.collection import get_collection
from tpuperf.config import Config, deep_merge, load_params
from tpuperf.data.synthetic import make_layout_graph, make_tile_graph, write_graph

REPO = Path(__file__).resolve().parents[1]
SIZES = {  # (nodes, configurable nodes, configs) of the ranked graph; goal in seconds
    "full": {"layout": (20_000, 600, 1_000, 2.0), "tile": (40, 0, 2_000, 0.5)},
    "quick": {"layout": (400, 20, 50, None), "tile": (20, 0, 100, None)},
}
COLLECTIONS = {"layout": "layout:xla:random", "tile": "tile:xla"}


def write_untrained_members(config: Config, collection, seed: int = 0) -> None:
    """What training leaves for the export stage, with fresh (untrained) weights: each member's
    ``checkpoints/<slug>/<model>/fold_<k>/best`` + a finished state.json (trained for the current cache and
    model settings), each fold's predictions as training writes them (its held-out train graphs as ``oof``, valid and
    test; random scores drawn from ``seed``: the export reads the valid ones for its ``valid_member_agreement``),
    and each model's run report with an oof_score (model i gets 0.3 - 0.05 i), each fold's state fingerprint and
    the digests of its prediction files."""
    import polars as pl
    import tensorflow as tf

    from tpuperf.data.cache import CollectionCache
    from tpuperf.provenance import weights_for_cache
    from tpuperf.ranking.ranker import build_member_model
    from tpuperf.runs import (
        BEST_CHECKPOINT,
        STATE_FILE,
        fold_checkpoint_dir,
        prediction_digests,
        prediction_path,
        trained_with,
        write_run_report,
    )
    from tpuperf.training.scoring import prediction_frame

    cache = CollectionCache(config.preprocess.out, collection)
    feat_dim = cache.node_feat_dim
    folds = config.train.folds
    graphs = {split: list(cache.graphs(split)) for split in ("train", "valid", "test")}
    rng = np.random.default_rng(seed)
    for i, name in enumerate(config.ensemble_models):
        for fold in range(folds):
            path = prediction_path(config.train.runs_dir, collection, name, fold)
            path.parent.mkdir(parents=True, exist_ok=True)
            held_out = {"oof": graphs["train"][fold::folds], "valid": graphs["valid"], "test": graphs["test"]}
            frames = [
                prediction_frame(split, gs, {g.graph_id: rng.normal(size=g.num_configs) for g in gs})
                for split, gs in held_out.items()
            ]
            pl.concat(frames).write_parquet(path)
            tf.keras.utils.set_random_seed(seed + 10 * i + fold)
            model = build_member_model(collection.kind.name, config.model(name), feat_dim)
            fold_dir = fold_checkpoint_dir(config.train.checkpoints_dir, collection, name, fold)
            fold_dir.mkdir(parents=True)
            tf.train.Checkpoint(model=model).write(str(fold_dir / BEST_CHECKPOINT))
            weights_for = weights_for_cache(dataclasses.asdict(config.model(name)), cache)
            state = {"finished": True, "weights_for": weights_for, "fingerprint": f"untrained-{seed}-{name}-{fold}"}
            (fold_dir / STATE_FILE).write_text(json.dumps(state))
        write_run_report(
            config.train.runs_dir,
            collection,
            name,
            {
                "collection": collection.name,
                "model": name,
                "metric": "untrained",
                "oof_score": 0.3 - 0.05 * i,
                "valid_score_mean_fold": None,
                "folds": [{"fold": f, "state_fingerprint": f"untrained-{seed}-{name}-{f}"} for f in range(folds)],
                "predicted_from": {
                    **cache.identity(),
                    "weights_for": weights_for,
                    **trained_with(config, name),  # the settings params.yaml holds (the export compares them)
                },
                "predictions": prediction_digests(config.train.runs_dir, collection, name),
            },
        )


def scope_changes(raw: dict, scope: str | None) -> dict:
    """params changes setting ``config_scope`` (both kinds) of every model of ``raw`` but the baseline (none when ``scope`` is None)."""
    if scope is None:
        return {}
    both = {"tile": scope, "layout": scope}
    return {"models": {name: {"config_scope": both} for name, m in raw["models"].items() if m["conv"] != "baseline"}}


def bench_params(
    root: Path,
    quick: bool,
    models: list[str] | None = None,
    jit: bool | None = None,
    scope: str | None = None,
    params_file: Path = REPO / "params.yaml",
) -> Config:
    """``params_file`` (the repo's params.yaml unless given) with paths under ``root``; ``quick``: one
    tiny model, no XLA; ``models``, ``jit`` and ``scope`` (when given) replace ensemble.models,
    train.jit_compile and the models' config_scope (:func:`scope_changes`)."""
    raw = load_params(params_file)
    raw = deep_merge(raw, scope_changes(raw, scope))
    members = models or raw["ensemble"]["models"] or list(raw["models"])
    changes = {
        "data": {"out": str(root / "data")},
        "preprocess": {"out": str(root / "cache"), "jobs": 1},
        "train": {"runs_dir": str(root / "runs"), "checkpoints_dir": str(root / "checkpoints")},
        "export": {"out": str(root / "models")},
        "ensemble": {"models": members[:1] if quick else members},
    }
    if quick:
        changes["train"]["jit_compile"] = False
        changes["models"] = {
            name: dict(units=8, config_units=8, shared_layers=1, config_layers=1) for name in raw["models"]
        }
    if jit is not None:
        changes["train"]["jit_compile"] = jit
    return Config.from_dict(deep_merge(raw, changes))


def build_export(root: Path, params: Config, kind: str, rng: np.random.Generator) -> Path:
    """Three small train graphs -> cache -> untrained members -> export; returns the export dir."""
    from tpuperf.data.preprocess import preprocess_collection
    from tpuperf.ranking.export import export_collection

    collection = get_collection(COLLECTIONS[kind])
    train_dir = collection.split_dir(params.data.out, "train")
    train_dir.mkdir(parents=True)
    for i in range(3):
        arrays = make_layout_graph(rng, 400, 20, 40) if kind == "layout" else make_tile_graph(rng, 20, 40)
        write_graph(train_dir / f"train{i}.npz", arrays)
    preprocess_collection(params.data.out, params.preprocess.out, collection, params.preprocess, progress=False)
    write_untrained_members(params, collection)
    return export_collection(params, collection)


def with_chunks(model, configs: int):
    """``model`` (an ExportedModel) scoring in batch items of ``configs`` configs per graph, its
    planning's ``max_config_nodes`` scaled alike (what ``train.predict_configs_per_graph`` and
    ``train.buckets.predict_config_nodes`` set in the export); scores do not depend on it."""
    model.plan = dataclasses.replace(
        model.plan, max_config_nodes=model.plan.max_config_nodes * configs // model.configs
    )
    model.configs = configs
    return model


def measure(
    kind: str,
    root: Path,
    params: Config,
    repeats: int,
    sizes: dict,
    rng: np.random.Generator,
    before: Config | None = None,
    chunks: tuple[int, ...] = (),
    members: tuple[str, ...] = ("all",),
    profile: str | None = None,
    cpus=None,
) -> dict:
    """Figures of one kind (module docstring). Other versions of the same export, their timed calls
    interleaved with the current code's, in ``"versions"``: ``before`` (a Config like ``params``, its
    paths under another root) = its own export built, loaded and traced under
    :func:`throughput.session_start`; each of ``chunks`` = :func:`with_chunks`; each of ``members[1:]``
    = ranking with ``tpuperf rank --members`` that (``members[0]`` for the others); ``cpus`` (a
    strategy of ``train.strategy`` cpus) = the export scoring under it. Each version's
    ``config_layers``: per model, the per-config layers its members are built with.
    ``profile``: that model's :func:`profile_member` breakdown, in ``"profile"``."""
    from throughput import session_start

    from tpuperf.data.preprocess import prepare_graph
    from tpuperf.ranking.ranker import ExportedModel

    nodes, configurable, configs, goal = sizes[kind]
    before_rng = copy.deepcopy(rng)  # the before export's train graphs: the same draws, so the same transform
    export_dir = build_export(root, params, kind, rng)
    program = root / f"new_{kind}_program.npz"
    if kind == "layout":
        arrays = make_layout_graph(rng, nodes, configurable, configs, labelled=False)
    else:  # a kernel's shapes allow only a few hundred distinct tiles: repeat them up to `configs` rows
        arrays = make_tile_graph(rng, nodes, configs, labelled=False)
        rows = rng.integers(0, len(arrays["config_feat"]), configs)
        arrays.update(
            config_feat=arrays["config_feat"][rows],
            config_runtime=np.zeros(configs, np.int64),
            config_runtime_normalizers=np.ones(configs, np.int64),
        )
    write_graph(program, arrays)
    collection = get_collection(COLLECTIONS[kind])

    start = time.perf_counter()
    model = ExportedModel(export_dir)
    load = time.perf_counter() - start

    models, first = {"after": model}, {}  # version -> its export (members: which of its models rank)
    chosen = {"after": members[0], **{f"members {m}": m for m in members[1:]}}
    if before is not None:  # the session start's export: built, then traced by its first call, inside the context
        with session_start(before) as old:
            models["before"] = ExportedModel(build_export(root, old, kind, before_rng))
            first["before"] = rank_once(models["before"], program, collection, members[0])
    for configs in chunks:
        models[f"chunks of {configs}"] = with_chunks(ExportedModel(export_dir), configs)
    if cpus is not None:
        models[f"cpus x{cpus.num_replicas_in_sync}"] = ExportedModel(export_dir, cpus)
    exports = dict(models)  # the versions with their own export (timed per member below)
    models.update({version: model for version in chosen if version != "after"})
    for version, exported in models.items():
        if version not in first:
            first[version] = rank_once(exported, program, collection, chosen.get(version, members[0]))
    runs = {version: [] for version in models}
    for _ in range(repeats):  # the versions' timed calls interleave
        for version, exported in models.items():
            runs[version].append(rank_once(exported, program, collection, chosen.get(version, members[0])))
    graph = prepare_graph(program, collection, model.stats)
    per_member = {version: {} for version in models}  # model -> median seconds to score the graph with one fold
    for name in model.folds:
        times = {version: [] for version in exports}
        for _ in range(repeats):
            for fold in model.folds[name]:
                for version, exported in exports.items():
                    exported.models[name].set_weights(exported.folds[name][fold])
                    t0 = time.perf_counter()
                    exported.scorer(name).score([graph])
                    times[version].append(time.perf_counter() - t0)
        for version in models:
            per_member[version][name] = round(statistics.median(times[version if version in exports else "after"]), 3)
    figures = {version: summary(first[version], runs[version], per_member[version], goal) for version in models}
    for version, exported in models.items():  # what each version's members are built with (--before: its own)
        figures[version]["config_layers"] = {name: len(m.config_blocks) for name, m in exported.models.items()}
    ranking = first["after"][2]
    for version in models:  # how far each config's ensemble score moved: 0 when the version orders every member alike
        figures[version]["max_score_change"] = float(
            np.abs(config_scores(first[version][2]) - config_scores(ranking)).max()
        )
    return {
        "collection": collection.name,
        "nodes": len(arrays["node_feat"]),
        "nodes_after_pruning": graph.num_nodes,
        "configs": int(ranking.num_configs),
        "members": sum(len(f) for f in model.folds.values()),
        "jit_compile": model.jit_compile,
        "config_scope": sorted({m.settings["config_scope"] for m in model.models.values()}),
        "batch_shape": ", ".join(
            map(str, model.plan.plan([graph], model.configs, items=-(-graph.num_configs // model.configs)).shapes)
        ),
        "load_s": round(load, 3),
        **figures["after"],
        "goal_s": goal,
        "members_option": members[0],
        "versions": {version: f for version, f in figures.items() if version != "after"},
        **({"profile": profile_member(model, profile, graph, repeats)} if profile else {}),
    }


def config_scores(ranking) -> np.ndarray:
    """Per config id, the ensemble's score (``Ranking.ensemble_score``: the combined normalised rank)."""
    scores = np.empty(ranking.num_configs)
    scores[ranking.config_ids] = ranking.ensemble_score
    return scores


def rank_once(model, program: Path, collection, members: str = "all") -> tuple[float, float, object]:
    """(prepare seconds, score seconds, ranking) of one ``tpuperf rank --members members`` of ``program``."""
    from tpuperf.data.preprocess import prepare_graph

    t0 = time.perf_counter()
    graph = prepare_graph(program, collection, model.stats)
    t1 = time.perf_counter()
    ranking = model.rank_graphs([graph], members=members)[0]
    return t1 - t0, time.perf_counter() - t1, ranking


OP_CLASSES = (  # (class, what a compiled instruction's op_type / name contains), first match wins
    ("layer norm", ("layer_norm",)),
    ("gather", ("Gather",)),
    ("segment sum (scatter)", ("UnsortedSegment", "scatter")),
    ("dense (dot)", ("MatMul", "Einsum", "Tensordot", "dot")),
)


def layer_labels(model) -> dict[str, str]:
    """Keras layer name -> its role in a RankingModel (``shared_block_0``, ``config_block_1``, ...)."""
    labels = {
        model.node_encoder.name: "node_encoder",
        model.to_config_width.name: "to_config_width",
        model.config_encoder.name: "config_encoder",
        model.head.name: "head",
    }
    if model.cost_features is not None:
        labels[model.cost_features.name] = "cost_features"
    labels.update({b.name: f"shared_block_{i}" for i, b in enumerate(model.shared_blocks)})
    labels.update({b.name: f"config_block_{i}" for i, b in enumerate(model.config_blocks)})
    return labels


def compiled_ops(hlo: str, labels: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Instruction name -> (layer, op class) of the top-level instructions of an optimised HLO
    module's ENTRY computation (what XLA on CPU runs one by one), from their metadata's op_name
    (``<model>/<layer>/...``, the layer renamed by ``labels``) and op_type; layer ``-`` without
    metadata, class ``elementwise`` when no :data:`OP_CLASSES` pattern matches."""
    entry = hlo[hlo.index("ENTRY") :]
    ops = {}
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT )?%?([\w.-]+) = ", line)
        if not match:
            break
        name = match.group(1)
        op_name = re.search(r'op_name="([^"]*)"', line)
        op_type = re.search(r'op_type="([^"]*)"', line)
        path = op_name.group(1).split("/") if op_name else []
        layer = labels.get(path[1], path[1]) if len(path) > 2 else "-"
        text = " ".join([name, op_type.group(1) if op_type else "", op_name.group(1) if op_name else ""])
        ops[name] = (layer, next((c for c, keys in OP_CLASSES if any(k in text for k in keys)), "elementwise"))
    return ops


def profile_member(exported, name: str, graph, repeats: int) -> dict:
    """Where one fold of model ``name`` spends its time scoring ``graph`` (TensorFlow's profiler,
    ``repeats`` calls after a warm one): seconds per call by layer and by op class of the XLA
    program's instructions (per layer split by op class), the rest of the call (host: batch building, GraphTensor, copies,
    Python), the 12 costliest instructions (name, layer, class, seconds) and the traces
    (compilations) the timed calls added (0 = no retracing)."""
    import tensorflow as tf

    try:
        from tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    from tpuperf.training.batches import to_arrays, to_graph_tensor
    from tpuperf.training.scoring import chunk_items

    exported.models[name].set_weights(next(iter(exported.folds[name].values())))
    scorer = exported.scorer(name)
    scorer.score([graph])
    traces = scorer.compilations
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        t0 = time.perf_counter()
        for _ in range(repeats):
            scorer.score([graph])
        wall = (time.perf_counter() - t0) / repeats
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    shape = scorer._shapes[-1]  # the one shape this graph is scored with
    arrays = to_arrays(
        chunk_items([graph], shape.configs)[: shape.graphs], shape, exported.collection.kind.name, exported.feat_dim
    )
    graph_tensor = to_graph_tensor({k: tf.constant(v) for k, v in arrays.items()}, exported.collection.kind.name)[0]
    hlo = scorer._forward.experimental_get_compiler_ir(graph_tensor)(stage="optimized_hlo")
    ops = compiled_ops(hlo, layer_labels(exported.models[name]))
    layers, classes, device, per_op = {}, {}, 0.0, {}
    for plane in space.planes:
        names = plane.event_metadata
        for line in plane.lines:
            for event in line.events:
                op, seconds = names[event.metadata_id].name, event.duration_ps / 1e12 / repeats
                if op == "CpuExecutable::ExecuteAsyncOnStream":
                    device += seconds
                if op in ops:
                    layer, op_class = ops[op]
                    per_op[op] = per_op.get(op, 0.0) + seconds
                    per_class = layers.setdefault(layer, {})
                    per_class[op_class] = per_class.get(op_class, 0.0) + seconds
                    classes[op_class] = classes.get(op_class, 0.0) + seconds
    ordered = lambda d: {k: round(v, 4) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}  # noqa: E731
    return {
        "model": name,
        "call_s": round(wall, 4),
        "xla_s": round(device, 4),
        "host_s": round(wall - device, 4),
        "by_layer_s": {
            layer: {"total": round(sum(c.values()), 4), **ordered(c)}
            for layer, c in sorted(layers.items(), key=lambda kv: -sum(kv[1].values()))
        },
        "by_op_class_s": ordered(classes),
        "top_ops_s": [(op, *ops[op], round(t, 4)) for op, t in sorted(per_op.items(), key=lambda kv: -kv[1])[:12]],
        "traces_added": scorer.compilations - traces,
    }


def summary(first: tuple, runs: list[tuple], per_member: dict, goal: float | None) -> dict:
    """Seconds of one version: the first call (tracing included), medians of the timed calls
    (:func:`rank_once` results) and ``per_member``."""
    prep = statistics.median(r[0] for r in runs)
    score = statistics.median(r[1] for r in runs)
    return {
        "first_rank_s": round(first[0] + first[1], 3),
        "rank_s": round(prep + score, 3),
        "prepare_s": round(prep, 3),
        "score_s": round(score, 3),
        "member_score_s": per_member,
        "goal_met": None if goal is None else prep + score <= goal,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed rank calls after the first (median reported)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small graphs, one tiny model, no XLA")
    parser.add_argument(
        "--models", nargs="+", help="ensemble members' models (default: ensemble.models of params.yaml)"
    )
    parser.add_argument(
        "--jit", choices=("params", "on", "off"), default="params", help="train.jit_compile of the export"
    )
    parser.add_argument("--kinds", nargs="+", choices=("layout", "tile"), default=["layout", "tile"])
    parser.add_argument(
        "--scope", choices=("nodes", "configurable"), default=None, help="models' config_scope (default: params.yaml)"
    )
    parser.add_argument(
        "--before", action="store_true", help="also time the session start's ops and models (throughput.session_start)"
    )
    parser.add_argument(
        "--chunks", type=int, nargs="+", default=[], help="also time scoring in items of these many configs per graph"
    )
    parser.add_argument(
        "--members",
        nargs="+",
        choices=("all", "best"),
        default=["all"],
        help="tpuperf rank --members (more than one: the others also timed, interleaved)",
    )
    parser.add_argument("--profile", metavar="MODEL", help="profile one fold of this model (profile_member)")
    parser.add_argument(
        "--cpus",
        type=int,
        metavar="N",
        help="also time scoring under train.strategy cpus with N logical CPU devices (0: one per core)",
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=REPO / "params.yaml",
        help="params file (e.g. a copy with a model setting changed)",
    )
    args = parser.parse_args(argv)
    cpus = None
    if args.cpus is not None:  # before any TensorFlow op: the CPU is split into logical devices
        from tpuperf.training.strategy import select_strategy

        cpus = select_strategy("cpus", args.cpus)
    sizes = SIZES["quick" if args.quick else "full"]
    rng = np.random.default_rng(0)
    results = []
    print(f"cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start")
    for kind in args.kinds:
        with tempfile.TemporaryDirectory() as tmp:
            params, before = (
                bench_params(
                    root,
                    args.quick,
                    args.models,
                    None if args.jit == "params" else args.jit == "on",
                    args.scope,
                    args.params,
                )
                for root in (Path(tmp), Path(tmp) / "before")
            )
            r = measure(
                kind,
                Path(tmp),
                params,
                args.repeats,
                sizes,
                rng,
                before if args.before else None,
                tuple(args.chunks),
                tuple(args.members),
                args.profile,
                cpus,
            )
        results.append(r)
        goal = "" if r["goal_s"] is None else f" (goal <= {r['goal_s']} s: {'met' if r['goal_met'] else 'NOT met'})"
        print(
            f"{r['collection']}: {r['nodes']} nodes ({r['nodes_after_pruning']} after pruning), {r['configs']} configs, "
            f"{r['members']} members, jit {r['jit_compile']}, scope {r['config_scope']}, {r['batch_shape']}; load {r['load_s']} s; first rank {r['first_rank_s']} s; "
            f"rank {r['rank_s']} s = prepare {r['prepare_s']} + score {r['score_s']}{goal}; per member and fold: "
            + ", ".join(f"{m} {s} s" for m, s in r["member_score_s"].items())
        )
        for version, b in r["versions"].items():
            print(
                f"  {version} (same process): first rank {b['first_rank_s']} s; rank {b['rank_s']} s "
                f"= prepare {b['prepare_s']} + score {b['score_s']} (time / current's x{b['rank_s'] / r['rank_s']:.2f}); "
                + ("" if b["config_layers"] == r["config_layers"] else f"per-config layers {b['config_layers']}; ")
                + f"max change of a config's ensemble score {b['max_score_change']:.2g}; per member and fold: "
                + ", ".join(
                    f"{m} {s} -> {r['member_score_s'][m]} s (x{s / r['member_score_s'][m]:.2f})"
                    for m, s in b["member_score_s"].items()
                )
            )
        if "profile" in r:
            print(f"  profile: {json.dumps(r['profile'])}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
