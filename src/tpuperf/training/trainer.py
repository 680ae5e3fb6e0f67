"""K-fold training of one model on one collection, resumable after a kill.

Folds split the TRAIN graphs; each fold trains on the others, early-stops on the held-out
fold's competition metric (out-of-fold, OOF) on ``train.eval_configs`` sampled configs per
held-out graph, and predicts every valid and test config with its best weights; the best epoch's
OOF scores are the fold's OOF predictions (scoring the held-out graphs again would repeat them).
Valid graphs are never used for any decision, so their scores are honest.

Outputs (paths from params.yaml ``train.*``):
    checkpoints/<slug>/<model>/fold_<k>/   resume state: weights + optimizer after epoch n
                                           (last-<n>), best weights, state.json (history, early
                                           stopping, a fingerprint of the data and settings it
                                           belongs to, and ``weights_for``, which the export requires)
    runs/<slug>/<model>/predictions/fold_<k>.parquet   format: tpuperf.runs
    runs/<slug>/<model>/report.json        per-fold and mean OOF/valid scores, throughput, ``predicted_from``
                                           (which the ensemble checks; tpuperf.runs) (+ metrics.json: oof, valid)
    runs/<slug>/<model>/live/              dvclive learning curves (``dvc plots show``)

Resume: a killed run restarts at the last finished epoch with the same weights, optimizer
state, early-stopping state and data stream (batches are a pure function of seed, fold and
epoch), so it reaches the same result as an uninterrupted run. state.json is written last in an epoch and
names the weights to resume from (``last-<epochs_done>``; the previous epoch's are deleted only after it), so a
kill while an epoch's files are being written resumes from the epoch before. A checkpoint is reused only for
exactly what it was made from: its fingerprint covers the model and train settings, the cache's
``stats.json`` (feature transform and preprocess settings such as ``prune`` and ``hops``), the content hash
of every train graph (graphs, configs, runtimes; see :class:`tpuperf.data.cache.ContentHash`) and the
tpuperf source code (:func:`tpuperf.provenance.source_fingerprint`), so relabelled or re-pruned data
and any code change start every fold afresh. Valid and test graphs are scored again
from the best weights on every run, so their predictions always follow the current cache.

Train graphs without 2 distinct runtimes (:func:`tpuperf.metrics.has_ranking`) are left out of
the folds (training batches and OOF scores); valid ones out of the valid score. Both counts are
in report.json (``graphs_excluded_constant_runtime``) and logged once per run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import tensorflow as tf

from tpuperf.atomic import write_atomic, write_json_atomic
from tpuperf.collection import Collection, get_collection
from tpuperf.config import Config, ModelConfig, TrainConfig
from tpuperf.data.cache import STATS_FILE, CachedGraph, CollectionCache
from tpuperf.errors import TpuperfError
from tpuperf.metrics import collection_score, has_ranking, ranking_positions, unranked_graphs
from tpuperf.provenance import weights_for_cache
from tpuperf.runs import (
    BEST_CHECKPOINT,
    BEST_OOF_FILE,
    STATE_FILE,
    TRAIN_COSMETIC_KEYS,
    fold_checkpoint_dir,
    live_dir,
    prediction_digests,
    prediction_path,
    trained_with,
    write_run_report,
)
from tpuperf.training.batches import (
    BatchItem,
    BatchShape,
    BucketPlan,
    Buckets,
    SlotUsage,
    pack,
    plan_batch_shape,
    to_arrays,
    to_graph_tensor,
)
from tpuperf.training.scoring import Scorer, prediction_frame
from tpuperf.training.strategy import replica_batch, select_strategy


class TrainingError(TpuperfError, RuntimeError):
    """Training cannot proceed (bad inputs or a diverged run); nothing is published."""


def assign_folds(graph_ids: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Shuffle graphs with ``seed`` and deal them round-robin into ``folds`` folds."""
    if folds < 2:
        raise TrainingError(f"train.folds must be >= 2, got {folds}")
    if len(graph_ids) < folds:
        n = len(graph_ids)
        fix = "add train graphs" if n < 2 else f"lower train.folds to {n} or add train graphs"
        raise TrainingError(f"only {n} training graphs for {folds} folds (train.folds >= 2): {fix}")
    order = np.random.default_rng(seed).permutation(sorted(graph_ids))
    return {gid: i % folds for i, gid in enumerate(order)}


