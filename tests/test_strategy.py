"""Strategy selection on a machine without TPU or GPU, and the multi-replica scoring path."""
import subprocess
import sys
import textwrap

import pytest

import tpuperf  # noqa: F401
import tensorflow as tf

from tpuperf.training.strategy import find_tpu, select_strategy


def test_auto_on_cpu_is_the_default_strategy():
    assert find_tpu() is None
    strategy = select_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1


@pytest.mark.parametrize("choice,message", [("tpu", "no TPU"), ("gpus", "GPU")])
def test_explicit_choices_that_cannot_be_met_fail_loudly(choice, message):
    with pytest.raises(RuntimeError, match=message):
        select_strategy(choice)


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


def test_unknown_choice_is_rejected():
    with pytest.raises(ValueError, match="train.strategy"):
        select_strategy("cluster")


def test_two_replicas_score_like_one():
    """MirroredStrategy over two logical CPUs gives the same scores as the default strategy.

    Runs in a subprocess: logical devices must be configured before TensorFlow starts.
    """
    script = textwrap.dedent(
        """
        import numpy as np, sys
        sys.path.insert(0, "tests")
        import tpuperf, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from conftest import model_config
        from graph_factory import fake_graph
        from tpuperf.training.batches import plan_batch_shape
        from tpuperf.models import build_model
        from tpuperf.training.scoring import Scorer
        rng = np.random.default_rng(0)
        graphs = [fake_graph(rng, "layout", n, 7, name=f"g{i}") for i, n in enumerate((9, 14, 5, 11, 8))]
        shape = plan_batch_shape(graphs, 2, 4, 1.0)
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with mirrored.scope():
            model = build_model("layout", model_config(**{"conv": "chebsage", "units": 8, "shared_layers": 1, "config_layers": 1}))
            one = Scorer(model, shape, "layout", 6, tf.distribute.get_strategy(), jit_compile=False).score(graphs)
        two = Scorer(model, shape, "layout", 6, mirrored, jit_compile=False).score(graphs)
        assert mirrored.num_replicas_in_sync == 2
        for g in graphs:
            np.testing.assert_allclose(two[g.graph_id], one[g.graph_id], rtol=1e-4, atol=1e-5)
        print("OK", sum(len(v) for v in two.values()))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK 35" in done.stdout
