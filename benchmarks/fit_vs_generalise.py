"""Does a model fit its training graphs? Train tau vs OOF vs valid for one fold (issue #14 diagnosis).

Trains fold 0 of ``--model`` on one collection's cache (params.yaml's train and model settings,
``--epochs`` overriding train.epochs) exactly as ``tpuperf train`` does, then scores with the best
weights: the fold's TRAINING graphs (``train.eval_configs`` random configs each), its held-out
(OOF) graphs and the valid split. High train and low OOF/valid scores point at generalisation
(too few graphs); low train scores at what the model can represent (features, capacity).

Usage: python benchmarks/fit_vs_generalise.py --collection layout:xla:random [--cache cache]
       [--model chebsage] [--epochs 15] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from tpuperf.collection import get_collection
from tpuperf.config import load_config
from tpuperf.data.cache import CollectionCache
from tpuperf.training.batches import BucketPlan
from tpuperf.training.trainer import FoldRunner, ModelKit, assign_folds, mean_score, strategy_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default="layout:xla:random")
    parser.add_argument("--cache", default="cache", help="preprocess.out of the cache to train on")
    parser.add_argument("--model", default="chebsage")
    parser.add_argument(
        "--params", default="params.yaml", help="params file (e.g. a copy with a model setting changed)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--seed", type=int, default=None, help="override train.seed")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    changes = {"live": False, "verbose": 0}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.seed is not None:
        changes["seed"] = args.seed
    settings = dataclasses.replace(config.train, **changes)
    collection = get_collection(args.collection)
    cache = CollectionCache(args.cache, collection)
    train = list(cache.graphs("train"))
    valid = list(cache.graphs("valid"))
    fold_of = assign_folds([g.graph_id for g in train], settings.folds, settings.seed)
    fit = [g for g in train if fold_of[g.graph_id] != 0]
    held = [g for g in train if fold_of[g.graph_id] == 0]
    strategy, settings = strategy_settings(settings)
    buckets = BucketPlan.from_config(settings).plan(
        train, settings.configs_per_graph, settings.samples_per_graph[collection.kind.name]
    )
    kit = ModelKit(
        collection,
        config.model(args.model),
        settings,
        strategy,
        cache.node_feat_dim,
        train[0],
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runner = FoldRunner(kit, args.model, settings, 0, fit, held, buckets, Path(tmp), "diagnosis", "", None)
        state = runner.run()
    rng = np.random.default_rng([settings.seed, 11])
    rows = {
        g.graph_id: np.sort(rng.choice(g.num_configs, min(settings.eval_configs, g.num_configs), replace=False))
        for g in fit
    }
    train_score = mean_score(collection, fit, kit.scorer.score(fit, rows), rows)
    valid_score = mean_score(collection, valid, kit.scorer.score(valid))
    print(
        f"{collection.name} {args.model} seed {settings.seed} fold 0: {len(fit)} train / {len(held)} OOF / "
        f"{len(valid)} valid graphs; best epoch {state.best_epoch} of {state.epochs_done}; "
        f"train {train_score:.3f}, OOF {state.best_score:.3f}, valid {valid_score:.3f}; "
        f"train step {np.median([h['seconds'] for h in state.history[1:]]):.2f} s/epoch (median after the first, "
        f"which compiles) ({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
