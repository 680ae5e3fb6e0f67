"""tpuperf.config: the real params.yaml loads; every kind of bad value is one ConfigError naming the key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tpuperf.cli import main
from tpuperf.config import Config, ConfigError, ModelConfig, deep_merge, load_config, load_params, parse
from tpuperf.errors import TpuperfError

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
SLUGS = ["tile-xla", "layout-xla-random", "layout-xla-default", "layout-nlp-random", "layout-nlp-default"]
MODELS = ["chebsage", "sage", "cheb", "baseline"]

# the four model sections as params.yaml spelled them out before model_base (the baseline had no
# config_units/config_interaction/config_attention/attention_heads: RankingModel's None/0/0/1 applied)
# and chebsage had config_layers 2; 1 since the per-config stack measurement, README "What fewer members ...")
GNN = dict(
    units=64,
    config_units=32,
    shared_layers=2,
    config_layers=2,
    cheb_order=3,
    opcode_vocab=128,
    opcode_dim=16,
    dropout=0.0,
    readout="mean",
    config_interaction=8,
    config_operands=True,
    layout_cost_features=True,
    config_attention=0,
    attention_heads=4,
    config_scope={"tile": "configurable", "layout": "nodes"},
    tile_features=True,
)
BEFORE = {
    "chebsage": dict(GNN, conv="chebsage", config_layers=1),
    "sage": dict(GNN, conv="sage"),
    "cheb": dict(GNN, conv="cheb"),
    "baseline": dict(
        conv="baseline",
        units=64,
        config_units=None,
        shared_layers=0,
        config_layers=4,
        cheb_order=3,
        opcode_vocab=128,
        opcode_dim=16,
        dropout=0.0,
        readout="mean",
        config_interaction=0,
        config_operands=False,
        layout_cost_features=False,
        config_attention=0,
        attention_heads=1,
        config_scope={"tile": "nodes", "layout": "nodes"},
        tile_features=True,
    ),
}


@pytest.fixture(scope="module")
def raw() -> dict:
    return load_params(PARAMS)


def bad(raw: dict, changes: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Config.from_dict(deep_merge(raw, changes))


def test_the_real_params_load(raw) -> None:
    config = load_config(PARAMS)
    assert config.collections == tuple(SLUGS)
    assert list(config.models) == MODELS and config.ensemble_models == tuple(MODELS)
    assert (config.train.folds, config.train.epochs, config.train.learning_rate, config.train.eval_configs) == (
        2,
        15,
        0.003,
        128,
    )
    assert (config.train.patience, config.train.configs_per_graph, config.train.weight_decay) == (5, 32, 0.0)
    assert (config.train.lr_schedule.warmup_epochs, config.train.lr_schedule.final_fraction) == (0.0, 1.0)
    assert config.train.samples_per_graph["layout"] == 4 and config.train.samples_per_graph["tile"] == 1
    assert (config.train.buckets.count, config.train.buckets.growth, config.train.buckets.max_batch_nodes) == (
        3,
        2.0,
        6000,
    )
    assert config.train.batch_slack == 1.1
    assert (config.preprocess.prune, config.preprocess.hops) == ("khop", 1) and config.data.synthetic.preset == "small"
    assert config.kernels.python_versions == ("3.10", "3.11", "3.12")
    assert Config.from_dict(raw) == config


def test_model_sections_resolve_to_the_values_before_model_base() -> None:
    config = load_config(PARAMS)
    assert {name: dataclasses.asdict(m) for name, m in config.models.items()} == BEFORE


def test_model_sections_hold_only_their_overrides_of_model_base(raw) -> None:
    """One column per override in `dvc exp show`, not one per model x key; a new model is one line."""
    assert raw["models"]["sage"] == {"conv": "sage"}
    assert raw["models"]["chebsage"] == {"conv": "chebsage", "config_layers": 1}
    assert set(raw["models"]["baseline"]) < set(raw["model_base"])
    config = Config.from_dict(deep_merge(raw, {"models": {"wide": {"conv": "sage", "units": 128}, "plain": None}}))
    assert dataclasses.asdict(config.model("wide")) == {**BEFORE["sage"], "units": 128}
    assert config.model("plain") == config.model_base
    config = Config.from_dict(deep_merge(raw, {"model_base": {"units": 16}}))
    assert {m.units for m in config.models.values()} == {16}  # every model follows model_base
    bad(raw, {"models": {"sage": 3}}, r"models\.sage must be a mapping of overrides of model_base, got 3")
    bad(raw, {"models": {"sage": {"conv": 3}}}, r"models\.sage\.conv must be a string")


def test_train_and_export_stages_depend_on_model_base_and_runs_add_no_dvc_metric() -> None:
    """A model's settings come from model_base too; per-run metrics.json files are plain outputs
    (20 runs would add 40 metric columns to `dvc exp show`), the ensemble's flat file is the metric."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["train"]["params"] == ["train", "model_base", "models.${item.model}"]
    assert "model_base" in stages["export"]["do"]["params"] and "models" in stages["export"]["do"]["params"]
    assert "metrics" not in stages["train"]
    assert any("metrics.json" in next(iter(out)) for out in stages["train"]["outs"] if isinstance(out, dict))
    assert [next(iter(m)) for m in stages["ensemble"]["metrics"]] == ["${ensemble.out}/ensemble_metrics.json"]


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"trian": {}}, r"unknown key\(s\) trian;"),
        ({"train": {"epoch": 3}}, r"unknown key\(s\) train\.epoch;"),
        ({"train": {"buckets": {"size": 2}}}, r"train\.buckets\.size"),
        ({"train": {"lr_schedule": {"warmup": 1}}}, r"train\.lr_schedule\.warmup"),
        ({"models": {"sage": {"unit": 8}}}, r"models\.sage\.unit"),
        ({"kernels": {"bundle": {"owner": "x"}}}, r"kernels\.bundle\.owner"),
    ],
)
def test_unknown_keys_are_named(raw, changes, match) -> None:
    bad(raw, changes, match)


