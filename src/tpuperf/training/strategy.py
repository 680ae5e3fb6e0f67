"""Pick the tf.distribute strategy at run time: TPU, several GPUs, or the default.

The same training code runs everywhere; only the strategy and the per-step graph count
(``graphs_per_batch`` per replica) change. Batches have static shapes, so XLA on TPU
compiles one program per batch shape.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import tensorflow as tf

from tpuperf.config import STRATEGIES, TrainConfig

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


def cpu_replica_count(cpu_replicas: int) -> int:
    """``train.cpu_replicas``, or with 0 the cores this process may run on (``os.sched_getaffinity``)."""
    return cpu_replicas or len(os.sched_getaffinity(0))


def cpu_devices(replicas: int) -> list[str]:
    """The names of ``replicas`` logical CPU devices the host CPU is split into.

    The split must happen before TensorFlow initialises its logical devices (the first op, model or
    ``list_logical_devices`` call); afterwards the devices already made are returned when there are
    ``replicas`` of them, else RuntimeError says so (call :func:`select_strategy` first in the process).
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:  # devices initialised already: what they are decides below
        pass
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(names) != replicas:
        raise RuntimeError(
            f"train.strategy=cpus wants {replicas} logical CPU devices but TensorFlow already started with "
            f"{len(names)}: select the strategy before any TensorFlow op runs in this process"
        )
    return names


@functools.cache
def cpu_strategy(replicas: int) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over :func:`cpu_devices` (``replicas``), one per process and replica count: the
    collective ops of another instance would reuse its keys, and TensorFlow's runtime keeps the tensor
    shapes it first saw under a key (a later train step of another shape failed with "Shape mismatch in
    the collective instance")."""
    devices = cpu_devices(replicas)
    log.info("using MirroredStrategy over %d logical CPU devices", len(devices))
    return tf.distribute.MirroredStrategy(devices)


def is_cpu_mirrored(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` is :func:`select_strategy`'s ``cpus`` choice (MirroredStrategy over CPU devices)."""
    return isinstance(strategy, tf.distribute.MirroredStrategy) and all(
        "CPU" in d.upper() for d in strategy.extended.worker_devices
    )


def replica_batch(settings: TrainConfig, strategy: tf.distribute.Strategy) -> TrainConfig:
    """``settings`` with each replica's share of a step's batch, what batch shapes are planned with.

    TPUs and GPUs: unchanged, ``train.graphs_per_batch`` graphs per replica (the global batch grows with
    the chips). ``cpus``: the global batch is split evenly among the replicas, its graphs
    (``graphs_per_batch``) and its node budget (``buckets.max_batch_nodes``), so a step trains on as many
    graphs in as much memory as on one device, on every core. ValueError when the ``cpus`` replicas do
    not divide ``graphs_per_batch``.
    """
    replicas = strategy.num_replicas_in_sync
    if not is_cpu_mirrored(strategy):
        return settings
    if settings.graphs_per_batch % replicas:
        raise ValueError(
            f"train.graphs_per_batch ({settings.graphs_per_batch}) must be a multiple of the {replicas} CPU "
            "replicas of train.strategy=cpus: change it or train.cpu_replicas in params.yaml"
        )
    return replace(
        settings,
        graphs_per_batch=settings.graphs_per_batch // replicas,
        buckets=replace(settings.buckets, max_batch_nodes=max(1, settings.buckets.max_batch_nodes // replicas)),
    )


def select_strategy(choice: str, cpu_replicas: int) -> tf.distribute.Strategy:
    """``auto``: TPUStrategy if a TPU is found, MirroredStrategy with >1 GPU, else default.
    ``cpus``: MirroredStrategy over :func:`cpu_replica_count` (``cpu_replicas``) logical CPU devices
    (:func:`cpu_devices`; must run before TensorFlow initialises its devices).

    An explicit ``tpu``/``gpus`` that cannot be honoured is an error, not a silent fallback.
    """
    if choice not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {STRATEGIES}, not {choice!r}")
    initialize_devices()
    if choice == "cpus":
        return cpu_strategy(cpu_replica_count(cpu_replicas))
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