def sample_items(
    graphs: Sequence[CachedGraph], buckets: Buckets, samples: int, rng: np.random.Generator
) -> list[BatchItem]:
    """``samples`` items per graph, each a random subset of its bucket's configs per graph, shuffled."""
    items = []
    for g in graphs:
        configs = buckets.configs(g)
        for _ in range(samples):
            rows = rng.choice(g.num_configs, size=min(configs, g.num_configs), replace=False)
            items.append(BatchItem(g, rows))
    return [items[i] for i in rng.permutation(len(items))]


def batch_stream(
    graphs: Sequence[CachedGraph], buckets: Buckets, samples: int, seed: int, replicas: int = 1, start_step: int = 0
) -> Iterator[tuple[int, list[list[BatchItem]]]]:
    """Endless deterministic training steps ``(bucket, batches)``, one batch per replica.

    Round r is drawn with rng([seed, r]): items are sampled, packed per bucket, each bucket's
    batches are cycled up to a multiple of ``replicas`` (so every replica of a step gets the
    same shape) and the round's steps are shuffled. ``start_step`` skips steps cheaply (no
    arrays are built) so a resumed run sees the very steps an uninterrupted run would have.
    """
    produced = 0
    for round_ in range(1 << 62):
        rng = np.random.default_rng([seed, round_])
        steps = []
        for bucket, items in enumerate(buckets.split(sample_items(graphs, buckets, samples, rng))):
            batches = pack(items, buckets.shapes[bucket])
            batches = [batches[i % len(batches)] for i in range(-(-len(batches) // replicas) * replicas)]
            steps += [(bucket, batches[i : i + replicas]) for i in range(0, len(batches), replicas)]
        for i in rng.permutation(len(steps)):
            if produced >= start_step:
                yield steps[i]
            produced += 1


def epoch_steps(graphs: Sequence[CachedGraph], buckets: Buckets, samples: int, replicas: int = 1) -> int:
    """Steps of about one pass over the training items: per bucket, its items over the graphs of a step."""
    per_bucket = np.bincount([buckets.index(g) for g in graphs], minlength=len(buckets.shapes))
    return max(
        1, sum(math.ceil(n * samples / (shape.graphs * replicas)) for n, shape in zip(per_bucket, buckets.shapes) if n)
    )


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def mean_score(
    collection: Collection,
    graphs: Sequence[CachedGraph],
    scores: dict[str, np.ndarray],
    rows: dict[str, np.ndarray] | None = None,
) -> float | None:
    """Mean competition metric over ``graphs``, as the submission ranks them; None when no graph has 2
    distinct runtimes (:func:`tpuperf.metrics.collection_score`).

    ``scores[graph_id]``: float (r,), one per scored config row: every row of the graph, or with ``rows``
    the int (r,) ascending cache rows ``rows[graph_id]`` (cache rows are in config id order). Each graph's
    scores are scored as the positions of its submission row (:func:`tpuperf.metrics.ranking_positions`:
    ties to the lower config id, as the ensemble's valid score ranks them). Runtimes and, for tile, the
    ``config_first`` labels (identical configurations, so a top 5 holds distinct ones as the submission's
    does) are taken at the same rows.
    """

    def at_rows(g: CachedGraph, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[rows[g.graph_id]] if rows else np.asarray(values)

    truth = {g.graph_id: at_rows(g, g.runtime) for g in graphs}
    if not any(has_ranking(runtime) for runtime in truth.values()):
        return None
    tile = collection.kind.top_k is not None
    same = {g.graph_id: at_rows(g, g.config_first) for g in graphs} if tile else None
    positions = {g: ranking_positions(s) for g, s in scores.items()}
    return collection_score(collection, positions, truth, same)


@dataclass
class FoldState:
    """What survives a kill: progress, early stopping and the learning curve."""

    fingerprint: str
    weights_for: str = ""  # tpuperf.provenance.weights_provenance: what `tpuperf export` requires of the weights
    epochs_done: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    wait: int = 0
    finished: bool = False
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    train_configs: int = 0  # padded config slots processed (graphs x configs per batch x steps)

    @classmethod
    def load(cls, path: Path, fingerprint: str, weights_for: str) -> FoldState:
        if path.exists():
            state = cls(**json.loads(path.read_text()))
            if state.fingerprint == fingerprint:
                return state
            print(f"{path}: training data, settings or code changed since this checkpoint; starting the fold afresh")
        return cls(fingerprint, weights_for)


class LearningRate:
    """``train.learning_rate`` over the steps of one fold as ``train.lr_schedule`` plans it.

    ``schedule`` (a Keras CosineDecay: linear warm-up from 0 to the peak, then cosine decay to
    ``final_fraction`` x peak, constant after the last planned step) maps the optimizer's step
    counter to a float32 learning rate. Its step counts are variables set by :meth:`plan` per fold,
    so compiled train steps follow a new plan without retracing; a resumed fold restores the
    optimizer's step counter and plans the same counts, so it continues on the same curve.
    """

    def __init__(self, settings: TrainConfig):
        self.settings = settings
        self.warmup_steps = tf.Variable(0.0, trainable=False, name="lr_warmup_steps")
        self.decay_steps = tf.Variable(1.0, trainable=False, name="lr_decay_steps")
        self.schedule = tf.keras.optimizers.schedules.CosineDecay(
            0.0,
            self.decay_steps,
            alpha=settings.lr_schedule.final_fraction,
            warmup_target=settings.learning_rate,
            warmup_steps=self.warmup_steps,
        )

    def plan(self, steps_per_epoch: int) -> tuple[int, int]:
        """Set the schedule for ``train.epochs`` epochs of ``steps_per_epoch`` (>= 1) steps; returns
        ``(warm-up steps, decay steps)``: warm-up = round(warmup_epochs x steps_per_epoch), decay = the rest (>= 1)."""
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        warmup = round(self.settings.lr_schedule.warmup_epochs * steps_per_epoch)
        decay = max(1, self.settings.epochs * steps_per_epoch - warmup)
        self.warmup_steps.assign(float(warmup))
        self.decay_steps.assign(float(decay))
        return warmup, decay

    def __call__(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` (0-based) of the current plan."""
        return float(self.schedule(step))


class ModelKit:
    """One model, optimizer, train step and scorer, reused by every fold of a run.

    Re-initialising weights and optimizer state per fold (instead of building a new model)
    keeps the traced and XLA-compiled train and predict steps: compilation dominates the
    wall time of small runs. The train step is traced (and XLA-compiled) once per batch
    shape; :attr:`train_compilations` counts them.
    """

    def __init__(
        self,
        collection: Collection,
        model: ModelConfig,
        settings: TrainConfig,
        strategy: tf.distribute.Strategy,
        feat_dim: int,
        sample_graph: CachedGraph,
    ):
        from tpuperf.models import build_model
        from tpuperf.training.losses import get_loss

        self.collection, self.model_config, self.strategy = collection, model, strategy
        kind = collection.kind.name
        sample_shape = plan_batch_shape([sample_graph], 1, 1, 1.0)
        sample_arrays = to_arrays([BatchItem(sample_graph, np.arange(1))], sample_shape, kind, feat_dim)
        self.sample_batch = to_graph_tensor({k: tf.constant(v) for k, v in sample_arrays.items()}, kind)[0]
        with strategy.scope():
            self.model = build_model(kind, model)
            self.learning_rate = LearningRate(settings)
            self.optimizer = tf.keras.optimizers.AdamW(
                self.learning_rate.schedule, weight_decay=settings.weight_decay, clipnorm=settings.clip_norm
            )
            self.model(self.sample_batch)
            self.optimizer.build(self.model.trainable_variables)
        # each loss is already the batch mean; SUM leaves it unchanged and is what custom loops
        # under a distribution strategy must use (the default reduction raises there)
        loss_fn = get_loss(settings.loss, reduction=tf.keras.losses.Reduction.SUM, **settings.loss_args)
        model, optimizer, replicas = self.model, self.optimizer, strategy.num_replicas_in_sync

        def replica_gradients(graph, runtime):
            with tf.GradientTape() as tape:
                loss = loss_fn(runtime, model(graph, training=True))
                share = loss / replicas  # gradients are summed over replicas: each adds its share of the mean
            return loss, tape.gradient(share, model.trainable_variables)

        # as Keras does: TPUStrategy compiles the whole step with XLA by itself
        jit = settings.jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy)
        # the update stays outside the compiled function: summing gradients over replicas is a
        # synchronisation point, which a nested tf.function cannot hold (MirroredStrategy on CPUs)
        self._replica_gradients = tf.function(replica_gradients, jit_compile=jit)

        def replica_step(arrays):
            loss, grads = self._replica_gradients(*to_graph_tensor(arrays, kind))
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        @tf.function
        def step(arrays):
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(replica_step, args=(arrays,)), axis=None)

        self._step = step
        self.scorer = Scorer(
            self.model,
            BucketPlan.from_config(settings, predict=True),
            settings.predict_configs_per_graph,
            kind,
            feat_dim,
            strategy,
            settings.jit_compile,
        )
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.best = tf.train.Checkpoint(model=self.model)
        self.feat_dim = feat_dim

    @property
    def train_compilations(self) -> int:
        """Traces (= XLA compilations with jit_compile) of the train step so far: one per batch shape
        and replica device under MirroredStrategy (TPUStrategy compiles one program per shape)."""
        return self._replica_gradients.experimental_get_tracing_count()

    def train_step(self, batches: list[list[BatchItem]], shape: BatchShape) -> float:
        """One optimizer step on one batch per replica (all of ``shape``); the global mean loss."""
        arrays = [to_arrays(batch, shape, self.collection.kind.name, self.feat_dim) for batch in batches]
        if len(arrays) != self.strategy.num_replicas_in_sync:
            raise ValueError(f"{len(arrays)} batches for {self.strategy.num_replicas_in_sync} replicas")
        if len(arrays) == 1:
            inputs = {k: tf.constant(v) for k, v in arrays[0].items()}
        else:
            inputs = self.strategy.experimental_distribute_values_from_function(
                lambda context: {k: tf.constant(v) for k, v in arrays[context.replica_id_in_sync_group].items()}
            )
        return float(self._step(inputs))

    def reset(self, seed: int, steps_per_epoch: int) -> None:
        """Fresh weights drawn with ``seed`` (as a new model would get), a zeroed optimizer (step 0) and
        the learning-rate schedule planned over ``train.epochs`` x ``steps_per_epoch`` steps."""
        self.learning_rate.plan(steps_per_epoch)
        from tpuperf.models import build_model

        tf.keras.utils.set_random_seed(seed)
        fresh = build_model(self.collection.kind.name, self.model_config)
        fresh(self.sample_batch)
        self.model.set_weights(fresh.get_weights())
        for variable in self.optimizer.variables:
            variable.assign(tf.zeros_like(variable))


class FoldRunner:
    """Trains one fold step by step over size-bucketed batches; checkpoints, evaluates and early-stops each epoch."""

    def __init__(
        self,
        kit: ModelKit,
        model_name: str,
        settings: TrainConfig,
        fold: int,
        train_graphs,
        oof_graphs,
        buckets: Buckets,
        ckpt_dir: Path,
        fingerprint: str,
        weights_for: str,
        live,
    ):
        self.kit, self.collection, self.settings, self.fold = kit, kit.collection, settings, fold
        self.model, self.scorer = kit.model, kit.scorer
        self.train_graphs, self.oof_graphs, self.buckets = train_graphs, oof_graphs, buckets
        self.ckpt_dir, self.live, self.model_name = ckpt_dir, live, model_name
        self.strategy = kit.strategy
        self.replicas = self.strategy.num_replicas_in_sync
        self.state_path = ckpt_dir / STATE_FILE
        self.best_oof_path = ckpt_dir / BEST_OOF_FILE  # the best epoch's OOF scores = the fold's OOF predictions
        self.state = FoldState.load(self.state_path, fingerprint, weights_for)
        if self.state.epochs_done == 0:
            for stale in ckpt_dir.glob("*"):
                if stale.is_file():
                    stale.unlink()
        eval_rng = np.random.default_rng([settings.seed, fold, 7])
        self.eval_rows = {
            g.graph_id: np.sort(
                eval_rng.choice(g.num_configs, size=min(settings.eval_configs, g.num_configs), replace=False)
            )
            for g in oof_graphs
        }
        if not any(has_ranking(np.asarray(g.runtime)[self.eval_rows[g.graph_id]]) for g in oof_graphs):
            raise TrainingError(
                f"fold {fold}: none of its {len(oof_graphs)} held-out graphs has 2 distinct runtimes among "
                "its evaluated configs, so early stopping has no score: raise train.eval_configs"
            )
        self.usage = SlotUsage()

    @property
    def steps_per_epoch(self) -> int:
        return epoch_steps(
            self.train_graphs, self.buckets, self.settings.samples_per_graph[self.collection.kind.name], self.replicas
        )

    def run(self) -> FoldState:
        self.kit.reset(self.settings.seed * 1000 + self.fold, self.steps_per_epoch)
        if self.state.epochs_done:
            self.kit.checkpoint.read(self.last_checkpoint(self.state.epochs_done)).assert_existing_objects_matched()
            print(f"fold {self.fold}: resuming after epoch {self.state.epochs_done}")
        if not self.state.finished and self.state.epochs_done < self.settings.epochs:
            samples = self.settings.samples_per_graph[self.collection.kind.name]
            steps = batch_stream(
                self.train_graphs,
                self.buckets,
                samples,
                self.settings.seed * 1000 + self.fold,
                self.replicas,
                self.state.epochs_done * self.steps_per_epoch,
            )
            for epoch in range(self.state.epochs_done, self.settings.epochs):
                started = time.perf_counter()
                progress = (
                    tf.keras.utils.Progbar(self.steps_per_epoch, verbose=self.settings.verbose)
                    if self.settings.verbose
                    else None
                )
                losses, slots = [], self.usage.config_slots
                for i in range(self.steps_per_epoch):
                    bucket, batches = next(steps)
                    shape = self.buckets.shapes[bucket]
                    losses.append(self.kit.train_step(batches, shape))
                    if not math.isfinite(losses[-1]):
                        raise TrainingError(
                            f"{self.collection.name} {self.model_name} fold {self.fold}: loss became {losses[-1]} "
                            "(lower train.learning_rate or check the data); no predictions were written"
                        )
                    for batch in batches:
                        self.usage.add(batch, shape)
                    if progress is not None:
                        progress.update(i + 1, [("loss", losses[-1])])
                logs = {"loss": float(np.mean(losses)), "config_slots": self.usage.config_slots - slots}
                self.end_epoch(epoch, logs, time.perf_counter() - started)
                if self.state.finished:
                    break
            print(
                f"fold {self.fold}: {self.kit.train_compilations} train step compilations so far "
                f"({len(self.buckets.shapes)} buckets x {self.replicas} replicas at most); "
                f"padding efficiency: nodes {self.usage.node_fill:.1%}, "
                f"configs {self.usage.config_fill:.1%}"
            )
            self.state.finished = True
            write_json_atomic(self.state_path, asdict(self.state), sort_keys=True)
        self.kit.best.read(str(self.ckpt_dir / BEST_CHECKPOINT)).assert_existing_objects_matched()
        if not self.best_oof_path.exists():  # a checkpoint written before OOF predictions were kept
            self.write_best_oof(self.scorer.score(self.oof_graphs, self.eval_rows))
        return self.state

    def last_checkpoint(self, epochs_done: int) -> str:
        """Prefix of the weights and optimizer state after ``epochs_done`` epochs (``last-<epochs_done>``):
        one name per epoch, so that the state.json of an earlier epoch never points at later weights."""
        return str(self.ckpt_dir / f"last-{epochs_done}")

    def write_best_oof(self, scores: dict[str, np.ndarray]) -> None:
        """The best weights' scores of the evaluated OOF configs: the fold's OOF predictions."""
        write_atomic(self.best_oof_path, prediction_frame("oof", self.oof_graphs, scores, self.eval_rows).write_parquet)

    def end_epoch(self, epoch: int, logs: dict, seconds: float) -> None:
        scores = self.scorer.score(self.oof_graphs, self.eval_rows)
        score = mean_score(self.collection, self.oof_graphs, scores, self.eval_rows)
        state = self.state
        state.history.append({"epoch": epoch, "loss": float(logs["loss"]), "oof_score": score, "seconds": seconds})
        state.train_seconds += seconds
        state.train_configs += logs["config_slots"]
        if score > state.best_score:
            state.best_score, state.best_epoch, state.wait = score, epoch, 0
            self.kit.best.write(str(self.ckpt_dir / BEST_CHECKPOINT))
            self.write_best_oof(scores)
        else:
            state.wait += 1
        state.epochs_done = epoch + 1
        if state.wait >= self.settings.patience:
            state.finished = True
        self.kit.checkpoint.write(self.last_checkpoint(state.epochs_done))
        write_json_atomic(self.state_path, asdict(state), sort_keys=True)  # commits the epoch: resume from it
        for stale in self.ckpt_dir.glob(f"{Path(self.last_checkpoint(epoch)).name}.*"):
            stale.unlink()
        if self.settings.verbose:
            print(f"fold {self.fold} epoch {epoch}: loss {logs['loss']:.4f}, oof {score:.4f}, {seconds:.1f} s")
        if self.live is not None:
            log_history(self.live, self.fold, [state.history[-1]])


def log_history(live, fold: int, entries: list[dict]) -> None:
    """Learning-curve points for dvclive, one series per fold, x = epoch."""
    for entry in entries:
        live.step = entry["epoch"]
        live.log_metric(f"fold_{fold}/loss", entry["loss"])
        live.log_metric(f"fold_{fold}/oof_score", entry["oof_score"])
    live.make_summary()


def strategy_settings(settings: TrainConfig) -> tuple[tf.distribute.Strategy, TrainConfig]:
    """The strategy ``train.strategy`` selects (:func:`~tpuperf.training.strategy.select_strategy`; call it before
    any TensorFlow op of the process) and ``settings`` with each replica's share of a step's batch
    (:func:`~tpuperf.training.strategy.replica_batch`), what batch shapes are planned with. TrainingError when
    the ``cpus`` replicas do not divide ``train.graphs_per_batch``."""
    strategy = select_strategy(settings.strategy, settings.cpu_replicas)
    try:
        return strategy, replica_batch(settings, strategy)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc


def train_collection(collection: Collection | str, model_name: str, config: Config) -> dict:
    """Train every fold of one model on one collection; write predictions and the run report (:mod:`tpuperf.runs`).

    ``config.train``, ``config.model(model_name)`` (ConfigError for an unknown model) and
    ``config.preprocess.out`` (the cache root) are read."""
    collection = collection if isinstance(collection, Collection) else get_collection(collection)
    settings = config.train
    model = config.model(model_name)
    cache = CollectionCache(config.preprocess.out, collection)
    cache.check_built_with(config.preprocess)
    if cache.stats["max_opcode"] >= model.opcode_vocab:  # the model clips ids into its table: no silent merge
        raise TrainingError(
            f"{cache.dir / STATS_FILE}: opcode ids up to {cache.stats['max_opcode']}, but models.{model_name}."
            f"opcode_vocab is {model.opcode_vocab}: raise it above {cache.stats['max_opcode']} in params.yaml"
        )
    splits = {split: list(cache.graphs(split)) for split in ("train", "valid", "test")}
    excluded = {split: unranked_graphs({g.graph_id: g.runtime for g in splits[split]}) for split in ("train", "valid")}
    if excluded["train"] or excluded["valid"]:
        print(
            f"{collection.name}: left out {len(excluded['train'])} train graph(s) (of folds, training batches and OOF "
            f"scores) and {len(excluded['valid'])} valid graph(s) (of the valid score) with fewer than 2 distinct "
            f"runtimes, nothing to rank: {excluded['train'] + excluded['valid']}"
        )
    dropped = set(excluded["train"])
    splits["train"] = [g for g in splits["train"] if g.graph_id not in dropped]
    if not splits["train"]:
        raise TrainingError(f"{cache.dir}: no training graphs with 2 distinct runtimes")
    fold_of = assign_folds([g.graph_id for g in splits["train"]], settings.folds, settings.seed)
    strategy, settings = strategy_settings(settings)
    # training shapes from the train split only (every fold shares them); scoring plans its own per scored set
    buckets = BucketPlan.from_config(settings).plan(
        splits["train"], settings.configs_per_graph, settings.samples_per_graph[collection.kind.name]
    )
    feat_dim = cache.node_feat_dim
    weights_for = weights_for_cache(asdict(model), cache)
    decisive = {k: v for k, v in asdict(settings).items() if k not in TRAIN_COSMETIC_KEYS}
    fingerprint = _fingerprint(
        weights_for,
        decisive,
        strategy.num_replicas_in_sync,  # the batches of a step depend on it
    )

    print(
        f"{collection.name} / {model_name}: {len(splits['train'])} train, {len(splits['valid'])} valid, "
        f"{len(splits['test'])} test graphs; {settings.folds} folds; train batch buckets (up to nodes: shape) "
        + ", ".join(f"{bound}: {shape}" for bound, shape in zip(buckets.bounds, buckets.shapes))
    )
    live = None
    if settings.live:
        from dvclive import Live

        live = Live(
            dir=str(live_dir(settings.runs_dir, collection, model_name)), save_dvc_exp=False, dvcyaml=None, report=None
        )
    kit = ModelKit(collection, model, settings, strategy, feat_dim, splits["train"][0])
    fold_metrics = []
    for fold in range(settings.folds):
        train_graphs = [g for g in splits["train"] if fold_of[g.graph_id] != fold]
        oof_graphs = [g for g in splits["train"] if fold_of[g.graph_id] == fold]
        ckpt_dir = fold_checkpoint_dir(settings.checkpoints_dir, collection, model_name, fold)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        runner = FoldRunner(
            kit,
            model_name,
            settings,
            fold,
            train_graphs,
            oof_graphs,
            buckets,
            ckpt_dir,
            fingerprint,
            weights_for,
            live,
        )
        if runner.state.history and live is not None:
            log_history(live, fold, runner.state.history)  # replay curves of epochs already done
        state = runner.run()
        scored = {"valid": splits["valid"], "test": splits["test"]}
        scores = {split: runner.scorer.score(graphs) for split, graphs in scored.items()}
        frame = pl.concat(
            [pl.read_parquet(runner.best_oof_path)] + [prediction_frame(s, scored[s], scores[s]) for s in scored]
        )
        write_atomic(prediction_path(settings.runs_dir, collection, model_name, fold), frame.write_parquet)
        fold_metrics.append(
            {
                "fold": fold,
                "best_epoch": state.best_epoch,
                "epochs_run": state.epochs_done,
                "oof_score": state.best_score,
                "state_fingerprint": state.fingerprint,  # the checkpoints this describes (tpuperf export checks)
                "valid_score": mean_score(collection, scored["valid"], scores["valid"]),
                "train_seconds": round(state.train_seconds, 2),
                "train_config_slots_per_s": round(state.train_configs / max(state.train_seconds, 1e-9), 1),
                "train_node_fill": _finite_or_none(
                    runner.usage.node_fill
                ),  # this run's batches (none when resumed finished)
                "train_config_fill": _finite_or_none(runner.usage.config_fill),
            }
        )
    if live is not None:
        live.end()
    metrics = {
        "collection": collection.name,
        "model": model_name,
        "metric": collection.kind.metric,
        "folds": fold_metrics,
        "oof_score": float(np.mean([f["oof_score"] for f in fold_metrics])),
        "valid_score_mean_fold": _mean_or_none([f["valid_score"] for f in fold_metrics]),
        "graphs_excluded_constant_runtime": {split: len(ids) for split, ids in excluded.items()},
        "predictions": prediction_digests(settings.runs_dir, collection, model_name),  # the files this describes
        # what the ensemble checks: every model of a collection predicted from the cache preprocess.out holds
        "predicted_from": {
            **cache.identity(),
            "weights_for": weights_for,
            **trained_with(config, model_name),  # the settings as params.yaml holds them
        },
    }
    written = write_run_report(settings.runs_dir, collection, model_name, metrics)
    print(f"XLA compilations: train step {kit.train_compilations}, scoring {kit.scorer.compilations}")
    print(
        f"{collection.name} / {model_name}: OOF {metrics['oof_score']:.4f}, valid (mean fold) "
        f"{metrics['valid_score_mean_fold']}; wrote {written.parent}"
    )
    return metrics


def _mean_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _finite_or_none(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None
