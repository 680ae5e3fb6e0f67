"""Size-bucketed static batch shapes: planning, padding efficiency, one compilation per bucket."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import config_with, model_config, params_with
from graph_factory import fake_graph

from tpuperf.config import Config, ConfigError
from tpuperf.training.batches import BatchItem, BatchShape, BucketPlan, SlotUsage, pack

REPO = Path(__file__).resolve().parents[1]
SIZES = (6, 7, 9, 10, 12, 30, 34, 40, 44, 150, 170)
BUDGETS = {"train_config_nodes": 10**9, "predict_config_nodes": 10**9}


def mixed_graphs(sizes=SIZES, configs: int = 6):
    rng = np.random.default_rng(0)
    return [fake_graph(rng, "layout", n, configs, name=f"g{i}_{n}") for i, n in enumerate(sizes)]


def fill(graphs, buckets, samples: int = 4) -> SlotUsage:
    """Padding of ``samples`` items per graph (as training draws them), shuffled."""
    usage = SlotUsage()
    items = [BatchItem(g, np.arange(min(g.num_configs, buckets.configs(g)))) for g in graphs for _ in range(samples)]
    items = [items[i] for i in np.random.default_rng(0).permutation(len(items))]
    for shape, group in zip(buckets.shapes, buckets.split(items)):
        for batch in pack(group, shape):
            usage.add(batch, shape)
    return usage


def test_buckets_are_geometric_fit_their_graphs_and_drop_empty_ones():
    graphs = mixed_graphs()
    buckets = BucketPlan(4, 1.0, count=3, growth=4.0, max_batch_nodes=10**6, max_config_nodes=10**9).plan(
        graphs, 5, items=16
    )
    assert buckets.bounds == (11, 43, 170)  # ceil(170 / 16), ceil(170 / 4), the largest graph
    assert all(s.configs == 5 for s in buckets.shapes)
    groups = buckets.split([BatchItem(g, np.arange(1)) for g in graphs])
    assert [[item.graph.num_nodes for item in group] for group in groups] == [
        [6, 7, 9, 10],
        [12, 30, 34, 40],
        [44, 150, 170],
    ]
    for shape, group in zip(buckets.shapes, groups):
        assert all(
            shape.fits(i.graph.num_nodes, i.graph.num_edges, 1, i.graph.num_config_nodes, i.graph.num_config_edges)
            for i in group
        )
        assert shape.nodes % 8 == 0 and shape.graphs == 4
    # a bucket range without graphs gets no shape (no compilation)
    sparse = BucketPlan(4, 1.25, count=3, growth=4.0, max_batch_nodes=10**6, max_config_nodes=10**9).plan(
        mixed_graphs(sizes=(6, 7, 170)), 5, items=4
    )
    assert sparse.bounds == (11, 170) and len(sparse.shapes) == 2
    assert (
        len(
            BucketPlan(4, 1.25, count=1, growth=4.0, max_batch_nodes=10**6, max_config_nodes=10**9)
            .plan(graphs, 5, items=8)
            .shapes
        )
        == 1
    )


def test_buckets_that_would_not_save_padding_are_merged():
    """Few items per graph: a bucket of a few graphs fills no batch, so the split is not kept."""
    graphs = mixed_graphs()
    plan = BucketPlan(4, 1.0, count=3, growth=4.0, max_batch_nodes=10**6, max_config_nodes=10**9)
    assert plan.plan(graphs, 5, items=1).bounds == (11, 170)  # 4 + 4 + 3 graphs: the middle bucket is merged
    assert plan.plan(graphs, 5, items=16).bounds == (11, 43, 170)  # 16 items per graph fill the buckets' batches


def test_graphs_per_batch_shrink_with_the_bucket_size_down_to_one():
    graphs = mixed_graphs()
    buckets = BucketPlan(4, 1.0, count=3, growth=4.0, max_batch_nodes=100, max_config_nodes=10**9).plan(
        graphs, 5, items=8
    )
    # mean nodes 8, 29 and 121.3: 100 // 8 = 12 -> 4 (the cap), 100 // 29 = 3, 100 // 121.3 = 0 -> 1 (alone)
    assert [s.graphs for s in buckets.shapes] == [4, 3, 1]
    assert buckets.shapes[2].nodes >= 171  # the largest graph still fits, alone


def test_bucketing_raises_padding_efficiency_on_mixed_sizes():
    """The issue's case: one big graph among small ones no longer pads every batch to its size."""
    graphs = mixed_graphs(sizes=(6, 7, 9, 10, 12) * 4 + (400,))
    one = fill(
        graphs,
        BucketPlan(4, 1.25, count=1, growth=4.0, max_batch_nodes=10**6, max_config_nodes=10**9).plan(
            graphs, 5, items=4
        ),
    )
    three = fill(
        graphs,
        BucketPlan(4, 1.25, count=3, growth=4.0, max_batch_nodes=10**6, max_config_nodes=10**9).plan(
            graphs, 5, items=4
        ),
    )
    assert one.nodes == three.nodes == 4 * sum(g.num_nodes for g in graphs)
    assert one.node_fill < 0.3 and three.node_fill > 0.6, (one.node_fill, three.node_fill)
    assert three.configs == one.configs == 4 * 5 * len(graphs)


