import numpy as np
import pytest
import tensorflow as tf

from tpuperf.training.losses import ListMLELoss, LogMSELoss, PairwiseHingeLoss, get_loss

RANKING = [ListMLELoss(), PairwiseHingeLoss(margin=0.5)]
ALL = RANKING + [LogMSELoss(), LogMSELoss(center=True, name="mse_centred")]


def _value(loss, y_true, y_pred) -> float:
    return float(loss(tf.constant(y_true, tf.float32), tf.constant(y_pred, tf.float32)))


def test_listmle_hand_computed_three_items():
    # True order 0, 1, 2; scores s = -pred = [-0.5, 0, -1].
    # NLL = [lse(-0.5, 0, -1) + 0.5] + [lse(0, -1) - 0] + 0
    expected = np.log(np.exp(-0.5) + 1 + np.exp(-1)) + 0.5 + np.log(1 + np.exp(-1))
    assert expected == pytest.approx(1.4935313581599574)
    assert _value(ListMLELoss(), [[1, 2, 3]], [[0.5, 0.0, 1.0]]) == pytest.approx(expected, rel=1e-6)


def test_listmle_mean_over_rankable_graphs_only():
    one = _value(ListMLELoss(), [[1, 2, 3]], [[0.5, 0.0, 1.0]])
    # The second graph has a single valid config: no order, so it does not dilute the mean.
    batch = _value(ListMLELoss(), [[1, 2, 3], [5, 0, 0]], [[0.5, 0.0, 1.0], [1.0, 2.0, 3.0]])
    assert batch == pytest.approx(one, rel=1e-6)
    assert _value(ListMLELoss(), [[5, 0, 0]], [[1.0, 2.0, 3.0]]) == 0.0
    # Nor does a graph whose valid configs all share one runtime (its index-ordered ties are no order)
    flat = _value(ListMLELoss(), [[1, 2, 3], [4, 4, 4]], [[0.5, 0.0, 1.0], [3.0, 1.0, 2.0]])
    assert flat == pytest.approx(one, rel=1e-6)
    assert _value(ListMLELoss(), [[4, 4, 0]], [[3.0, 1.0, 2.0]]) == 0.0


def test_pairwise_hinge_hand_computed():
    # pairs (faster, slower): (0,1) gap 1.0 -> 0; (0,2) gap -0.5 -> 1.0; (1,2) gap -1.5 -> 2.0
    assert _value(PairwiseHingeLoss(margin=0.5), [[1, 2, 3]], [[0.0, 1.0, -0.5]]) == pytest.approx(3.0 / 3)
    assert _value(PairwiseHingeLoss(margin=0.5), [[2, 2]], [[0.0, 1.0]]) == 0.0  # ties form no pair


def test_log_mse_hand_computed():
    y_true = [[np.e, 1.0, 0.0]]  # log -> 1, 0, padded
    assert _value(LogMSELoss(), y_true, [[3.0, 1.0, 99.0]]) == pytest.approx((4 + 1) / 2)


def test_centred_log_mse_hand_computed_and_blind_to_each_graphs_level():
    y_true = [[np.e, 1.0, 0.0], [np.e**3, np.e, np.e**2]]  # log: (1, 0, pad), (3, 1, 2); centred: (.5, -.5), (1, -1, 0)
    y_pred = [[3.0, 1.0, 99.0], [0.0, 0.0, 0.0]]  # centred: (1, -1), (0, 0, 0)
    expected = ((1 - 0.5) ** 2 + (-1 + 0.5) ** 2 + 1 + 1 + 0) / 5
    centred = LogMSELoss(center=True)
    assert _value(centred, y_true, y_pred) == pytest.approx(expected)
    rescaled = np.array(y_true) * np.array([[5.0], [0.01]])  # another runtime level per graph
    shifted = np.array(y_pred) + np.array([[4.0], [-2.0]])
    assert _value(centred, rescaled, shifted) == pytest.approx(expected, rel=1e-5)
    assert _value(LogMSELoss(), rescaled, shifted) != pytest.approx(_value(LogMSELoss(), y_true, y_pred))


