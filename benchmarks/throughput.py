"""Training and inference throughput (configs/s) of each model on the same cached batches.

Usage: python benchmarks/throughput.py [--cache cache] [--collection layout-xla-random ...]
       [--models chebsage baseline] [--steps 20] [--params params.yaml] [--json out.json] [--before]

Every model sees the very same padded batches (same static shape), so the ratio between
models is measured in one run on one machine. Configs/s counts real (unpadded) configs.
Prints one line per model and the ratio of each to the baseline. ``--before`` also measures
each model, just before it, as at the session start (:func:`session_start`: the per-config blocks'
ops of the session-start code and the model settings of :data:`SESSION_START_MODELS`, as
``rank_speed.py --before`` and ``scale.py``'s before) and prints the speed-up.

Memory: ``rss_before_mb`` is the process RSS before the model is built (TensorFlow runtime and
the collected batches) and ``peak_rss_mb`` the process's peak RSS (ru_maxrss) right after the
timed training steps. A peak is per process, so it describes one model only when the process
measures one model (benchmarks/claims.py runs one process per model).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import resource
import time
from pathlib import Path

import numpy as np
import psutil
import tensorflow as tf

from tpuperf.config import Config, ModelConfig, TrainConfig, load_config
from tpuperf.data.cache import CollectionCache
from tpuperf.models import build_model, layers
from tpuperf.training.batches import BucketPlan, make_dataset
from tpuperf.training.losses import get_loss
from tpuperf.training.trainer import batch_stream


def session_start_adjacency_product(graph, state: tf.Tensor, weights: tf.Tensor, edge_set: str) -> tf.Tensor:
    """tpuperf.models.layers.normalized_adjacency_product as before commit c1025d1: one
    weighted pooling per edge direction (same values)."""
    import tensorflow_gnn as tfgnn  # after tpuperf, which selects Keras 2 for it

    product = 0.0
    for receiver, sender in ((tfgnn.TARGET, tfgnn.SOURCE), (tfgnn.SOURCE, tfgnn.TARGET)):
        messages = tfgnn.broadcast_node_to_edges(graph, edge_set, sender, feature_value=state)
        weighted = messages * tf.reshape(weights, [-1] + [1] * (messages.shape.rank - 1))
        product += tfgnn.pool_edges_to_node(graph, edge_set, receiver, "sum", feature_value=weighted)
    return product


def session_start_directional_means(graph, state: tf.Tensor, edge_set: str) -> list[tf.Tensor]:
    """tpuperf.models.layers.directional_means as before this session's message passing change:
    tfgnn's broadcast and mean pooling, one gather per direction (same values)."""
    import tensorflow_gnn as tfgnn

    means = []
    for receiver, sender in ((tfgnn.TARGET, tfgnn.SOURCE), (tfgnn.SOURCE, tfgnn.TARGET)):
        messages = tfgnn.broadcast_node_to_edges(graph, edge_set, sender, feature_value=state)
        means.append(tfgnn.pool_edges_to_node(graph, edge_set, receiver, "mean", feature_value=messages))
    return means


def session_start_chebsage_features(graph, state: tf.Tensor, order: int, edge_set: str) -> list[tf.Tensor]:
    """tpuperf.models.layers.chebsage_features before it shared one gather: the Chebyshev basis
    and the directional means computed apart (same values)."""
    return layers.chebyshev_basis(graph, state, order, edge_set) + session_start_directional_means(
        graph, state, edge_set
    )


# model settings params.yaml changed since issue #12 was filed, per model: chebsage's per-config stack had
# 2 layers until commit cbef3e4 (README "What fewer members or a lighter per-config stack cost")
SESSION_START_MODELS = {"chebsage": {"config_layers": 2}}


def session_start_config(config: Config) -> Config:
    """``config`` with each ``models.<name>`` section as it was at the session start
    (:data:`SESSION_START_MODELS`; the other sections and models unchanged)."""
    models = {name: dataclasses.replace(m, **SESSION_START_MODELS.get(name, {})) for name, m in config.models.items()}
    return dataclasses.replace(config, models=models)


@contextlib.contextmanager
def session_start(config: Config):
    """The *before* side of every before/after speed figure (``throughput.py --before``,
    ``rank_speed.py --before``, ``scale.py``): yields :func:`session_start_config` of ``config``,
    and models traced inside compute with the session-start ops (:func:`session_start_ops`). Build
    the before side's models from the yielded config and trace them inside, so that a quoted
    before/after ratio always means the session start's ops and model settings against the current ones."""
    with session_start_ops():
        yield session_start_config(config)


@contextlib.contextmanager
def session_start_ops():
    """Models traced inside compute as the session-start code did: the residual blocks' LayerNorm
    and gelu as before commit 1497c78 (Keras' fused LayerNormalization.call, tf.nn.gelu),
    :func:`session_start_adjacency_product` and the message passing before the shared gathers
    (:func:`session_start_directional_means`, :func:`session_start_chebsage_features`); the same
    values, the old XLA program, for
    before/after figures in one process (``--before``; tests/test_models.py checks the values)."""
    names = ("gelu", "normalized_adjacency_product", "directional_means", "chebsage_features")
    saved = layers.LayerNorm.call, [getattr(layers, name) for name in names]
    layers.LayerNorm.call = tf.keras.layers.LayerNormalization.call
    old = (
        tf.nn.gelu,
        session_start_adjacency_product,
        session_start_directional_means,
        session_start_chebsage_features,
    )
    for name, op in zip(names, old):
        setattr(layers, name, op)
    try:
        yield
    finally:
        layers.LayerNorm.call = saved[0]
        for name, op in zip(names, saved[1]):
            setattr(layers, name, op)


