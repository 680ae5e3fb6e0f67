"""Layers against dense reference computations; padding and batching invariances; XLA compile."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import model_config
from graph_factory import fake_graph

from tpuperf.models import build_model
from tpuperf.models import layers as L
from tpuperf.training.batches import (
    CONFIG_EDGES,
    CONFIG_NODES,
    EDGES,
    NODES,
    BatchItem,
    BatchShape,
    BucketPlan,
    pack,
    to_arrays,
    to_graph_tensor,
)
from tpuperf.training.scoring import Scorer, chunk_items

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from throughput import (  # noqa: E402
    session_start_adjacency_product,
    session_start_chebsage_features,
    session_start_ops,
)

FEAT = 6


def graph_tensor(items, shape, kind):
    arrays = to_arrays(items, shape, kind, FEAT)
    return to_graph_tensor({k: tf.constant(v) for k, v in arrays.items()}, kind)


def dense_adjacency(g):
    n = g.num_nodes
    a = np.zeros((n, n))
    for u, v in g.edge_index:
        a[u, v] += 1
        a[v, u] += 1
    return a


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_chebyshev_basis_matches_dense_recurrence(rng):
    g = fake_graph(rng, "tile", 9, 3)
    shape = BatchShape(graphs=2, nodes=16, edges=32, configs=3, config_nodes=16, config_edges=32)
    graph, _ = graph_tensor([BatchItem(g, np.arange(3))], shape, "tile")
    x = rng.normal(size=(16, 4)).astype(np.float32)
    basis = L.chebyshev_basis(graph, tf.constant(x), order=4)

    a = dense_adjacency(g)
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0)
    lap = -(inv[:, None] * a * inv[None, :])
    t = [x[:9], lap @ x[:9]]
    for _ in range(2, 4):
        t.append(2 * lap @ t[-1] - t[-2])
    for got, want in zip(basis, t):
        np.testing.assert_allclose(got.numpy()[:9], want, rtol=1e-5, atol=1e-5)


def test_gcn_and_sage_match_dense_reference(rng):
    g = fake_graph(rng, "tile", 7, 2)
    shape = BatchShape(graphs=1, nodes=8, edges=16, configs=2, config_nodes=8, config_edges=16)
    graph, _ = graph_tensor([BatchItem(g, np.arange(2))], shape, "tile")
    x = rng.normal(size=(8, 3)).astype(np.float32)

    gcn = L.GCNConv(5)
    out = gcn(graph, tf.constant(x)).numpy()[:7]
    a = dense_adjacency(g) + np.eye(7)
    inv = 1 / np.sqrt(a.sum(1))
    w, b = gcn.project.kernel.numpy(), gcn.project.bias.numpy()
    np.testing.assert_allclose(out, (inv[:, None] * a * inv[None, :]) @ x[:7] @ w + b, rtol=1e-4, atol=1e-5)

    sage = L.SAGEConv(5)
    feats = [f.numpy()[:7] for f in sage.features(graph, tf.constant(x))]
    producers = np.zeros((7, 7))
    for u, v in g.edge_index:
        producers[u, v] += 1
    with np.errstate(invalid="ignore"):  # nodes without producers/consumers aggregate to 0
        mean_in = np.nan_to_num(producers @ x[:7] / producers.sum(1, keepdims=True))
        mean_out = np.nan_to_num(producers.T @ x[:7] / producers.T.sum(1, keepdims=True))
    np.testing.assert_allclose(feats[1], mean_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[2], mean_out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["tile", "layout"])
@pytest.mark.parametrize("conv", ["chebsage", "sage", "cheb", "baseline"])
def test_scores_do_not_depend_on_batch_mates_or_padding(rng, kind, conv):
    """A graph's scores are the same alone or packed with others, under any padding."""
    g1, g2 = fake_graph(rng, kind, 11, 5, name="a"), fake_graph(rng, kind, 6, 3, name="b")
    model = build_model(
        kind, model_config(**{"conv": conv, "units": 8, "shared_layers": 1, "config_layers": 1, "cheb_order": 3})
    )
    alone, _ = graph_tensor([BatchItem(g1, np.arange(5))], BatchShape(1, 12, 32, 5, 12, 32), kind)
    together, _ = graph_tensor(
        [BatchItem(g2, np.arange(3)), BatchItem(g1, np.arange(5))], BatchShape(3, 64, 64, 6, 64, 64), kind
    )
    s_alone = model(alone).numpy()[0]
    s_together = model(together).numpy()
    np.testing.assert_allclose(s_together[1, :5], s_alone, rtol=1e-4, atol=1e-5)
    assert s_together.shape == (3, 6)


