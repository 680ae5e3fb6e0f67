"""Strategy selection on a machine without TPU or GPU, and the multi-replica scoring path."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from tpuperf.training.strategy import find_tpu, select_strategy


def test_auto_on_cpu_is_the_default_strategy():
    assert find_tpu() is None
    strategy = select_strategy("auto", 0)
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1


@pytest.mark.parametrize("choice,message", [("tpu", "no TPU"), ("gpus", "GPU")])
def test_explicit_choices_that_cannot_be_met_fail_loudly(choice, message):
    with pytest.raises(RuntimeError, match=message):
        select_strategy(choice, 0)


def test_a_tpu_vm_is_found_through_its_local_devices(monkeypatch):
    """On a TPU VM the default resolver finds nothing; the local chips must be used."""
    from tpuperf.training import strategy as strategy_module

    made = []

    class FakeResolver:
        def __init__(self, tpu=None):
            made.append(tpu)

        def master(self):
            return ""

        def cluster_spec(self):
            return tf.train.ClusterSpec({})

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver)
    monkeypatch.setattr(strategy_module, "local_tpu_devices", lambda: ["/dev/accel0"])
    assert isinstance(find_tpu(), FakeResolver) and made == [None, "local"]
    monkeypatch.setattr(strategy_module, "local_tpu_devices", lambda: [])
    made.clear()
    assert find_tpu() is None and made == [None]


def test_cpus_needs_its_devices_before_tensorflow_starts_and_a_batch_it_can_split():
    """In this process TensorFlow's devices exist already (one CPU): cpus over 2 replicas is refused with
    the reason, over 1 it is a MirroredStrategy on that CPU; the global batch (graphs, node budget) is split
    evenly among 2 replicas or refused."""
    from tpuperf.config import load_config
    from tpuperf.training.strategy import cpu_replica_count, replica_batch

    assert len(tf.config.list_logical_devices("CPU")) == 1  # initialises the devices if no test did
    with pytest.raises(RuntimeError, match="wants 2 logical CPU devices but TensorFlow already started with 1"):
        select_strategy("cpus", 2)
    one = select_strategy("cpus", 1)
    assert isinstance(one, tf.distribute.MirroredStrategy) and one.num_replicas_in_sync == 1
    assert cpu_replica_count(0) == len(os.sched_getaffinity(0)) and cpu_replica_count(3) == 3

    class TwoCpus(tf.distribute.MirroredStrategy):
        num_replicas_in_sync = 2

    two = TwoCpus(["/cpu:0"])
    settings = dataclasses.replace(load_config("params.yaml").train, graphs_per_batch=4)
    split = replica_batch(settings, two)
    assert (split.graphs_per_batch, split.buckets.max_batch_nodes) == (2, settings.buckets.max_batch_nodes // 2)
    assert split.buckets.train_config_nodes == settings.buckets.train_config_nodes
    assert replica_batch(settings, one) == settings
    assert replica_batch(settings, tf.distribute.get_strategy()) == settings  # TPUs, GPUs, default: per replica
    with pytest.raises(ValueError, match=r"train.graphs_per_batch \(3\) must be a multiple of the 2 CPU replicas"):
        replica_batch(dataclasses.replace(settings, graphs_per_batch=3), two)


def test_unknown_choice_is_rejected():
    with pytest.raises(ValueError, match="train.strategy"):
        select_strategy("cluster", 0)


def test_two_replicas_score_like_one():
    """train.strategy=cpus (MirroredStrategy over two logical CPUs) gives the same XLA-compiled scores as the
    default strategy, with the model's variables mirrored (built in its scope) as training builds them.

    Runs in a subprocess: logical devices must be configured before TensorFlow starts.
    """
    script = textwrap.dedent(
        """
        import numpy as np, sys
        sys.path.insert(0, "tests")
        import tpuperf, tensorflow as tf
        from tpuperf.training.strategy import select_strategy
        mirrored = select_strategy("cpus", 2)
        from conftest import model_config
        from graph_factory import fake_graph
        from tpuperf.training.batches import BucketPlan
        from tpuperf.models import build_model
        from tpuperf.training.scoring import Scorer
        rng = np.random.default_rng(0)
        graphs = [fake_graph(rng, "layout", n, 7, name=f"g{i}") for i, n in enumerate((9, 14, 5, 11, 8))]
        plan = BucketPlan(2, 1.0, count=2, growth=2.0, max_batch_nodes=10**6, max_config_nodes=10**9)
        assert len(plan.plan(graphs, 4, items=2).shapes) == 2
        with mirrored.scope():
            model = build_model("layout", model_config(**{"conv": "chebsage", "units": 8, "shared_layers": 1, "config_layers": 1}))
            one = Scorer(model, plan, 4, "layout", 6, tf.distribute.get_strategy(), jit_compile=True).score(graphs)
        scorer = Scorer(model, plan, 4, "layout", 6, mirrored, jit_compile=True)
        two = scorer.score(graphs)
        assert mirrored.num_replicas_in_sync == 2 and scorer.compilations == 2 * 2  # per shape, per replica device
        for g in graphs:
            np.testing.assert_allclose(two[g.graph_id], one[g.graph_id], rtol=1e-4, atol=1e-5)
        print("OK", sum(len(v) for v in two.values()))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK 35" in done.stdout