def measure(model_params: ModelConfig, kind: str, train_batches, predict_batches, settings: TrainConfig) -> dict:
    """Seconds per step after a warm-up step (compilation excluded) for train and predict."""
    rss_before = psutil.Process().memory_info().rss / 2**20
    tf.keras.utils.set_random_seed(0)
    model = build_model(kind, model_params)
    loss_fn = get_loss(settings.loss, **settings.loss_args)
    optimizer = tf.keras.optimizers.Adam(settings.learning_rate)

    @tf.function(jit_compile=settings.jit_compile)
    def train_step(graph, runtime):
        with tf.GradientTape() as tape:
            loss = loss_fn(runtime, model(graph, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    forward = tf.function(lambda graph: model(graph, training=False), jit_compile=settings.jit_compile)
    out = {"params": 0, "rss_before_mb": rss_before}
    for name, batches, fn in (
        ("train", train_batches, lambda g, r: train_step(g, r)),
        ("predict", predict_batches, lambda g, r: forward(g)),
    ):
        fn(*batches[0][0])  # compile
        if name == "train":
            out["params"] = int(sum(np.prod(v.shape) for v in model.trainable_variables))
        start = time.perf_counter()
        for (graph, runtime), _ in batches[1:]:
            result = fn(graph, runtime)
        np.asarray(result)  # wait for the last step
        seconds = time.perf_counter() - start
        configs = sum(n for _, n in batches[1:])
        out[f"{name}_configs_per_s"] = configs / seconds
        out[f"{name}_ms_per_step"] = 1000 * seconds / (len(batches) - 1)
        if name == "train":
            out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return out


def collect(dataset_fn, steps: int) -> list:
    batches = []
    for graph, runtime in dataset_fn().take(steps + 1):
        batches.append(((graph, runtime), int(np.count_nonzero(runtime.numpy()))))
    return batches


def throughput(
    params: Config, cache_root: str, collection: str, models: list[str], steps: int, before: bool = False
) -> dict[str, dict]:
    """Per model: configs/s of training and inference on the same ``steps`` batches of ``collection``;
    with ``before`` also ``<model> (before)``, measured first as at the session start (:func:`session_start`)."""
    settings = params.train
    cache = CollectionCache(cache_root, collection)
    kind = cache.collection.kind.name
    graphs = list(cache.graphs("train"))
    one_shape = BucketPlan(
        settings.graphs_per_batch, settings.batch_slack, 1, 2.0, 1 << 62, 1 << 62
    )  # every batch alike
    buckets = one_shape.plan(graphs, settings.configs_per_graph, items=1)
    pbuckets = one_shape.plan(graphs, settings.predict_configs_per_graph, items=1)
    shape, pshape = buckets.shapes[0], pbuckets.shapes[0]
    samples = settings.samples_per_graph[kind]

    def batches(plan, samples_per_graph, seed):
        return (step[0] for _, step in batch_stream(graphs, plan, samples_per_graph, seed))

    train_batches = collect(
        lambda: make_dataset(lambda: batches(buckets, samples, 0), shape, kind, cache.node_feat_dim), steps
    )
    predict_batches = collect(
        lambda: make_dataset(lambda: batches(pbuckets, 1, 1), pshape, kind, cache.node_feat_dim), steps
    )
    print(
        f"{cache.collection.name}: train batch {shape}, predict batch {pshape}, jit_compile={settings.jit_compile}, "
        f"{steps} timed steps each"
    )
    out = {}
    for name in models:
        if before:
            with session_start(params) as old:
                out[f"{name} (before)"] = measure(old.model(name), kind, train_batches, predict_batches, settings)
        out[name] = measure(params.model(name), kind, train_batches, predict_batches, settings)
    return out


def report(results: dict[str, dict]) -> None:
    """One line per model with its ratio to the baseline (when measured) and to its own
    session-start figures (``--before``)."""
    base = results.get("baseline")
    for name, r in results.items():
        ratio = ""
        old = results.get(f"{name} (before)")
        if old:
            ratio = (
                f"  | vs before: train x{r['train_configs_per_s'] / old['train_configs_per_s']:.2f}, "
                f"predict x{r['predict_configs_per_s'] / old['predict_configs_per_s']:.2f}"
            )
        elif base and name != "baseline" and not name.endswith("(before)"):
            ratio = (
                f"  | vs baseline: train x{r['train_configs_per_s'] / base['train_configs_per_s']:.2f}, "
                f"predict x{r['predict_configs_per_s'] / base['predict_configs_per_s']:.2f}"
            )
        print(
            f"{name:>18}: {r['params']:>7} params, train {r['train_configs_per_s']:8.0f} configs/s "
            f"({r['train_ms_per_step']:.0f} ms/step), predict {r['predict_configs_per_s']:8.0f} configs/s "
            f"({r['predict_ms_per_step']:.0f} ms/step), peak RSS {r['peak_rss_mb']:.0f} MB{ratio}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cache", default=None, help="cache root (default: preprocess.out)")
    parser.add_argument("--collection", nargs="+", default=["layout-xla-random"])
    parser.add_argument("--models", nargs="+", default=["chebsage", "sage", "cheb", "baseline"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="also write {collection: {model: figures}} here")
    parser.add_argument(
        "--before", action="store_true", help="also measure each model as at the session start (session_start)"
    )
    args = parser.parse_args()

    params = load_config(args.params)
    results = {}
    for collection in args.collection:
        results[collection] = throughput(
            params, args.cache or params.preprocess.out, collection, args.models, args.steps, args.before
        )
        report(results[collection])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