@pytest.mark.parametrize("kind", ["tile", "layout"])
def test_config_scores_follow_their_config(rng, kind):
    """Permuting the configs of an item permutes its scores; the configs really change scores."""
    g = fake_graph(rng, kind, 10, 6)
    model = build_model(kind, model_config(**{"conv": "chebsage", "units": 8, "shared_layers": 1, "config_layers": 1}))
    shape = BatchShape(1, 16, 32, 6, 16, 32)
    order = np.array([3, 1, 5, 0, 2, 4])
    base = model(graph_tensor([BatchItem(g, np.arange(6))], shape, kind)[0]).numpy()[0]
    permuted = model(graph_tensor([BatchItem(g, order)], shape, kind)[0]).numpy()[0]
    np.testing.assert_allclose(permuted, base[order], rtol=1e-4, atol=1e-5)
    assert np.std(base) > 1e-4


@pytest.mark.parametrize("scope", ["nodes", "configurable"])
def test_tile_features_reach_the_scores_only_when_read(rng, scope):
    """tile_features false reads the file's 24 config columns only; true also the 6 tile features."""
    g = fake_graph(rng, "tile", 10, 4)
    changed = dataclasses.replace(g, config_feat=g.config_feat.copy())
    changed.config_feat[:, 24:] = rng.normal(size=(4, 6))
    shape = BatchShape(1, 16, 32, 4, 16, 32)
    for read in (False, True):
        settings = {"units": 8, "shared_layers": 1, "config_layers": 1, "tile_features": read}
        model = build_model("tile", model_config(**settings, config_scope={"tile": scope, "layout": "nodes"}))
        base, other = (
            model(graph_tensor([BatchItem(x, np.arange(4))], shape, "tile")[0]).numpy() for x in (g, changed)
        )
        assert model.config_encoder.project.kernel.shape[0] == (30 if read else 24)
        assert np.abs(base - other).max() > 1e-4 if read else np.array_equal(base, other)


@pytest.mark.parametrize("interaction", [0, 3])
def test_layout_non_configurable_nodes_get_no_config_signal(rng, interaction):
    g = fake_graph(rng, "layout", 8, 2)
    shape = BatchShape(1, 16, 32, 2, 16, 32)
    graph, _ = graph_tensor([BatchItem(g, np.arange(2))], shape, "layout")
    enc = L.ConfigEncoder(4, "layout", interaction)
    out = enc(graph, tf.random.normal([16, 5])).numpy()
    others = np.setdiff1d(np.arange(16), g.config_node_pos)
    assert np.all(out[others] == 0)
    assert np.abs(out[g.config_node_pos]).sum() > 0