@pytest.mark.parametrize(
    "section, key, dotted",
    [
        ("train", "epochs", "train.epochs"),
        ("preprocess", "hops", "preprocess.hops"),
        ("preprocess", "prune", "preprocess.prune"),
        ("ensemble", "temperature", "ensemble.temperature"),
        ("ensemble", "min_weight", "ensemble.min_weight"),
        ("kernels", "prefix", "kernels.prefix"),
    ],
)
def test_missing_keys_are_named(raw, section, key, dotted) -> None:
    changed = deep_merge(raw, {})
    changed[section] = {k: v for k, v in raw[section].items() if k != key}
    with pytest.raises(ConfigError, match=rf"{dotted} missing"):
        Config.from_dict(changed)


def test_missing_model_key_and_section_are_named(raw) -> None:
    base = {k: v for k, v in raw["model_base"].items() if k != "dropout"}
    with pytest.raises(ConfigError, match=r"model_base\.dropout missing"):
        Config.from_dict({**raw, "model_base": base})
    with pytest.raises(ConfigError, match=r"export missing"):
        Config.from_dict({k: v for k, v in raw.items() if k != "export"})


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"train": {"epochs": "5"}}, r"train\.epochs must be an integer, got '5'"),
        ({"train": {"epochs": 2.5}}, r"train\.epochs must be an integer"),
        ({"train": {"epochs": True}}, r"train\.epochs must be an integer"),
        ({"train": {"jit_compile": "yes"}}, r"train\.jit_compile must be true or false"),
        ({"train": {"learning_rate": "fast"}}, r"train\.learning_rate must be a number"),
        ({"train": {"samples_per_graph": 4}}, r"train\.samples_per_graph must be a mapping"),
        ({"train": {"lr_schedule": "cosine"}}, r"train\.lr_schedule must be a mapping"),
        ({"train": {"weight_decay": "none"}}, r"train\.weight_decay must be a number"),
        ({"data": {"out": 3}}, r"data\.out must be a string"),
        ({"ensemble": {"models": "sage"}}, r"ensemble\.models must be a list of strings"),
        ({"models": {"sage": {"units": None}}}, r"models\.sage\.units must be an integer"),
        ({"model_base": {"layout_cost_features": 1}}, r"model_base\.layout_cost_features must be true or false"),
        ({"model_base": {"tile_features": "yes"}}, r"model_base\.tile_features must be true or false"),
    ],
)
def test_wrong_types_are_named(raw, changes, match) -> None:
    bad(raw, changes, match)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"train": {"folds": 1}}, r"train\.folds must be >= 2, got 1"),
        ({"train": {"epochs": 0}}, r"train\.epochs must be >= 1"),
        ({"train": {"learning_rate": 0}}, r"train\.learning_rate must be > 0"),
        ({"train": {"samples_per_graph": {"layout": 0}}}, r"train\.samples_per_graph\.layout must be >= 1"),
        ({"train": {"buckets": {"growth": 1.0}}}, r"train\.buckets\.growth must be > 1"),
        ({"preprocess": {"hops": -1}}, r"preprocess\.hops must be >= 0"),
        ({"train": {"cpu_replicas": -1}}, r"train\.cpu_replicas must be >= 0, got -1"),
        ({"preprocess": {"config_edge_length": 0}}, r"preprocess\.config_edge_length must be >= 1"),
        ({"ensemble": {"temperature": 0.0}}, r"ensemble\.temperature must be > 0"),
        ({"ensemble": {"min_weight": -0.1}}, r"ensemble\.min_weight must be >= 0"),
        ({"ensemble": {"min_weight": 1.5}}, r"ensemble\.min_weight must be <= 1"),
        ({"models": {"cheb": {"config_units": 0}}}, r"models\.cheb\.config_units must be >= 1"),
        ({"train": {"lr_schedule": {"warmup_epochs": -1}}}, r"train\.lr_schedule\.warmup_epochs must be >= 0"),
        ({"train": {"lr_schedule": {"final_fraction": 1.5}}}, r"train\.lr_schedule\.final_fraction must be <= 1"),
        ({"train": {"lr_schedule": {"final_fraction": -0.1}}}, r"train\.lr_schedule\.final_fraction must be >= 0"),
        ({"train": {"weight_decay": -0.01}}, r"train\.weight_decay must be >= 0"),
        (
            {"train": {"epochs": 2, "lr_schedule": {"warmup_epochs": 2}}},
            r"^params\.yaml: train\.lr_schedule\.warmup_epochs \(2\.0\) must be below train\.epochs \(2\)",
        ),
    ],
)
def test_out_of_range_values_are_named(raw, changes, match) -> None:
    bad(raw, changes, match)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"train": {"loss": "hinge"}}, r"train\.loss must be one of listmle, pairwise, mse, got 'hinge'"),
        ({"train": {"strategy": "cpu"}}, r"train\.strategy must be one of auto, tpu, gpus, cpus, default"),
        ({"data": {"source": "ftp"}}, r"data\.source must be one of auto, kaggle, synthetic, local"),
        ({"preprocess": {"on_bad_file": "ignore"}}, r"preprocess\.on_bad_file must be one of fail, skip"),
        ({"preprocess": {"prune": "bfs"}}, r"preprocess\.prune must be one of khop, chains, got 'bfs'"),
        ({"models": {"sage": {"conv": "gat"}}}, r"models\.sage\.conv must be one of"),
        (
            {"models": {"sage": {"config_scope": {"tile": "edges", "layout": "nodes"}}}},
            r"models\.sage\.config_scope\.tile must be one of nodes, configurable",
        ),
        ({"ensemble": {"weights": "best"}}, r"ensemble\.weights must be one of equal, oof"),
        ({"ensemble": {"models": ["sage", "gat"]}}, r"ensemble\.models \['sage', 'gat'\]: unknown \['gat'\]"),
        ({"kernels": {"models": ["gat"]}}, r"kernels\.models \['gat'\]: unknown \['gat'\]"),
        ({"collections": ["tile-xla", "tile-nlp"]}, r"collections\[1\]"),
        ({"collections": ["tile:xla"]}, r"collections\[0\] is 'tile:xla'; write the slug 'tile-xla'"),
        ({"collections": []}, r"collections is empty"),
        ({"kernels": {"collections": ["layout:xla:nope"]}}, r"kernels\.collections\[0\]"),
    ],
)
def test_unknown_names_are_named(raw, changes, match) -> None:
    bad(raw, changes, match)


