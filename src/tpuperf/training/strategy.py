"""Pick the tf.distribute strategy at run time: TPU, several GPUs, or the default.

The same training code runs everywhere; only the strategy and the per-step graph count
(``graphs_per_batch`` per replica) change. Batches have static shapes, so XLA on TPU
compiles one program per batch shape.
"""
from __future__ import annotations

import logging
from pathlib import Path

import tpuperf  # noqa: F401  (tf-keras before TensorFlow)
import tensorflow as tf
from tpuperf.config import STRATEGIES

log = logging.getLogger(__name__)


def local_tpu_devices() -> list[str]:
    """TPU chips attached to this host (a TPU VM, as on Kaggle's TpuV5E8), by their device files."""
    return sorted(str(p) for pattern in ("/dev/accel*", "/dev/vfio/[0-9]*") for p in Path("/").glob(pattern.lstrip("/")))


def find_tpu():
    """A TPU cluster resolver, or None when no TPU is reachable.

    A TPU node (TPU_NAME / metadata server) answers the default resolver with a master
    address; a TPU VM has its chips locally and needs ``tpu="local"``, which is only tried
    when TPU device files exist (elsewhere it would not fail, only mislead).
    """
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        if resolver.master() or resolver.cluster_spec().as_dict():
            return resolver
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        pass
    if local_tpu_devices():
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
    return None


def select_strategy(choice: str = "auto") -> tf.distribute.Strategy:
    """``auto``: TPUStrategy if a TPU is found, MirroredStrategy with >1 GPU, else default.

    An explicit ``tpu``/``gpus`` that cannot be honoured is an error, not a silent fallback.
    """
    if choice not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {STRATEGIES}, not {choice!r}")
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
