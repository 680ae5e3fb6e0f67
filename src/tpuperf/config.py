"""params.yaml: the one place every knob lives, loaded once into a typed, frozen :class:`Config`.

Every field is required (no defaults in code: the values live in params.yaml only). Loading
checks every section: an unknown key, a missing key, a value of the wrong type or out of range
raises one :class:`ConfigError` whose message names the dotted key (``train.epochs``) and what
to do. A loaded config is never changed; a caller that needs a variant (tests, benchmarks, the
Kaggle kernel's overrides) builds a new one with :func:`Config.from_dict` from
``deep_merge(raw, overrides)`` or with :func:`dataclasses.replace`.

A ``models.<name>`` section lists only its overrides of ``model_base`` (:func:`Config.from_dict`
merges them, so ``config.model(name)`` is complete); ``collections`` lists the collection slugs
the pipeline runs and the keys of ``models`` are the models (dvc.yaml's foreach/matrix read both).
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from tpuperf.collection import KINDS, get_collection
from tpuperf.errors import TpuperfError

DEFAULT_PARAMS = Path("params.yaml")

SOURCES = ("auto", "kaggle", "synthetic", "local")
PRESETS = ("tiny", "small", "medium", "real")
BAD_FILE_MODES = ("fail", "skip")
PRUNE_MODES = ("khop", "chains")
LOSSES = ("listmle", "pairwise", "mse")
STRATEGIES = ("auto", "tpu", "gpus", "cpus", "default")
CONVS = ("chebsage", "sage", "cheb", "baseline")
READOUTS = ("mean", "sum", "max", "min")
CONFIG_SCOPES = ("nodes", "configurable")
WEIGHT_SCHEMES = ("equal", "oof")


class ConfigError(TpuperfError, ValueError):
    """params.yaml is missing, malformed or holds a bad value; the message names the dotted key."""


def _check(
    *, min: float | None = None, above: float | None = None, max: float | None = None, choices: tuple | None = None
) -> Any:
    """A required dataclass field with a range (``min``/``max`` inclusive, ``above`` exclusive) or a choice."""
    return field(metadata={"min": min, "above": above, "max": max, "choices": choices})


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class SyntheticConfig:
    """``data.synthetic``: the generator used when data.source resolves to synthetic."""

    preset: str = _check(choices=PRESETS)
    seed: int = _check(min=0)


@dataclass(frozen=True)
class DataConfig:
    """``data``: where the dataset comes from and where it goes (paths relative to the repo root)."""

    source: str = _check(choices=SOURCES)
    dir: str | None = _check()
    out: str = _check()
    fingerprint: str = _check()
    competition: str = _check()
    synthetic: SyntheticConfig = _check()
    jobs: int = _check(min=1)


@dataclass(frozen=True)
class PreprocessConfig:
    """``preprocess``: layout graph pruning (``prune`` khop | chains; ``hops``: the k of khop, 0 =
    full graph, or the context hops around the chains) and feature normalisation."""

    out: str = _check()
    prune: str = _check(choices=PRUNE_MODES)
    hops: int = _check(min=0)
    jobs: int = _check(min=1)
    on_bad_file: str = _check(choices=BAD_FILE_MODES)
    log1p_above: float = _check(above=0)
    std_floor: float = _check(above=0)
    chunk_mb: int = _check(min=1)
    config_edge_length: int = _check(min=1)


@dataclass(frozen=True)
class PerKind:
    """A value per collection kind; ``per_kind[collection.kind.name]`` picks one (KeyError for
    a name other than ``tile``/``layout``)."""

    tile: int = _check(min=1)
    layout: int = _check(min=1)

    def __getitem__(self, kind: str) -> int:
        if kind not in KINDS:
            raise KeyError(f"collection kind must be one of {', '.join(KINDS)}, got {kind!r}")
        return getattr(self, kind)


@dataclass(frozen=True)
class ScopePerKind(PerKind):
    """``config_scope`` per collection kind: ``nodes`` or ``configurable`` (tpuperf.models.model)."""

    tile: str = _check(choices=CONFIG_SCOPES)
    layout: str = _check(choices=CONFIG_SCOPES)


@dataclass(frozen=True)
class BucketsConfig:
    """``train.buckets``: graphs grouped by node count into ``count`` static batch shapes; node slots x
    configs per batch bounded by ``train_config_nodes`` (training) and ``predict_config_nodes`` (scoring)."""

    count: int = _check(min=1)
    growth: float = _check(above=1)
    max_batch_nodes: int = _check(min=1)
    train_config_nodes: int = _check(min=1)
    predict_config_nodes: int = _check(min=1)


@dataclass(frozen=True)
class ScheduleConfig:
    """``train.lr_schedule``: linear warm-up from 0 to ``train.learning_rate`` over ``warmup_epochs``
    epochs of steps, then cosine decay to ``final_fraction`` x learning_rate at the last planned step
    (``train.epochs`` epochs); ``warmup_epochs: 0, final_fraction: 1`` is a constant learning rate."""

    warmup_epochs: float = _check(min=0)
    final_fraction: float = _check(min=0, max=1)


@dataclass(frozen=True)
class TrainConfig:
    """``train``: k-fold training (folds >= 2), batching, optimiser (AdamW: peak learning_rate > 0, its
    schedule, decoupled weight_decay >= 0) and outputs; ConfigError when the warm-up is not shorter than epochs."""

    folds: int = _check(min=2)
    seed: int = _check(min=0)
    epochs: int = _check(min=1)
    patience: int = _check(min=1)
    graphs_per_batch: int = _check(min=1)
    configs_per_graph: int = _check(min=2)
    predict_configs_per_graph: int = _check(min=1)
    samples_per_graph: PerKind = _check()
    batch_slack: float = _check(min=1)
    buckets: BucketsConfig = _check()
    learning_rate: float = _check(above=0)
    lr_schedule: ScheduleConfig = _check()
    weight_decay: float = _check(min=0)
    clip_norm: float = _check(above=0)
    loss: str = _check(choices=LOSSES)
    loss_args: dict = _check()
    eval_configs: int = _check(min=1)
    jit_compile: bool = _check()
    strategy: str = _check(choices=STRATEGIES)
    cpu_replicas: int = _check(min=0)
    live: bool = _check()
    verbose: int = _check(min=0)
    runs_dir: str = _check()
    checkpoints_dir: str = _check()

    def __post_init__(self) -> None:
        if self.lr_schedule.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"train.lr_schedule.warmup_epochs ({self.lr_schedule.warmup_epochs}) must be below train.epochs "
                f"({self.epochs}): the cosine decay needs steps after the warm-up"
            )


@dataclass(frozen=True)
class ModelConfig:
    """``models.<name>``: the arguments of :class:`tpuperf.models.RankingModel` (besides kind)."""

    conv: str = _check(choices=CONVS)
    units: int = _check(min=1)
    config_units: int | None = _check(min=1)
    shared_layers: int = _check(min=0)
    config_layers: int = _check(min=1)
    cheb_order: int = _check(min=1)
    opcode_vocab: int = _check(min=1)
    opcode_dim: int = _check(min=1)
    dropout: float = _check(min=0)
    readout: str = _check(choices=READOUTS)
    config_interaction: int = _check(min=0)
    config_operands: bool = _check()
    layout_cost_features: bool = _check()
    tile_features: bool = _check()
    config_attention: int = _check(min=0)
    attention_heads: int = _check(min=1)
    config_scope: ScopePerKind = _check()


@dataclass(frozen=True)
class EnsembleConfig:
    """``ensemble``: which models (null: all), how they are weighted (temperature > 0) and the
    weight below which a model is left out (min_weight in [0, 1])."""

    models: tuple[str, ...] | None = _check()
    weights: str = _check(choices=WEIGHT_SCHEMES)
    temperature: float = _check(above=0)
    min_weight: float = _check(min=0, max=1)
    out: str = _check()


@dataclass(frozen=True)
class ExportConfig:
    """``export``: where `tpuperf export` writes the per-collection model directories, and ``outlier_sigma``: how
    many train standard deviations from the train mean a standardised feature value of a ranked file may lie before
    `tpuperf rank` counts and warns about it (carried in the manifest)."""

    out: str = _check()
    outlier_sigma: float = _check(above=0)


@dataclass(frozen=True)
class BundleConfig:
    """``kernels.bundle``: the Kaggle dataset holding the wheels."""

    slug: str = _check()
    title: str = _check()
    license: str = _check()


@dataclass(frozen=True)
class KernelsConfig:
    """``kernels``: the Kaggle TPU kernels (``overrides`` is merged into the kernel's params.yaml)."""

    username: str | None = _check()
    prefix: str = _check()
    collections: tuple[str, ...] = _check()
    models: tuple[str, ...] = _check()
    per_model: bool = _check()
    machine_shape: str = _check()
    is_private: bool = _check()
    require_tpu: bool = _check()
    bundle: BundleConfig = _check()
    requirements: str = _check()
    wheelhouse: str = _check()
    python_versions: tuple[str, ...] = _check()
    platforms: tuple[str, ...] = _check()
    dataset_wait_seconds: int = _check(min=0)
    overrides: dict = _check()


@dataclass(frozen=True)
class Config:
    """The whole params.yaml. ``models`` maps a model name to its section (order as in the file)."""

    collections: tuple[str, ...] = _check()
    data: DataConfig = _check()
    preprocess: PreprocessConfig = _check()
    train: TrainConfig = _check()
    model_base: ModelConfig = _check()
    models: Mapping[str, ModelConfig] = _check()
    ensemble: EnsembleConfig = _check()
    export: ExportConfig = _check()
    kernels: KernelsConfig = _check()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "params.yaml") -> Config:
        """Validate a params mapping (as loaded from YAML); ConfigError names the first bad key.

        Each ``models.<name>`` section (a mapping, or null for no overrides) is ``model_base``
        with the section's keys replacing its values; a key ``model_base`` lacks is an unknown key."""
        base, models = raw.get("model_base"), raw.get("models")
        if isinstance(base, Mapping) and isinstance(models, Mapping):
            for name, overrides in models.items():
                if overrides is not None and not isinstance(overrides, Mapping):
                    raise ConfigError(
                        f"{source}: models.{name} must be a mapping of overrides of model_base, got {overrides!r}"
                    )
            raw = {**raw, "models": {name: {**base, **(overrides or {})} for name, overrides in models.items()}}
        config = _build(cls, raw, "", source)
        if not config.collections:
            raise ConfigError(f"{source}: collections is empty; list at least one collection slug")
        for i, name in enumerate(config.collections):
            try:
                slug = get_collection(name).slug
            except ValueError as exc:
                raise ConfigError(f"{source}: collections[{i}]: {exc}") from exc
            if slug != name:
                raise ConfigError(
                    f"{source}: collections[{i}] is {name!r}; write the slug {slug!r} (dvc.yaml stage names use it)"
                )
        if not config.models:
            raise ConfigError(f"{source}: models is empty; add at least one model section")
        for key, names in (("ensemble.models", config.ensemble.models), ("kernels.models", config.kernels.models)):
            unknown = sorted(set(names or ()) - set(config.models))
            if unknown or names == ():
                raise ConfigError(f"{source}: {key} {list(names)}: unknown {unknown}; models has {list(config.models)}")
        for i, name in enumerate(config.kernels.collections):
            try:
                get_collection(name)
            except ValueError as exc:
                raise ConfigError(f"{source}: kernels.collections[{i}]: {exc}") from exc
        return config

    def model(self, name: str) -> ModelConfig:
        """The ``models.<name>`` section; ConfigError listing the models when there is none."""
        if name not in self.models:
            raise ConfigError(f"params.yaml has no models.{name}; models has {list(self.models)}")
        return self.models[name]

    @property
    def ensemble_models(self) -> tuple[str, ...]:
        """ensemble.models, or every model when it is null."""
        return self.ensemble.models or tuple(self.models)