def test_the_warm_up_is_checked_against_epochs_in_variants_too(raw) -> None:
    train = Config.from_dict(raw).train
    schedule = dataclasses.replace(train.lr_schedule, warmup_epochs=3.5)
    assert dataclasses.replace(train, epochs=4, lr_schedule=schedule).lr_schedule.warmup_epochs == 3.5
    with pytest.raises(
        ConfigError, match=r"train\.lr_schedule\.warmup_epochs \(3\.5\) must be below train\.epochs \(3\)"
    ):
        dataclasses.replace(train, epochs=3, lr_schedule=schedule)


def test_unknown_model_asked_for(raw) -> None:
    with pytest.raises(ConfigError, match=r"no models\.gat; models has \['chebsage', 'sage', 'cheb', 'baseline'\]"):
        Config.from_dict(raw).model("gat")


def test_a_loaded_config_cannot_change(raw) -> None:
    config = Config.from_dict(raw)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.models["sage"] = config.models["cheb"]  # type: ignore[index]
    # variants are new objects: the loaded one and the raw dict stay as they were
    before = yaml.safe_dump(raw)
    variant = Config.from_dict(deep_merge(raw, {"train": {"epochs": 1}, "models": {"sage": {"units": 8}}}))
    assert (variant.train.epochs, variant.models["sage"].units, variant.models["cheb"].units) == (1, 8, 64)
    assert (config.train.epochs, config.models["sage"].units) == (15, 64) and yaml.safe_dump(raw) == before
    assert dataclasses.replace(config.train, epochs=2).epochs == 2 and config.train.epochs == 15