def test_packing_is_first_fit_and_closes_full_batches():
    """A small item fills the room a large one left in an earlier batch; a batch with every graph slot taken is closed."""
    rng = np.random.default_rng(0)
    items = [BatchItem(fake_graph(rng, "tile", n, 2, name=f"n{n}"), np.arange(1)) for n in (6, 5, 4, 3)]
    batches = pack(
        items, BatchShape(graphs=3, nodes=11, edges=100, configs=2, config_nodes=8, config_edges=8)
    )  # room for 10 nodes
    assert [[item.graph.num_nodes for item in batch] for batch in batches] == [[6, 4], [5, 3]]  # in order: 3 batches
    small = [BatchItem(fake_graph(rng, "tile", 2, 2, name=f"s{i}"), np.arange(1)) for i in range(5)]
    assert [[item.graph.graph_id for item in batch] for batch in pack(small, BatchShape(2, 64, 100, 2, 8, 8))] == [
        ["s0", "s1"],
        ["s2", "s3"],
        ["s4"],
    ]


@pytest.mark.parametrize(
    "sizes,bounds,per_batch,nodes,configs,old_nodes",
    [
        # unpruned layout graphs drawn with the real size distribution (benchmarks/scale.py
        # draw_sizes: SCALES["nlp"] with rng seed 12, SCALES["xla"] with seed 15)
        ((4478, 7469, 2901, 9054, 1181, 15593, 4321, 3535), (3899, 7797, 15593), [2, 1, 1], 0.747, 0.861, 0.546),
        ((3183, 6575, 3151, 44000, 11749, 30483, 16609, 2869), (11000, 22000, 44000), [1, 1, 1], 0.803, 1.0, 0.586),
    ],
)
def test_params_yaml_defaults_fill_70_percent_of_real_size_slots(sizes, bounds, per_batch, nodes, configs, old_nodes):
    """Issue #12's goal on real-size graphs (4 items per graph; max_batch_nodes leaves most of them
    alone in a batch, so a bucket bound far above a graph is padding): params.yaml's buckets fill
    >= 70% of node and config slots; the previous knobs (slack 1.25, growth 4) put graphs of a
    quarter of the largest one's size into its bucket."""
    graphs = mixed_graphs(sizes=sizes, configs=40)
    train = config_with({}).train
    buckets = BucketPlan.from_config(train).plan(graphs, 32, items=4)
    usage = fill(graphs, buckets)
    assert buckets.bounds == bounds and [s.graphs for s in buckets.shapes] == per_batch
    assert usage.node_fill == pytest.approx(nodes, abs=1e-3) and usage.config_fill == pytest.approx(configs, abs=1e-3)
    old = BucketPlan(
        train.graphs_per_batch, 1.25, 3, 4.0, train.buckets.max_batch_nodes, train.buckets.train_config_nodes
    ).plan(graphs, 32, items=4)
    assert len(old.shapes) == 2 and fill(graphs, old).node_fill == pytest.approx(old_nodes, abs=1e-3)


def test_a_graph_above_the_largest_bucket_is_a_clear_error():
    graphs = mixed_graphs()
    buckets = BucketPlan(4, 1.25, count=3, growth=4.0, max_batch_nodes=10**6, max_config_nodes=10**9).plan(
        graphs[:5], 5, items=4
    )
    with pytest.raises(
        ValueError, match=r"graph g10_170 has 170 nodes, more than the largest batch bucket \(12 nodes\).*train.buckets"
    ):
        buckets.index(graphs[-1])


