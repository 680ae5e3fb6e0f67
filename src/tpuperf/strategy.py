"""Pick the tf.distribute strategy at run time: TPU, several GPUs, or the default.

The same training code runs everywhere; only the strategy and the per-step graph count
(``graphs_per_batch`` per replica) change. Batches have static shapes, so XLA on TPU
compiles one program per batch shape.
"""
from __future__ import annotations

import logging

import tpuperf  # noqa: F401  (tf-keras before TensorFlow)
import tensorflow as tf

log = logging.getLogger(__name__)
CHOICES = ("auto", "tpu", "gpus", "default")


def find_tpu():
    """A connected TPU cluster resolver, or None when no TPU is reachable."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        return None
    if not resolver.master() and not resolver.cluster_spec().as_dict():
        return None
    return resolver


def select_strategy(choice: str = "auto") -> tf.distribute.Strategy:
    """``auto``: TPUStrategy if a TPU is found, MirroredStrategy with >1 GPU, else default.

    An explicit ``tpu``/``gpus`` that cannot be honoured is an error, not a silent fallback.
    """
    if choice not in CHOICES:
        raise ValueError(f"train.strategy must be one of {CHOICES}, not {choice!r}")
    if choice in ("auto", "tpu"):
        resolver = find_tpu()
        if resolver is not None:
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            strategy = tf.distribute.TPUStrategy(resolver)
            log.info("using TPUStrategy with %d replicas", strategy.num_replicas_in_sync)
            return strategy
        if choice == "tpu":
            raise RuntimeError("train.strategy=tpu but no TPU was found")
    gpus = tf.config.list_logical_devices("GPU")
    if choice in ("auto", "gpus") and len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy([d.name for d in gpus])
        log.info("using MirroredStrategy over %d GPUs", len(gpus))
        return strategy
    if choice == "gpus":
        raise RuntimeError(f"train.strategy=gpus but {len(gpus)} GPU(s) found")
    log.info("using the default strategy (%s)", "1 GPU" if gpus else "CPU")
    return tf.distribute.get_strategy()