def test_deep_merge_copies() -> None:
    base = {"a": {"b": 1, "c": [1]}, "d": 2}
    merged = deep_merge(base, {"a": {"b": 3}, "e": {"f": 4}})
    assert merged == {"a": {"b": 3, "c": [1]}, "d": 2, "e": {"f": 4}}
    merged["a"]["c"].append(2)
    assert base == {"a": {"b": 1, "c": [1]}, "d": 2}


def test_parse_one_section_from_another_file() -> None:
    model = parse(ModelConfig, BEFORE["sage"], "models.sage.params", "manifest.json")
    assert model == load_config(PARAMS).models["sage"]
    with pytest.raises(ConfigError, match=r"manifest.json: models\.sage\.params\.config_units missing"):
        parse(
            ModelConfig,
            {k: v for k, v in BEFORE["sage"].items() if k != "config_units"},
            "models.sage.params",
            "manifest.json",
        )


def test_file_errors(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(tmp_path / "list.yaml")
    assert issubclass(ConfigError, TpuperfError)
    broken = tmp_path / "params.yaml"
    broken.write_text(yaml.safe_dump(deep_merge(load_params(PARAMS), {"train": {"epochs": 0}})))
    assert main(["train", "--collection", "tile-xla", "--model", "sage", "--params", str(broken)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tpuperf train failed: ") and "train.epochs must be >= 1, got 0" in err


def test_dvc_stage_names_come_from_params() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    expected = (
        ["fingerprint", "download"]
        + [f"preprocess@{s}" for s in SLUGS]
        + [f"train@{s}-{m}" for s in SLUGS for m in MODELS]
        + ["ensemble"]
        + [f"export@{s}" for s in SLUGS]
    )
    assert done.stdout.split() == expected