@pytest.mark.parametrize(
    "buckets,message",
    [
        ({"count": 3, "growth": 4.0}, "train.buckets.max_batch_nodes"),
        ({"count": 0, "growth": 4.0, "max_batch_nodes": 10, **BUDGETS}, "train.buckets.count"),
        ({"count": 2, "growth": 1.0, "max_batch_nodes": 10, **BUDGETS}, "train.buckets.growth"),
        ({"count": 2, "growth": 2.0, "max_batch_nodes": 10, "train_config_nodes": 10}, "predict_config_nodes missing"),
        ({"count": 2, "growth": 2.0, "max_batch_nodes": 10, **BUDGETS, "train_config_nodes": 0}, "train_config_nodes"),
    ],
)
def test_bad_bucket_params_name_the_key(buckets, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict({**params_with({}), "train": {**params_with({})["train"], "buckets": buckets}})


def test_params_yaml_defaults_plan_buckets():
    plan = BucketPlan.from_config(config_with({}).train)
    assert plan.count >= 2 and len(plan.plan(mixed_graphs(), 8, items=4).shapes) >= 2


def test_jit_compiled_train_step_compiles_once_per_bucket():
    """jit_compile=True: steps alternate between two buckets; the step is traced twice, not per step
    (layout only: each XLA compilation of a train step costs ~15 s on the shared CI cores)."""
    import tensorflow as tf

    from tpuperf.collection import get_collection
    from tpuperf.training.trainer import ModelKit, batch_stream

    config = config_with(
        {
            "train": {
                "graphs_per_batch": 2,
                "batch_slack": 1.25,  # the split of these six graphs saves slots (at 1.1 it would not)
                "configs_per_graph": 4,
                "jit_compile": True,
                "buckets": {"count": 2, "growth": 4.0, "max_batch_nodes": 10**6, "train_config_nodes": 10**9},
            }
        }
    )
    settings = config.train
    graphs = mixed_graphs(sizes=(6, 8, 9, 40, 44, 48))
    buckets = BucketPlan.from_config(settings).plan(graphs, settings.configs_per_graph, items=2)
    assert len(buckets.shapes) == 2
    model = dataclasses.replace(config.model("chebsage"), units=8, config_units=8, shared_layers=1, config_layers=1)
    collection = get_collection("layout:xla:random")
    kit = ModelKit(collection, model, settings, tf.distribute.get_strategy(), 6, graphs[0])
    kit.reset(0, steps_per_epoch=8)
    stream = batch_stream(graphs, buckets, samples=2, seed=0)
    seen, losses = [], []
    for _ in range(8):
        bucket, batches = next(stream)
        seen.append(bucket)
        losses.append(kit.train_step(batches, buckets.shapes[bucket]))
    assert set(seen) == {0, 1} and all(np.isfinite(losses))
    assert kit.train_compilations == 2
    scores = kit.scorer.score(graphs)
    # scoring plans its own buckets: one item per graph, packed first fit into one shape, saves
    # no slots split in two, so the forward pass compiles once
    assert kit.scorer.plan.plan(graphs, settings.predict_configs_per_graph, items=1).bounds == (48,)
    assert kit.scorer.compilations == 1 and all(np.isfinite(v).all() for v in scores.values())


def test_small_budgets_are_rounded_finely_large_ones_to_64():
    from tpuperf.training.batches import plan_batch_shape

    for nodes, budget in ((30, 32), (200, 208), (1000, 1024), (5000, 5056)):
        shape = plan_batch_shape(mixed_graphs(sizes=(nodes,)), 1, 4, 1.0)
        assert shape.nodes == budget and shape.nodes - (nodes + 1) <= (nodes + 1) / 8, (nodes, shape)


def test_scorer_plans_per_scored_set_and_reuses_a_close_compiled_shape():
    """Shapes come from the graphs scored; a compiled shape at most 25% larger is reused, with
    the same scores as a fresh plan (padding does not change a graph's scores)."""
    import tensorflow as tf

    from tpuperf.models import build_model
    from tpuperf.training.scoring import Scorer

    rng = np.random.default_rng(1)
    model = build_model("layout", model_config(conv="sage"))
    plan = BucketPlan(2, 1.0, count=1, growth=2.0, max_batch_nodes=10**6, max_config_nodes=10**9)
    first = [fake_graph(rng, "layout", n, 5, name=f"a{n}") for n in (30, 31)]
    close = [fake_graph(rng, "layout", n, 5, name=f"b{n}") for n in (27, 28)]
    far = [fake_graph(rng, "layout", n, 5, name=f"c{n}") for n in (9, 10)]
    scorer = Scorer(model, plan, 4, "layout", 6, tf.distribute.get_strategy(), jit_compile=False)
    scorer.score(first)  # builds the model's variables too (a second trace)
    compiled = scorer.compilations
    reused = scorer.score(close)
    assert scorer.compilations == compiled
    fresh = Scorer(model, plan, 4, "layout", 6, tf.distribute.get_strategy(), jit_compile=False).score(close)
    for gid in fresh:
        np.testing.assert_allclose(reused[gid], fresh[gid], rtol=1e-5, atol=1e-6)
    scorer.score(far)  # far smaller: its own shape, not padded to the first set's
    assert scorer.compilations == compiled + 1


def test_config_node_budget_lowers_configs_only_in_buckets_of_large_graphs():
    """node slots x configs per batch stay within max_config_nodes: the bucket of the 170-node graph
    (alone, 176 slots) gets 1000 // 176 = 5 configs, the smaller ones keep 8; never below 2."""
    graphs = mixed_graphs()
    plan = BucketPlan(4, 1.0, count=3, growth=4.0, max_batch_nodes=100, max_config_nodes=1000)
    buckets = plan.plan(graphs, 8, items=8)
    assert [(s.nodes, s.configs) for s in buckets.shapes] == [(40, 8), (88, 8), (176, 5)]
    assert all(s.nodes * s.configs <= 1000 for s in buckets.shapes)
    assert buckets.configs(graphs[-1]) == 5 and buckets.configs(graphs[0]) == 8
    tight = dataclasses.replace(plan, max_config_nodes=10).plan(graphs, 8, items=8)
    assert [s.configs for s in tight.shapes] == [2, 2, 2]
    assert [s.configs for s in dataclasses.replace(plan, max_config_nodes=10).plan(graphs, 1, items=8).shapes] == [
        1
    ] * 3


def test_training_items_draw_their_buckets_configs():
    from tpuperf.training.trainer import batch_stream

    graphs = mixed_graphs(configs=12)
    buckets = BucketPlan(4, 1.0, count=3, growth=4.0, max_batch_nodes=100, max_config_nodes=1000).plan(
        graphs, 8, items=2
    )
    stream = batch_stream(graphs, buckets, samples=2, seed=0)
    rows = {}
    for _ in range(40):
        bucket, batches = next(stream)
        for item in batches[0]:
            rows.setdefault(item.graph.graph_id, set()).add(len(item.rows))
            assert len(set(item.rows.tolist())) == len(item.rows)
    assert rows.keys() == {g.graph_id for g in graphs}
    assert {g.graph_id: rows[g.graph_id] for g in graphs} == {
        g.graph_id: {8 if g.num_nodes <= 43 else 5} for g in graphs
    }


def test_scores_do_not_depend_on_the_config_node_budget():
    """A tight predict budget scores in chunks of 6 and 2 configs instead of 7: the same scores."""
    import tensorflow as tf

    from tpuperf.models import build_model
    from tpuperf.training.scoring import Scorer

    rng = np.random.default_rng(2)
    model = build_model("layout", model_config(conv="sage"))
    graphs = [fake_graph(rng, "layout", n, 7, name=f"g{n}") for n in (8, 9, 60, 64)]
    loose = BucketPlan(2, 1.0, count=2, growth=4.0, max_batch_nodes=10**6, max_config_nodes=10**9)
    tight = dataclasses.replace(loose, max_config_nodes=150)
    assert [(s.nodes, s.configs) for s in tight.plan(graphs, 7, items=1).shapes] == [(24, 6), (128, 2)]
    scored = [
        Scorer(model, plan, 7, "layout", 6, tf.distribute.get_strategy(), jit_compile=False).score(graphs)
        for plan in (loose, tight)
    ]
    for g in graphs:
        assert scored[0][g.graph_id].shape == (7,)
        np.testing.assert_allclose(scored[1][g.graph_id], scored[0][g.graph_id], rtol=1e-5, atol=1e-6)