def test_layout_config_interaction_is_a_gather_of_node_value_embeddings(rng):
    """Position p of slot group g holding value v contributes W[g, p] e[n, g, v]."""
    g = fake_graph(rng, "layout", 8, 3)
    graph, _ = graph_tensor([BatchItem(g, np.arange(3))], BatchShape(1, 8, 32, 3, 8, 32), "layout")
    node_state = rng.normal(size=(8, 5)).astype(np.float32)
    k = 2
    enc = L.ConfigEncoder(4, "layout", interaction=k)
    out = enc(graph, tf.constant(node_state)).numpy()

    raw = np.full((8, 3, 18), -2)  # [N, C, 18]: the cfg nodes' configs placed at their ops
    cfg, real = graph.node_sets["cfg"], len(g.config_node_pos)
    raw[cfg["op"].numpy()[:real]] = cfg["config"].numpy()[:real]
    assert (raw >= -1).any() and (raw == -2).any()
    one_hot = np.eye(7)[np.clip(raw + 1, 0, 6)] * (raw >= -1)[..., None]
    w_side, b_side = (v.numpy() for v in enc.node_side.weights)
    values = (node_state @ w_side + b_side).reshape(8, 3, 7, k)  # e[n, g, v]
    mix = enc.position_mix.numpy()  # W[g, p]: [3, 6, k, k]
    mixed = np.zeros((8, 3, k))
    for n, c, slot in zip(*np.nonzero(raw >= -1)):
        mixed[n, c] += values[n, slot // 6, raw[n, c, slot] + 1] @ mix[slot // 6, slot % 6]
    expected = one_hot.reshape(8, 3, -1) @ enc.project.kernel.numpy() + mixed @ enc.project_interaction.kernel.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_layout_config_operands_read_each_groups_tensor():
    """Output, input and kernel groups read [NODE_FEAT, h] of the node and its operands in node-id
    order, whatever the order of the edge rows (real files sort them by id, not by operand)."""
    g = fake_graph(np.random.default_rng(6), "layout", 9, 2)  # configurable nodes with 0, 1 and 2 operands
    rows = np.flatnonzero(g.edge_index[:, 0] == g.config_node_pos[2])
    g.edge_index[rows] = g.edge_index[rows[np.argsort(-g.edge_index[rows, 1])]]  # higher-id operand's row first
    operands = [np.sort(g.edge_index[g.edge_index[:, 0] == node, 1]) for node in g.config_node_pos]
    assert [len(o) for o in operands] == [0, 1, 2] and operands[2][0] < operands[2][1]
    assert g.edge_index[rows[0], 1] == operands[2][1]
    graph, _ = graph_tensor([BatchItem(g, np.arange(2))], BatchShape(1, 12, 32, 4, 12, 32), "layout")
    node_state = np.random.default_rng(1).normal(size=(12, 5)).astype(np.float32)
    enc = L.ConfigEncoder(4, "layout", interaction=2, operands=True)
    got = enc._group_tensors(graph, tf.constant(node_state), graph.node_sets["cfg"]["op"]).numpy()

    tensor = np.concatenate([graph.node_sets["op"]["feat"].numpy(), node_state], axis=1)
    for row, node in enumerate(g.config_node_pos):
        ops = operands[row]
        expected = [tensor[node]] + [tensor[ops[i]] if i < len(ops) else np.zeros(tensor.shape[1]) for i in range(2)]
        np.testing.assert_allclose(got[row], np.stack(expected), rtol=1e-6)
    out = enc(graph, tf.constant(node_state)).numpy()
    assert out.shape == (12, 4, 4) and np.abs(out[g.config_node_pos]).sum() > 0


@pytest.mark.parametrize("kind", ["tile", "layout"])
def test_config_interaction_keeps_padding_invariance(rng, kind):
    g1, g2 = fake_graph(rng, kind, 11, 5, name="a"), fake_graph(rng, kind, 6, 3, name="b")
    model = build_model(
        kind,
        model_config(
            **{"conv": "chebsage", "units": 8, "shared_layers": 1, "config_layers": 1, "config_interaction": 4}
        ),
    )
    alone, _ = graph_tensor([BatchItem(g1, np.arange(5))], BatchShape(1, 12, 32, 5, 12, 32), kind)
    together, _ = graph_tensor(
        [BatchItem(g2, np.arange(3)), BatchItem(g1, np.arange(5))], BatchShape(3, 64, 64, 6, 64, 64), kind
    )
    np.testing.assert_allclose(model(together).numpy()[1, :5], model(alone).numpy()[0], rtol=1e-4, atol=1e-5)


def test_config_attention_matches_dense_reference(rng):
    """Each config attends to the real configs among the first `references` slots of its graph."""
    graphs, configs, units, heads, refs = 3, 6, 8, 2, 3
    x = rng.normal(size=(graphs, configs, units)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0], [0] * 6], np.float32)  # last: empty slot
    layer = L.ConfigAttention(units, refs, heads)
    out = layer(tf.constant(x), tf.constant(mask)).numpy()

    (wq, bq), (wk, bk), (wv, bv) = (
        (d.kernel.numpy(), d.bias.numpy())
        for d in (layer.attention._query_dense, layer.attention._key_dense, layer.attention._value_dense)
    )
    wo, bo = layer.attention._output_dense.kernel.numpy(), layer.attention._output_dense.bias.numpy()
    gamma, beta = layer.norm.gamma.numpy(), layer.norm.beta.numpy()
    for g in range(2):  # the empty slot's output is unused
        keys = [c for c in range(refs) if mask[g, c]]
        attended = np.zeros((configs, units))
        for h in range(heads):
            q = x[g] @ wq[:, h] + bq[h]
            k = x[g, keys] @ wk[:, h] + bk[h]
            v = x[g, keys] @ wv[:, h] + bv[h]
            logits = q @ k.T / np.sqrt(units // heads)
            weights = np.exp(logits - logits.max(1, keepdims=True))
            attended += (weights / weights.sum(1, keepdims=True)) @ v @ wo[h]
        y = x[g] + attended + bo
        y = (y - y.mean(1, keepdims=True)) / np.sqrt(y.var(1, keepdims=True) + layer.norm.epsilon)
        np.testing.assert_allclose(out[g], y * gamma + beta, rtol=1e-4, atol=1e-4)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("kind", ["tile", "layout"])
def test_config_attention_scores_depend_on_references_only(rng, kind):
    """With attention a config's score changes with its graph's references, not with other configs."""
    g = fake_graph(rng, kind, 10, 8)
    model = build_model(
        kind,
        model_config(
            **{
                "conv": "sage",
                "units": 8,
                "shared_layers": 1,
                "config_layers": 1,
                "config_attention": 2,
                "attention_heads": 2,
            }
        ),
    )
    shape = BatchShape(1, 16, 32, 5, 16, 32)

    def scores(rows):
        return model(graph_tensor([BatchItem(g, np.array(rows))], shape, kind)[0]).numpy()[0, : len(rows)]

    base = scores([0, 1, 2, 3, 4])
    np.testing.assert_allclose(scores([0, 1, 4, 5])[:3], base[[0, 1, 4]], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scores([0, 1, 6, 3, 7])[[0, 1, 3]], base[[0, 1, 3]], rtol=1e-4, atol=1e-5)
    assert np.abs(scores([2, 3, 4])[2] - base[4]) > 1e-4  # other references, another score


def test_chunk_items_lead_every_chunk_with_the_same_references(rng):
    g = fake_graph(rng, "tile", 5, 11)
    items = chunk_items([g], configs=5, references=3)
    assert [i.rows.tolist() for i in items] == [[0, 5, 10, 1, 2], [0, 5, 10, 3, 4], [0, 5, 10, 6, 7], [0, 5, 10, 8, 9]]
    assert [i.rows.tolist() for i in chunk_items([g], 5, {g.graph_id: np.array([7, 2])}, references=3)] == [[7, 2]]
    assert [i.rows.tolist() for i in chunk_items([g], 6, {g.graph_id: np.array([], np.int64)}, references=3)] == []
    assert [i.rows.tolist() for i in chunk_items([g], 8, references=0)] == [list(range(8)), [8, 9, 10]]
    with pytest.raises(ValueError, match="config_attention"):
        chunk_items([g], configs=3, references=3)


@pytest.mark.parametrize("attention", [0, 3])
@pytest.mark.parametrize("kind", ["tile", "layout"])
def test_scoring_does_not_depend_on_chunking(rng, kind, attention):
    """Scorer results are the same for any chunk size and batch mates, one-shot (24 slots for
    23 configs) included; with attention, chunks share references."""
    graphs = [fake_graph(rng, kind, 9, 23, name="a"), fake_graph(rng, kind, 6, 4, name="b")]
    model = build_model(
        kind,
        model_config(
            **{
                "conv": "chebsage",
                "units": 8,
                "shared_layers": 1,
                "config_layers": 1,
                "config_interaction": 4,
                "config_attention": attention,
                "attention_heads": 2,
            }
        ),
    )
    strategy = tf.distribute.get_strategy()

    def plan(graphs_per_batch):
        return BucketPlan(graphs_per_batch, 1.25, count=1, growth=2.0, max_batch_nodes=10**6, max_config_nodes=10**9)

    results = [
        Scorer(model, plan(graphs_per_batch), configs, kind, FEAT, strategy, jit_compile=False).score(graphs)
        for graphs_per_batch, configs in ((1, 5), (2, 8), (3, 24))
    ]
    for other in results[1:]:
        for gid in ("a", "b"):
            np.testing.assert_allclose(other[gid], results[0][gid], rtol=1e-4, atol=1e-5)
    rows = {"a": np.array([20, 3, 9, 4, 11, 0]), "b": np.array([2])}
    subset = Scorer(model, plan(1), 4, kind, FEAT, strategy, jit_compile=False).score(graphs, rows)
    assert subset["a"].shape == (6,) and subset["b"].shape == (1,)
    assert np.std(results[0]["a"]) > 1e-4


def test_pack_respects_budgets_and_rejects_oversized_graphs(rng):
    graphs = [fake_graph(rng, "tile", n, 2, name=str(n)) for n in (5, 9, 3, 7)]
    shape = BatchShape(graphs=2, nodes=16, edges=64, configs=2, config_nodes=16, config_edges=64)
    batches = list(pack([BatchItem(g, np.arange(2)) for g in graphs], shape))
    assert [[i.graph.graph_id for i in b] for b in batches] == [["5", "9"], ["3", "7"]]
    with pytest.raises(ValueError, match="exceeds the batch budget"):
        list(pack([BatchItem(fake_graph(rng, "tile", 16, 2), np.arange(2))], shape))


def test_layout_cost_terms_of_a_hand_made_node():
    """(8, 128) tile padding, dim sizes and copies of one node's output (f32 [100, 8], own layout
    {1,0}: 8 minor-most) and input (bf16 [100]) under three configs; no kernel; a padding node."""
    tensors = np.zeros((2, 3, 13), np.int32)
    tensors[0, 0] = [100, 8, 0, 0, 0, 0, 1, 0, -1, -1, -1, -1, 4]
    tensors[0, 1] = [100, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, 2]
    tensors[0, 2, 6:12] = -1  # no second operand
    unset = [-1] * 6
    config = np.full((2, 3, 18), -2, np.int8)  # node 1 is padding
    config[0] = [
        [0, 1, -1, -1, -1, -1, *unset, 0, 1, -1, -1, -1, -1],  # output {0,1}: 100 minor-most; input own
        [*unset, 1, 0, -1, -1, -1, -1, *unset],  # output own; input names dim 1, past its rank
        [0, -1, -1, -1, -1, -1, 0, -1, -1, -1, -1, -1, *unset],  # only the output's minor dim set
    ]
    terms = L.layout_cost_terms(tf.constant(config), tf.constant(tensors), tf.constant([1000.0, 0.0])).numpy()
    assert terms.shape == (2, 3, 3, 8)
    own_out, own_in = 16 * 1.04, 1.28  # 8 -> 128 lanes, 100 -> 104 sublanes; 100 -> 128 lanes
    moved_out = [np.log(1.28), np.log1p(3200 * 1.28) / 16, np.log(100), np.log(8), 1.0]
    moved_out += [np.log1p(3200 * (1.28 + own_out)) / 16, 3.2 * (1.28 - own_out), 3.2 * (1.28 + own_out)]
    kept_out = [np.log(own_out), np.log1p(3200 * own_out) / 16, np.log(8), np.log(100), 0, 0, 0, 0]
    kept_in = [np.log(1.28), np.log1p(200 * 1.28) / 16, np.log(100), 0, 0, 0, 0, 0]
    moved_in = [np.log(1.04), np.log1p(200 * 1.04) / 16, 0, np.log(100), 1.0]  # no minor dim: only 100 -> 104
    moved_in += [np.log1p(200 * (1.04 + own_in)) / 16, 0.2 * (1.04 - own_in), 0.2 * (1.04 + own_in)]
    want = np.array([[moved_out, kept_in], [kept_out, moved_in], [moved_out, kept_in]])
    np.testing.assert_allclose(terms[0, :, :2], want, rtol=1e-5, atol=1e-6)
    assert not terms[0, :, 2].any() and not terms[1].any()  # absent kernel, padding node
    np.testing.assert_allclose(L.own_padded_bytes(tf.constant(tensors)).numpy(), [3200 * own_out + 200 * 1.28, 0])


@pytest.mark.parametrize("scope", ["nodes", "configurable"])
def test_layout_cost_features_read_the_dims_and_ignore_batch_mates(rng, scope):
    """With layout_cost_features the scores depend on the configurable nodes' tensor dims (not
    without), and stay the same alone or packed with another graph (graph_bytes is per graph)."""
    g1, g2 = fake_graph(rng, "layout", 11, 5, name="a"), fake_graph(rng, "layout", 6, 3, name="b")
    other = dataclasses.replace(g1, config_tensors=g1.config_tensors.copy())
    other.config_tensors[:, :, 0] += 37  # other sizes of dim 0
    alone_shape, together_shape = BatchShape(1, 12, 32, 5, 8, 16), BatchShape(3, 64, 64, 6, 32, 64)
    for features in (True, False):
        model = build_model(
            "layout",
            model_config(conv="sage", layout_cost_features=features, config_scope={"tile": scope, "layout": scope}),
        )
        alone = model(graph_tensor([BatchItem(g1, np.arange(5))], alone_shape, "layout")[0]).numpy()[0]
        resized = model(graph_tensor([BatchItem(other, np.arange(5))], alone_shape, "layout")[0]).numpy()[0]
        assert (np.abs(alone - resized).max() > 1e-4) == features
        items = [BatchItem(g2, np.arange(3)), BatchItem(g1, np.arange(5))]
        together = model(graph_tensor(items, together_shape, "layout")[0]).numpy()
        np.testing.assert_allclose(together[1, :5], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "cls,args",
    [
        (L.SAGEConv, {"units": 4}),
        (L.ChebConv, {"units": 4, "order": 2}),
        (L.ChebSAGEConv, {"units": 4, "order": 3}),
        (L.GCNConv, {"units": 4}),
        (L.NodeEncoder, {"units": 4, "opcode_vocab": 32, "opcode_dim": 3}),
        (L.ConfigEncoder, {"units": 4, "kind": "layout", "interaction": 2}),
        (L.ResidualBlock, {"conv": "cheb", "units": 4, "order": 2, "dropout": 0.1}),
        (L.RuntimeHead, {"units": 4, "reduce": "sum"}),
        (L.RuntimeHead, {"units": 4, "reduce": "mean", "attention_references": 2, "attention_heads": 2}),
        (L.ConfigAttention, {"units": 4, "references": 3, "heads": 2}),
        (L.LayoutCostFeatures, {"units": 4}),
    ],
)
def test_layers_round_trip_get_config(cls, args):
    layer = cls(**args)
    clone = cls.from_config(layer.get_config())
    for key, value in args.items():
        assert clone.get_config()[key] == value


def test_batches_carry_the_cfg_graph_with_its_own_padding(rng):
    """Layout: each item's configurable nodes, their ops and config edges, offset per item; the
    padding component takes the rest and its edges loop on the last cfg node. Tile: one per item."""
    g1, g2 = fake_graph(rng, "layout", 9, 2, name="a"), fake_graph(rng, "layout", 12, 3, name="b")
    assert g1.num_config_edges and g2.num_config_edges
    shape = BatchShape(3, 32, 64, 3, 12, 16)
    a = to_arrays([BatchItem(g1, np.arange(2)), BatchItem(g2, np.array([2, 0]))], shape, "layout", FEAT)
    m1, m2, e1, e2 = g1.num_config_nodes, g2.num_config_nodes, g1.num_config_edges, g2.num_config_edges
    assert a["config_node_sizes"].tolist() == [m1, m2, 0, 12 - m1 - m2]
    assert a["config_edge_sizes"].tolist() == [e1, e2, 0, 16 - e1 - e2]
    assert a["op"].tolist() == [*g1.config_node_pos, *(g2.config_node_pos + 9), *[31] * (12 - m1 - m2)]
    assert a["config_source"].tolist() == [
        *g1.config_edges[:, 1],
        *(g2.config_edges[:, 1] + m1),
        *[11] * (16 - e1 - e2),
    ]
    assert a["config_target"].tolist() == [
        *g1.config_edges[:, 0],
        *(g2.config_edges[:, 0] + m1),
        *[11] * (16 - e1 - e2),
    ]
    config = a["config"]  # [cfg nodes, configs, 18]
    assert config.shape == (12, 3, 18)
    np.testing.assert_array_equal(config[m1 : m1 + m2, :2], g2.config_feat[[2, 0]].transpose(1, 0, 2))
    assert (config[m1 + m2 :] == -2).all() and (config[:m1, 2] == -2).all()
    t = to_arrays([BatchItem(fake_graph(rng, "tile", 5, 2), np.arange(2))] * 2, shape, "tile", FEAT)
    assert t["config_node_sizes"].tolist() == [1, 1, 0, 10] and t["config_edge_sizes"].tolist() == [0, 0, 0, 16]
    assert t["op"].tolist() == [0, 5, *[31] * 10]  # each kernel's first node
    for kind, arrays in (("layout", a), ("tile", t)):  # static sizes: XLA compiles once per shape, not per batch
        graph, _ = to_graph_tensor({k: tf.constant(v) for k, v in arrays.items()}, kind)
        assert graph.node_sets["cfg"].spec.total_size == 12 and graph.edge_sets["cfg_feeds"].spec.total_size == 16
    with pytest.raises(ValueError, match="cfg edges"):
        list(pack([BatchItem(g2, np.arange(3))], BatchShape(1, 32, 64, 3, 12, e2 - 1)))


@pytest.mark.parametrize("kind", ["tile", "layout"])
def test_configurable_scope_scores_ignore_batch_mates_and_follow_their_configs(rng, kind):
    g1, g2 = fake_graph(rng, kind, 11, 5, name="a"), fake_graph(rng, kind, 6, 3, name="b")
    model = build_model(
        kind,
        model_config(
            conv="chebsage", config_interaction=3, config_scope={"tile": "configurable", "layout": "configurable"}
        ),
    )
    alone, _ = graph_tensor([BatchItem(g1, np.arange(5))], BatchShape(1, 12, 32, 5, 8, 16), kind)
    together, _ = graph_tensor(
        [BatchItem(g2, np.arange(3)), BatchItem(g1, np.arange(5))], BatchShape(3, 64, 64, 6, 32, 64), kind
    )
    base = model(alone).numpy()[0]
    np.testing.assert_allclose(model(together).numpy()[1, :5], base, rtol=1e-4, atol=1e-5)
    order = np.array([3, 1, 4, 0, 2])
    permuted = model(graph_tensor([BatchItem(g1, order)], BatchShape(1, 12, 32, 5, 8, 16), kind)[0]).numpy()[0]
    np.testing.assert_allclose(permuted, base[order], rtol=1e-4, atol=1e-5)
    assert np.std(base) > 1e-4


def test_only_the_configurable_scope_reads_config_edges(rng):
    """Dropping a graph's config edges changes configurable-scope scores, not nodes-scope ones."""
    g = fake_graph(rng, "layout", 14, 4)
    assert g.num_config_edges > 0
    unlinked = dataclasses.replace(g, config_edges=np.zeros((0, 2), np.int32))
    shape = BatchShape(1, 16, 32, 4, 8, 16)
    for scope, changes in (("nodes", False), ("configurable", True)):
        model = build_model("layout", model_config(conv="sage", config_scope={"tile": scope, "layout": scope}))
        linked, cut = (
            model(graph_tensor([BatchItem(x, np.arange(4))], shape, "layout")[0]).numpy()[0] for x in (g, unlinked)
        )
        assert (np.abs(linked - cut).max() > 1e-4) == changes, scope


@pytest.mark.parametrize(
    "kind,attention,scope,cost",
    [
        ("tile", 0, "nodes", False),
        ("layout", 0, "nodes", False),
        ("layout", 2, "nodes", True),
        ("tile", 0, "configurable", True),
        ("layout", 2, "configurable", True),
    ],
)
def test_train_step_compiles_with_xla(rng, kind, attention, scope, cost):
    """The whole forward + backward + update compiles with jit_compile=True on static shapes."""
    from tpuperf.training.losses import get_loss

    g = fake_graph(rng, kind, 10, 4)
    graph, runtime = graph_tensor([BatchItem(g, np.arange(4))], BatchShape(2, 16, 32, 4, 16, 32), kind)
    model = build_model(
        kind,
        model_config(
            **{
                "conv": "chebsage",
                "units": 8,
                "shared_layers": 1,
                "config_layers": 1,
                "config_attention": attention,
                "attention_heads": 2,
                "config_scope": {"tile": scope, "layout": scope},
                "layout_cost_features": cost,  # tile ignores it
            }
        ),
    )
    loss_fn = get_loss("listmle")
    optimizer = tf.keras.optimizers.Adam(1e-2)
    model(graph)

    @tf.function(jit_compile=True)
    def step(graph, runtime):
        with tf.GradientTape() as tape:
            loss = loss_fn(runtime, model(graph, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    losses = [float(step(graph, runtime)) for _ in range(30)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    hlo = step.experimental_get_compiler_ir(graph, runtime)(stage="hlo")
    assert "HloModule" in hlo


@pytest.mark.parametrize("conv,kind", [("chebsage", "layout"), ("baseline", "tile")])
def test_models_match_their_session_start_ops(rng, conv, kind):
    """The ops rewritten for XLA on CPU (the blocks' LayerNorm and gelu, the adjacency product)
    give the scores and gradients of the ones they replaced (benchmarks/throughput.py
    session_start_ops: Keras' LayerNormalization, tf.nn.gelu, one pooling per edge direction),
    computed here on the same weights (random gamma and beta) under jit_compile=True."""
    from tpuperf.training.losses import get_loss

    g = fake_graph(rng, kind, 10, 4)
    graph, runtime = graph_tensor([BatchItem(g, np.arange(4))], BatchShape(2, 16, 32, 4, 16, 32), kind)
    settings = {"conv": conv, "units": 8, "config_units": 8, "shared_layers": 1, "config_layers": 2}
    if conv == "baseline":
        settings.update(shared_layers=0, config_interaction=0, config_operands=False)
    model = build_model(kind, model_config(**settings))
    model(graph)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    loss_fn = get_loss("listmle")

    def scores_and_gradients():
        @tf.function(jit_compile=True)
        def run(graph, runtime):
            with tf.GradientTape() as tape:
                scores = model(graph, training=True)
                loss = loss_fn(runtime, scores)
            return scores, tape.gradient(loss, model.trainable_variables)

        scores, grads = run(graph, runtime)
        return scores.numpy(), [tf.convert_to_tensor(gr).numpy() for gr in grads]

    got_scores, got_grads = scores_and_gradients()
    with session_start_ops():
        want_scores, want_grads = scores_and_gradients()
    assert np.ptp(want_scores[0, :4]) > 1e-3  # the configs' scores differ: the comparison can fail
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-5)
    for got, want in zip(got_grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("edge_set", [EDGES, CONFIG_EDGES])
def test_normalized_adjacency_product_matches_one_weighted_sum_per_direction(rng, edge_set):
    """The one-pass product over both edge directions equals the sum of a weighted pooling per
    direction (the form it replaced), on [nodes, configs, units] states of either edge set."""
    g = fake_graph(rng, "layout", 12, 3)
    graph, _ = graph_tensor([BatchItem(g, np.arange(3))], BatchShape(2, 16, 32, 3, 16, 32), "layout")
    node_set = NODES if edge_set == EDGES else CONFIG_NODES
    assert int(graph.edge_sets[edge_set].sizes[0]) > 0  # real edges, not only padding
    state = tf.constant(rng.normal(size=(16, 3, 5)).astype(np.float32))
    weights, _ = L.symmetric_edge_weights(graph, self_loops=True, edge_set=edge_set)
    want = session_start_adjacency_product(graph, state, weights, edge_set)
    got = L.normalized_adjacency_product(graph, state, weights, edge_set)
    assert graph.node_sets[node_set].total_size == got.shape[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("edge_set", [EDGES, CONFIG_EDGES])
@pytest.mark.parametrize("order", [1, 3])
def test_chebsage_features_share_one_gather_and_match_the_separate_ops(rng, edge_set, order):
    """chebsage_features (one gather serving T_1 x and both means) equals the Chebyshev basis and
    tfgnn's per-direction mean pooling computed apart (throughput.session_start_directional_means),
    values and gradients, on [nodes, configs, units] states; padding nodes have no edges and get
    zero means, not NaN."""
    g = fake_graph(rng, "layout", 12, 3)
    graph, _ = graph_tensor([BatchItem(g, np.arange(3))], BatchShape(2, 16, 32, 3, 16, 32), "layout")
    assert int(graph.edge_sets[edge_set].sizes[0]) > 0
    state = tf.constant(rng.normal(size=(16, 3, 5)).astype(np.float32))
    probe = tf.constant(rng.normal(size=(order + 2, 16, 3, 5)).astype(np.float32))

    def run(features):
        with tf.GradientTape() as tape:
            tape.watch(state)
            out = tf.stack(features(graph, state, order, edge_set))
            loss = tf.reduce_sum(out * probe)
        return out.numpy(), tape.gradient(loss, state).numpy()

    got, got_grad = run(L.chebsage_features)
    want, want_grad = run(session_start_chebsage_features)
    assert np.isfinite(got).all() and np.abs(got[-2:]).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-5)
    means = L.directional_means(graph, state, edge_set)
    np.testing.assert_allclose(np.stack(means), want[-2:], rtol=1e-5, atol=1e-6)
