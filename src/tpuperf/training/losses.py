"""Training losses over the configs of each graph in a batch, XLA-compilable (``jit_compile=True``).

Interface shared with the model and trainer: ``y_true`` and ``y_pred`` are float32 ``[G, C]``
(G graphs per batch, C configs per graph). ``y_true`` is the target runtime (positive), and 0
marks a padded config. ``y_pred`` is runtime-like: LOWER means predicted faster, as in
:mod:`tpuperf.metrics` and the submission files.

Each loss returns one scalar that is already the batch mean; Keras' default reduction leaves a
scalar unchanged (and scales it per replica under a distribution strategy). ``sample_weight``
is not supported by these losses.
"""

from __future__ import annotations

import tensorflow as tf  # tpuperf/__init__.py has already selected tf-keras (TF_USE_LEGACY_KERAS)

# Stands in for padded scores inside logsumexp: exp(FILL - s) is exactly 0 for any realistic
# score, yet it stays finite so neither values nor gradients become inf/NaN.
_FILL = -1e9


def _mask(y_true: tf.Tensor) -> tf.Tensor:
    return y_true > 0


@tf.keras.utils.register_keras_serializable(package="tpuperf")
class ListMLELoss(tf.keras.losses.Loss):
    """Plackett-Luce negative log-likelihood of the true order, fastest first.

    With scores ``s = -y_pred`` and valid configs sorted by true runtime ascending, the loss of
    one graph is ``sum_i logsumexp(s[i:]) - s[i]``: each position's config must beat all slower
    ones. Reverse cumulative logsumexp keeps it stable for large scores. Ties in the true
    runtime are ordered by config index. Averaged over graphs whose valid configs have at
    least 2 distinct runtimes (others carry no order: their index-ordered ties would be noise);
    0 when no graph qualifies.
    """

    def __init__(self, name: str = "listmle", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        mask = _mask(y_true)
        # Padded configs sort last; the stable sort orders true-runtime ties by index.
        order = tf.argsort(tf.where(mask, y_true, tf.float32.max), axis=1, stable=True)
        sorted_mask = tf.gather(mask, order, batch_dims=1)
        scores = tf.where(sorted_mask, -tf.gather(y_pred, order, batch_dims=1), _FILL)
        tail = tf.math.cumulative_logsumexp(scores, axis=1, reverse=True)
        nll = tf.reduce_sum(tf.where(sorted_mask, tail - scores, 0.0), axis=1)
        fastest = tf.reduce_min(tf.where(mask, y_true, tf.float32.max), axis=1)
        slowest = tf.reduce_max(tf.where(mask, y_true, 0.0), axis=1)
        ranked = tf.cast(slowest > fastest, tf.float32)  # 2+ distinct runtimes among the valid configs
        return tf.math.divide_no_nan(tf.reduce_sum(nll * ranked), tf.reduce_sum(ranked))


@tf.keras.utils.register_keras_serializable(package="tpuperf")
class PairwiseHingeLoss(tf.keras.losses.Loss):
    """``max(0, margin - (pred_j - pred_i))`` over pairs of one graph with runtime_i < runtime_j.

    The slower config j must be predicted at least ``margin`` higher than the faster i.
    Averaged over all valid pairs of the batch (padded configs and equal runtimes form no
    pair); 0 when there is no pair. Memory is O(G * C^2).
    """

    def __init__(self, margin: float = 0.1, name: str = "pairwise", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        mask = _mask(y_true)
        # pair [g, i, j]: config i is truly faster than config j, both real.
        both = tf.logical_and(mask[:, :, None], mask[:, None, :])
        pairs = tf.logical_and(both, y_true[:, :, None] < y_true[:, None, :])
        gap = y_pred[:, None, :] - y_pred[:, :, None]  # pred_j - pred_i
        hinge = tf.nn.relu(self.margin - gap)
        pairs = tf.cast(pairs, tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(hinge * pairs), tf.reduce_sum(pairs))

    def get_config(self) -> dict:
        return {**super().get_config(), "margin": self.margin}


@tf.keras.utils.register_keras_serializable(package="tpuperf")
class LogMSELoss(tf.keras.losses.Loss):
    """Mean squared error between ``y_pred`` and ``log(y_true)`` over valid configs.

    A model trained with it predicts log runtime, so its outputs are comparable across graphs
    and a percentage error (MAPE) of ``exp(y_pred)`` means something. 0 when nothing is valid.

    ``center=True``: both sides are centred per graph (minus their mean over the graph's valid
    configs), i.e. the target is runtime normalised by the graph's geometric-mean runtime. The
    model then spends nothing on each graph's runtime level, which dominates the plain loss
    (levels differ by orders of magnitude between graphs, configs of one graph by percents), and
    learns how configs differ; its outputs have no absolute level.
    """

    def __init__(self, center: bool = False, name: str = "mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.center = bool(center)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        mask = _mask(y_true)
        weight = tf.cast(mask, tf.float32)
        log_true = tf.math.log(tf.where(mask, y_true, 1.0))
        if self.center:
            count = tf.reduce_sum(weight, axis=-1, keepdims=True)
            log_true = log_true - tf.math.divide_no_nan(tf.reduce_sum(log_true * weight, axis=-1, keepdims=True), count)
            y_pred = y_pred - tf.math.divide_no_nan(tf.reduce_sum(y_pred * weight, axis=-1, keepdims=True), count)
        err = tf.where(mask, tf.square(y_pred - log_true), 0.0)
        return tf.math.divide_no_nan(tf.reduce_sum(err), tf.reduce_sum(weight))

    def get_config(self) -> dict:
        return {**super().get_config(), "center": self.center}


LOSSES = {"listmle": ListMLELoss, "pairwise": PairwiseHingeLoss, "mse": LogMSELoss}


def get_loss(name: str, **kwargs) -> tf.keras.losses.Loss:
    """The loss named in params (``listmle``, ``pairwise``, ``mse``), built with ``kwargs``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)