def test_two_replicas_train_like_one_on_the_same_global_batch():
    """train.strategy=cpus (MirroredStrategy over two logical CPUs): each replica takes half of a global
    batch; the global loss and the weights of XLA-compiled steps follow one replica trained on the whole
    batch, over steps of two batch shapes (the path a TPU v5e-8 takes with 8 replicas). Tolerance:
    losses 1e-4 relative, weights 1e-3 absolute (float32 sums in a different order; Adam rescales tiny
    gradients)."""
    script = textwrap.dedent(
        """
        import numpy as np, sys, yaml
        sys.path.insert(0, "tests")
        import tpuperf, tensorflow as tf
        from tpuperf.training.strategy import select_strategy
        mirrored = select_strategy("cpus", 2)
        from graph_factory import fake_graph
        from tpuperf.collection import get_collection
        from tpuperf.training.batches import BatchItem, BatchShape
        import dataclasses
        from tpuperf.config import load_config
        from tpuperf.training.trainer import ModelKit
        config = load_config("params.yaml")
        settings = dataclasses.replace(config.train, jit_compile=True, learning_rate=0.01)
        model_params = dataclasses.replace(config.model("chebsage"), units=8, config_units=8, shared_layers=1, config_layers=1)
        rng = np.random.default_rng(0)
        small = [fake_graph(rng, "layout", n, 9, name=f"s{i}") for i, n in enumerate((9, 14, 5, 11, 8, 12))]
        big = [fake_graph(rng, "layout", n, 9, name=f"b{i}") for i, n in enumerate((30, 34, 28, 31, 29, 33))]
        shapes = {"small": BatchShape(2, 32, 64, 4, 32, 64), "big": BatchShape(2, 80, 160, 4, 80, 160)}
        collection = get_collection("layout:xla:random")
        two = ModelKit(collection, model_params, settings, mirrored, 6, small[0])
        one = ModelKit(collection, model_params, settings, tf.distribute.get_strategy(), 6, small[0])
        two.reset(0, steps_per_epoch=6)
        one.reset(0, steps_per_epoch=6)
        start = np.concatenate([w.ravel() for w in one.model.get_weights()])
        assert mirrored.num_replicas_in_sync == 2
        losses = []
        for step in range(6):
            name = ("small", "big")[step % 2]
            graphs, shape = (small, big)[step % 2], shapes[name]
            items = [BatchItem(g, rng.choice(9, size=4, replace=False)) for g in rng.permutation(graphs)[:4]]
            wide = BatchShape(
                2 * shape.graphs, 2 * shape.nodes, 2 * shape.edges, shape.configs, 2 * shape.config_nodes, 2 * shape.config_edges
            )
            losses.append((two.train_step([items[:2], items[2:]], shape), one.train_step([items], wide)))
        losses = np.array(losses)
        np.testing.assert_allclose(losses[:, 0], losses[:, 1], rtol=1e-4)
        after_two, after_one = (np.concatenate([w.ravel() for w in k.model.get_weights()]) for k in (two, one))
        gap, moved = np.abs(after_two - after_one), np.abs(after_one - start)
        print("gap", gap.max(), gap.mean(), "moved", moved.max(), moved.mean())
        assert gap.mean() < 0.01 * moved.mean() and gap.max() < settings.learning_rate, (gap.mean(), moved.mean(), gap.max())
        assert one.train_compilations == 2 and two.train_compilations == 2 * 2  # per shape, per replica device
        print("OK", np.round(losses[:, 0], 4).tolist())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "OK" in done.stdout


def _stderr_of(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DONE" in done.stdout
    return done.stderr


def test_cpu_machine_gets_no_cuinit_error_but_every_other_stderr_line():
    """Without an NVIDIA driver, TensorFlow's spurious ``failed call to cuInit`` error is dropped
    where training (select_strategy) initialises devices; a line written to fd 2 during that
    initialisation, as any other C++ log line would be, still comes through."""
    from tpuperf.training.strategy import nvidia_driver_present

    if nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver: the cuInit error is real there and not filtered")
    plain = _stderr_of("""
        import tpuperf, tensorflow as tf
        tf.config.list_physical_devices()
        print("DONE")
    """)
    if "failed call to cuInit" not in plain:
        pytest.skip("this TensorFlow build does not log the cuInit error on this machine: nothing to filter")
    filtered = _stderr_of("""
        import os, tpuperf, tensorflow as tf
        from tpuperf.training.strategy import select_strategy
        listing = tf.config.list_physical_devices
        def noisy(*args):
            os.write(2, b"E0000 another C++ error line\\n")
            return listing(*args)
        tf.config.list_physical_devices = noisy
        assert select_strategy("auto", 0).num_replicas_in_sync == 1
        print("DONE")
    """)
    assert "cuInit" not in filtered
    assert "E0000 another C++ error line\n" in filtered


def test_cpus_training_resumes_exactly_and_refuses_a_batch_it_cannot_split(tmp_path):
    """train_collection with train.strategy=cpus over 2 replicas (graphs_per_batch 2: one graph each): a run
    killed after its first epoch resumes to the uninterrupted run's OOF/valid scores and predictions;
    graphs_per_batch 3 stops with the knob named, before anything is written."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, "tests")
        import numpy as np, polars as pl
        from test_train import COLLECTION, small_params
        from tpuperf.data.preprocess import preprocess_collection
        from tpuperf.data.synthetic import write_dataset
        from tpuperf.training import trainer
        root = Path({str(tmp_path)!r})
        write_dataset(root / "data", preset="tiny", seed=0)
        cpus = dict(strategy="cpus", cpu_replicas=2, epochs=2)
        config = small_params(root / "cache", root / "a", **cpus)
        preprocess_collection(root / "data", root / "cache", COLLECTION, config.preprocess, progress=False)
        try:
            trainer.train_collection(COLLECTION, "sage", small_params(root / "cache", root / "odd", graphs_per_batch=3, **cpus))
        except trainer.TrainingError as exc:
            assert "graphs_per_batch (3) must be a multiple of the 2 CPU replicas" in str(exc), exc
        else:
            raise AssertionError("graphs_per_batch 3 on 2 CPU replicas was accepted")
        assert not (root / "odd").exists()
        straight = trainer.train_collection(COLLECTION, "sage", config)
        end_epoch = trainer.FoldRunner.end_epoch
        def killed(self, epoch, logs, seconds):
            end_epoch(self, epoch, logs, seconds)
            raise KeyboardInterrupt
        trainer.FoldRunner.end_epoch = killed
        try:
            trainer.train_collection(COLLECTION, "sage", small_params(root / "cache", root / "b", **cpus))
        except KeyboardInterrupt:
            pass
        trainer.FoldRunner.end_epoch = end_epoch
        resumed = trainer.train_collection(COLLECTION, "sage", small_params(root / "cache", root / "b", **cpus))
        for a, b in zip(straight["folds"], resumed["folds"]):
            assert a["best_epoch"] == b["best_epoch"] and abs(a["oof_score"] - b["oof_score"]) < 1e-6, (a, b)
            assert abs(a["valid_score"] - b["valid_score"]) < 1e-6, (a, b)
        run = Path("runs") / COLLECTION.slug / "sage" / "predictions" / "fold_0.parquet"
        pa, pb = (pl.read_parquet(root / x / run)["pred"].to_numpy() for x in "ab")
        np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-6)
        print("OK", len(pa))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "resuming after epoch 1" in done.stdout and "OK" in done.stdout
