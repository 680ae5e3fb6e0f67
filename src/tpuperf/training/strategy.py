"""Pick the tf.distribute strategy at run time: TPU, several GPUs, or the default.

The same training code runs everywhere; only the strategy and the per-step graph count
(``graphs_per_batch`` per replica) change. Batches have static shapes, so XLA on TPU
compiles one program per batch shape.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import tensorflow as tf

from tpuperf.config import STRATEGIES

log = logging.getLogger(__name__)
#: device files an NVIDIA driver creates: the Linux driver's control device, WSL2's GPU bridge
NVIDIA_DRIVER_FILES = ("/dev/nvidiactl", "/dev/dxg")
CUINIT_FAILURE = b"failed call to cuInit"


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver (one of :data:`NVIDIA_DRIVER_FILES` exists)."""
    return any(Path(p).exists() for p in NVIDIA_DRIVER_FILES)


def initialize_devices() -> list:
    """Initialise TensorFlow's devices; returns ``tf.config.list_physical_devices()``.

    The ``tensorflow`` wheel (which tf-keras requires; ``tensorflow-cpu`` cannot replace it) probes
    CUDA when devices are first initialised and, on a machine without an NVIDIA driver, logs the
    error ``failed call to cuInit: ... UNKNOWN ERROR (303)`` although CPU is the expected device.
    Only there (no :data:`NVIDIA_DRIVER_FILES`) the first initialisation runs with file descriptor 2
    redirected to a temporary file, and every captured line except that one is written back to
    stderr. With a driver present the error means a broken GPU setup and is left visible. Cheap
    after the first call (devices are initialised once per process).
    """
    if nvidia_driver_present():
        return tf.config.list_physical_devices()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            devices = tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True) if CUINIT_FAILURE not in line]
            os.write(2, b"".join(kept))
    return devices


def local_tpu_devices() -> list[str]:
    """TPU chips attached to this host (a TPU VM, as on Kaggle's TpuV5E8), by their device files."""
    return sorted(
        str(p) for pattern in ("/dev/accel*", "/dev/vfio/[0-9]*") for p in Path("/").glob(pattern.lstrip("/"))
    )


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
    initialize_devices()
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