def load_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """The whole params file as a plain dict (for the few places that need the file's text, e.g.
    a kernel's params.yaml); ConfigError when it is missing or not a mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found (run from the repo root or pass --params)")
    try:
        with path.open() as fh:
            params = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return params


def load_config(path: Path | str = DEFAULT_PARAMS) -> Config:
    """params.yaml (or ``path``) loaded and validated; ConfigError names the file and the key."""
    return Config.from_dict(load_params(path), str(path))


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``overrides`` merged in (nested mappings merged key by key,
    anything else replaced); neither input is changed."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def plain(settings: Any) -> Any:
    """A settings dataclass (or a dict of settings) as its JSON reads back: dicts, tuples as lists, paths as
    strings. What run reports record (``predicted_from``'s ``model`` and ``train``) and the ensemble compares
    with params.yaml's sections."""
    if dataclasses.is_dataclass(settings):
        settings = dataclasses.asdict(settings)
    return json.loads(json.dumps(settings, default=str))


# ---------------------------------------------------------------- validation


def parse(cls: type, raw: Any, key: str, source: str) -> Any:
    """One section dataclass (e.g. :class:`ModelConfig`) from a mapping found at dotted ``key`` in
    the file ``source`` (e.g. an export manifest); ConfigError as for params.yaml."""
    return _build(cls, raw, key, source)


def _name(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``raw`` at dotted key ``prefix``."""
    where = prefix or "the top level"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__} {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(_name(prefix, k) for k in unknown)}; "
            f"{where} accepts {', '.join(fields)} (check the spelling)"
        )
    missing = [k for k in fields if k not in raw]
    if missing:
        raise ConfigError(f"{source}: {', '.join(_name(prefix, k) for k in missing)} missing; add it to params.yaml")
    hints = typing.get_type_hints(cls)
    values = {k: _value(hints[k], raw[k], _name(prefix, k), f.metadata, source) for k, f in fields.items()}
    try:
        return cls(**values)
    except ConfigError as exc:  # a check across fields (__post_init__), which does not know the file
        raise ConfigError(f"{source}: {exc}") from exc


def _value(hint: Any, value: Any, key: str, rules: Mapping[str, Any], source: str) -> Any:
    """``value`` checked against the type ``hint`` and the field's range/choice ``rules``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} must be {expected}, got {value!r}")

    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if origin is collections.abc.Mapping:  # models: name -> ModelConfig
        if not isinstance(value, Mapping):
            raise bad("a mapping of name -> section")
        return types.MappingProxyType(
            {str(k): _value(args[1], v, f"{key}.{k}", rules, source) for k, v in value.items()}
        )
    if hint is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise bad("a mapping (or {})")
        return copy.deepcopy(dict(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise bad("a string")
    if rules.get("choices") is not None and value not in rules["choices"]:
        raise bad(f"one of {', '.join(rules['choices'])}")
    if rules.get("min") is not None and value < rules["min"]:
        raise bad(f">= {rules['min']}")
    if rules.get("above") is not None and not value > rules["above"]:
        raise bad(f"> {rules['above']}")
    if rules.get("max") is not None and value > rules["max"]:
        raise bad(f"<= {rules['max']}")
    return value