@pytest.mark.parametrize("loss", RANKING, ids=lambda loss: loss.name)
def test_ranking_losses_invariant_to_constant_shift(loss):
    rng = np.random.default_rng(0)
    y_true = rng.uniform(1, 10, (3, 6))
    y_pred = rng.normal(size=(3, 6))
    assert _value(loss, y_true, y_pred + 7.0) == pytest.approx(_value(loss, y_true, y_pred), rel=1e-5)


@pytest.mark.parametrize("loss", ALL, ids=lambda loss: loss.name)
def test_padded_configs_do_not_change_value(loss):
    rng = np.random.default_rng(1)
    y_true = rng.uniform(1, 10, (2, 5))
    y_pred = rng.normal(size=(2, 5))
    padded_true = np.concatenate([y_true, np.zeros((2, 3))], axis=1)
    padded_pred = np.concatenate([y_pred, rng.normal(0, 1e3, (2, 3))], axis=1)  # garbage scores
    # Padding in the middle too: order of columns must not matter.
    perm = rng.permutation(8)
    assert _value(loss, padded_true[:, perm], padded_pred[:, perm]) == pytest.approx(
        _value(loss, y_true, y_pred), rel=1e-5
    )


@pytest.mark.parametrize("loss", ALL, ids=lambda loss: loss.name)
def test_perfect_ranking_beats_reversed(loss):
    y_true = np.array([[1.0, 2.0, 4.0, 8.0, 16.0]])
    perfect = np.log(y_true)
    reversed_ = perfect[:, ::-1].copy()
    assert _value(loss, y_true, perfect) < _value(loss, y_true, reversed_)


@pytest.mark.parametrize("loss", ALL, ids=lambda loss: loss.name)
def test_gradients_finite_for_large_scores(loss):
    y_true = tf.constant([[1.0, 2.0, 3.0, 0.0], [3.0, 1.0, 0.0, 0.0]])
    y_pred = tf.Variable([[1e4, -1e4, 5e3, 1e4], [-1e4, 1e4, 0.0, -1e4]])
    with tf.GradientTape() as tape:
        value = loss(y_true, y_pred)
    grad = tape.gradient(value, y_pred).numpy()
    assert np.isfinite(float(value)) and np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[:, 3], 0.0)  # padded configs get no gradient


@pytest.mark.parametrize("loss", ALL, ids=lambda loss: loss.name)
def test_jit_compiled_matches_eager(loss):
    rng = np.random.default_rng(2)
    y_true = rng.uniform(1, 10, (4, 8)).astype(np.float32)
    y_true[1, 5:] = 0  # padded
    y_pred = rng.normal(size=(4, 8)).astype(np.float32)

    @tf.function(jit_compile=True)
    def compiled(t, p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            value = loss(t, p)
        return value, tape.gradient(value, p)

    value, grad = compiled(tf.constant(y_true), tf.constant(y_pred))
    assert float(value) == pytest.approx(_value(loss, y_true, y_pred), rel=1e-5)
    assert np.isfinite(grad.numpy()).all()


def test_get_loss_and_config_round_trip():
    loss = get_loss("pairwise", margin=0.25)
    assert isinstance(loss, PairwiseHingeLoss) and loss.margin == 0.25
    clone = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert isinstance(clone, PairwiseHingeLoss) and clone.margin == 0.25
    assert isinstance(get_loss("listmle"), ListMLELoss)
    assert isinstance(get_loss("mse"), LogMSELoss)
    centred = tf.keras.losses.deserialize(tf.keras.losses.serialize(get_loss("mse", center=True)))
    assert isinstance(centred, LogMSELoss) and centred.center
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        get_loss("hinge")
