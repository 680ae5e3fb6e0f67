"""Kaggle kernels without Kaggle: metadata, build + push through a fake ``kaggle`` executable, the
built entry script run locally on tiny synthetic data, and the environment checks."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import config_with, params_with, put_on_path

from tpuperf.cli import main
from tpuperf.collection import COLLECTIONS, get_collection
from tpuperf.config import Config, deep_merge, load_config
from tpuperf.kaggle import kernel_entry
from tpuperf.kaggle.cli import kaggle_failure
from tpuperf.kaggle.kernel_entry import (
    KernelEnvironmentError,
    Requirement,
    check_versions,
    find_mount,
    is_bundle,
    plan_install,
    read_manifest,
)
from tpuperf.kaggle.kernels import (
    KernelError,
    build_kernels,
    bundled_wheels,
    download_wheels,
    plan_kernels,
    read_requirements,
    wait_until_ready,
)
from tpuperf.provenance import source_fingerprint
from tpuperf.runs import check_prediction_digests, read_fold_predictions, trained_with
from tpuperf.submission.ensemble import setting_differences

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "kernels" / "requirements-kernel.txt"
USER = "someone"
COMPETITION = "predict-ai-model-runtime"
SLUGS = [f"tpuperf-{c.slug}" for c in COLLECTIONS]
TINY_MODEL = {
    "conv": "sage",
    "units": 8,
    "config_units": 8,
    "shared_layers": 1,
    "config_layers": 1,
    "cheb_order": 2,
    "opcode_vocab": 128,
    "opcode_dim": 4,
    "dropout": 0.0,
    "readout": "sum",
    "config_interaction": 0,
    "config_operands": False,
    "layout_cost_features": False,
    "config_attention": 0,
    "attention_heads": 1,
    "config_scope": {"tile": "configurable", "layout": "nodes"},
    "tile_features": False,
}

FAKE_KAGGLE = """#!{python}
# Stands in for the kaggle CLI: logs its arguments and answers like the real one (or fails as told).
import json, os, sys
args = sys.argv[1:]
owner = os.environ.get("FAKE_KAGGLE_OWNER", "someone")  # account in the URLs the CLI prints
with open(os.environ["FAKE_KAGGLE_LOG"], "a") as fh:
    fh.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_KAGGLE_FAIL") == " ".join(args[:2]):
    print("Kernel push error: Notebook not found")  # the real CLI exits 0 on this
    sys.exit(0)
if args[:2] == ["datasets", "status"]:
    state = os.environ["FAKE_KAGGLE_LOG"] + ".polls"
    polls = int(open(state).read()) if os.path.exists(state) else 0
    open(state, "w").write(str(polls + 1))
    done = os.environ.get("FAKE_KAGGLE_STATUS", "ready")
    print(done if polls >= int(os.environ.get("FAKE_KAGGLE_PENDING", "0")) else "pending")
elif args[:2] == ["kernels", "push"]:
    print(f"Kernel version 1 successfully pushed.  Please check progress at https://www.kaggle.com/code/{{owner}}/k")
else:
    print(f"Dataset version is being created. Please check progress at https://www.kaggle.com/datasets/{{owner}}/b")
"""


@pytest.fixture(autouse=True)
def no_kaggle_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)


def fake_wheelhouse(root: Path) -> Path:
    """An empty (but well-named) wheel for every pin in the real requirements file."""
    root.mkdir(parents=True, exist_ok=True)
    for req in read_requirements(REQUIREMENTS):
        zipfile.ZipFile(root / f"{req.name.replace('-', '_')}-{req.version}-py3-none-any.whl", "w").close()
    return root


def small_params(root: Path) -> dict:
    """The repo's params.yaml with a tiny model, 2 folds, 1 epoch: what the kernels embed."""
    params = params_with(
        {
            "train": dict(folds=2, epochs=1, graphs_per_batch=4, configs_per_graph=16, predict_configs_per_graph=64),
            "ensemble": {"models": ["tiny"]},
            "kernels": dict(
                username=USER,
                models=["tiny"],
                require_tpu=False,
                requirements=str(REQUIREMENTS),
                wheelhouse=str(fake_wheelhouse(root / "wheelhouse")),
            ),
        }
    )
    overrides = {
        "data": {"jobs": 1},
        "preprocess": {"jobs": 1},
        "train": {"strategy": "auto", "jit_compile": True, "verbose": 0},
    }
    return {**params, "models": {"tiny": TINY_MODEL}, "kernels": {**params["kernels"], "overrides": overrides}}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tpuperf kernels build`` (the CLI) of the small params: five kernels and the bundle."""
    root = tmp_path_factory.mktemp("kernels")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(small_params(root)))
    out = root / "build" / "kernels"
    assert main(["kernels", "build", "--out", str(out), "--params", str(params)]) == 0
    return out


# ---------------------------------------------------------------- (1) metadata


def test_kernel_metadata_fields(built: Path):
    folders = sorted(p.name for p in built.iterdir() if p.is_dir() and p.name != "bundle")
    assert folders == sorted(SLUGS)
    slugify = pytest.importorskip("slugify").slugify
    for slug in SLUGS:
        meta = json.loads((built / slug / "kernel-metadata.json").read_text())
        assert meta == {
            "id": f"{USER}/{slug}",
            "title": meta["title"],
            "code_file": f"{slug}.py",
            "language": "python",
            "kernel_type": "script",
            "is_private": True,
            "enable_gpu": False,
            "enable_tpu": True,
            "enable_internet": False,
            "machine_shape": "TpuV5E8",
            "dataset_sources": [f"{USER}/tpuperf-bundle"],
            "competition_sources": [COMPETITION],
            "kernel_sources": [],
            "model_sources": [],
        }
        assert slugify(meta["title"]) == slug and 5 <= len(meta["title"]) <= 50  # Kaggle links title and slug
        assert (built / slug / meta["code_file"]).is_file()
    dataset = json.loads((built / "bundle" / "dataset-metadata.json").read_text())
    assert dataset == {
        "title": "tpuperf kernel bundle",
        "id": f"{USER}/tpuperf-bundle",
        "licenses": [{"name": "other"}],
    }


def test_real_kaggle_cli_accepts_the_metadata(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The installed kaggle package's own kernels_push validation, up to the request it would send."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "not-a-key")
    extended = pytest.importorskip("kaggle.api.kaggle_api_extended")
    sent = []

    class Client:  # what build_kaggle_client() returns, reduced to the one call kernels_push makes
        def __enter__(self):
            self.kernels = type(
                "K", (), {"kernels_api_client": type("A", (), {"save_kernel": lambda _, r: sent.append(r)})()}
            )()
            return self

        def __exit__(self, *exc):
            return False

    api = extended.KaggleApi()
    monkeypatch.setattr(api, "build_kaggle_client", lambda: Client())
    folder = built / "tpuperf-layout-nlp-random"
    api.kernels_push(str(folder))
    (request,) = sent
    assert (request.slug, request.language, request.kernel_type) == (
        f"{USER}/tpuperf-layout-nlp-random",
        "python",
        "script",
    )
    assert (request.enable_tpu, request.enable_gpu, request.enable_internet, request.is_private) == (
        True,
        False,
        False,
        True,
    )
    assert request.machine_shape == "TpuV5E8"
    assert request.competition_data_sources == [COMPETITION]
    assert request.dataset_data_sources == [f"{USER}/tpuperf-bundle"]
    assert request.text == (folder / "tpuperf-layout-nlp-random.py").read_text()


def test_generated_script_is_kernel_entry_plus_config(built: Path):
    script = (built / "tpuperf-tile-xla" / "tpuperf-tile-xla.py").read_text()
    assert Path(kernel_entry.__file__).read_text() in script  # the module verbatim: no second copy to drift
    tree = ast.parse(script)
    (config_node,) = [n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "CONFIG"]
    config = ast.literal_eval(config_node.value)
    manifest = json.loads((built / "bundle" / "bundle.json").read_text())
    assert config["collections"] == ["tile:xla"] and config["models"] == ["tiny"]
    assert config["source_sha256"] == manifest["source_sha256"] == source_fingerprint(REPO / "src" / "tpuperf")
    assert config["bundle_id"] == manifest["dataset_id"] == f"{USER}/tpuperf-bundle"
    assert Config.from_dict(config["params"]).models["tiny"].units == 8  # the kernel's params.yaml passes the checks
    assert config["params"]["train"]["strategy"] == "auto" and config["params"]["train"]["jit_compile"] is True
    assert config["params"]["train"]["folds"] == 2  # the local train.folds, which ensemble.py checks


def test_bundle_holds_the_package_wheel_and_the_extra_wheels(built: Path):
    bundle = built / "bundle"
    manifest = json.loads((bundle / "bundle.json").read_text())
    wheel = bundle / manifest["tpuperf_wheel"]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("tpuperf/kaggle/kernel_entry.py") == (REPO / "src/tpuperf/kaggle/kernel_entry.py").read_bytes()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {"tpuperf/training/trainer.py", "tpuperf/cli.py", "tpuperf/models/model.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert "tpuperf = tpuperf.cli:main" in entry_points
    pins = {(r["name"], r["version"]) for r in manifest["requirements"]}
    assert ("tensorflow-gnn", "1.0.3") in pins and {v for n, v in pins if n == "tf-keras"} >= {"2.18.0", "2.21.0"}
    wheels = {p.name for p in bundle.glob("*.whl")}
    assert {f"{n.replace('-', '_')}-{v}-py3-none-any.whl" for n, v in pins} | {wheel.name} == wheels


def test_per_model_kernels_and_title_limits():
    settings = config_with({"kernels": {"username": USER, "per_model": True}}).kernels
    plans = plan_kernels(settings, COLLECTIONS, ["chebsage", "baseline"])
    assert [p.slug for p in plans[:2]] == ["tpuperf-tile-xla-chebsage", "tpuperf-tile-xla-baseline"]
    assert len(plans) == 10 and all(len(p.models) == 1 for p in plans)
    with pytest.raises(KernelError, match="Kaggle accepts 5 to 50"):
        plan_kernels(
            config_with({"kernels": {"username": USER, "per_model": True, "prefix": "x" * 40}}).kernels,
            COLLECTIONS,
            ["chebsage"],
        )


# ---------------------------------------------------------------- build refusals


def test_build_refuses_missing_wheels_tensorflow_pins_and_no_username(tmp_path: Path):
    params = small_params(tmp_path)
    (Path(params["kernels"]["wheelhouse"]) / "tf_keras-2.18.0-py3-none-any.whl").unlink()
    with pytest.raises(
        KernelError, match=r"has no wheel for tf-keras==2\.18\.0: run `tpuperf kernels build --download-wheels`"
    ):
        build_kernels(params, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "req.txt"
    bad.write_text("tensorflow-tpu==2.18.0\n")
    with pytest.raises(KernelError, match="tensorflow-tpu must not be bundled"):
        read_requirements(bad)
    bad.write_text("polars>=1\n")
    with pytest.raises(KernelError, match=r"req.txt:1: 'polars>=1' is not an exact pin"):
        read_requirements(bad)
    with pytest.raises(KernelError, match="set kernels.username in params.yaml or export KAGGLE_USERNAME"):
        build_kernels(deep_merge(params, {"kernels": {"username": None}}), tmp_path / "out")


def test_build_refuses_overrides_the_local_ensemble_would_refuse(tmp_path: Path):
    """kernels.overrides merged a training knob (train.epochs), a model setting or a preprocess setting into the
    kernels' params: their runs (hours of TPU time) came back to a local ensemble that compares each run report's
    settings and the cache's with params.yaml's and refuses them all. The build names each such override; how a run
    executes (small_params' strategy, jit_compile, verbose, jobs) builds."""
    params = small_params(tmp_path)
    local = params_with({})
    bad = {
        "train": {"epochs": 3, "cpu_replicas": 2, "predict_configs_per_graph": 7},
        "models": {"tiny": {"units": 3}},
        "preprocess": {"hops": 4},
    }
    with pytest.raises(KernelError) as err:
        build_kernels(deep_merge(params, {"kernels": {"overrides": bad}}), tmp_path / "out")
    said = str(err.value)
    assert said.startswith("kernels.overrides changes settings the local tpuperf ensemble compares with params.yaml's")
    for differs in (
        f"preprocess.hops: 4 in kernels.overrides, {local['preprocess']['hops']} in params.yaml",
        f"models.tiny.units: 3 in kernels.overrides, {TINY_MODEL['units']} in params.yaml",
        "train.epochs: 3 in kernels.overrides, 1 in params.yaml",
    ):
        assert differs in said
    assert "cpu_replicas" not in said.split(": set them in params.yaml")[0]
    assert "predict_configs_per_graph" not in said.split(": set them in params.yaml")[0]  # scoring's memory
    assert not (tmp_path / "out").exists()
    assert build_kernels(params, tmp_path / "out")  # small_params' overrides: how a run executes


def test_download_wheels_commands(tmp_path: Path):
    calls = []

    def run(cmd, **_):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    reqs = [
        Requirement("tf-keras", "2.18.0", True),
        Requirement("tf-keras", "2.21.0", True),
        Requirement("polars", "2.1.0", False),
        Requirement("dvclive", "3.49.1", False),
    ]
    download_wheels(reqs, tmp_path / "wh", ["3.10", "3.11"], ["manylinux2014_x86_64"], run)
    dests = {c[c.index("--dest") + 1] for c in calls}
    (fresh,) = dests  # one new directory beside the wheelhouse, renamed into place at the end
    assert Path(fresh).parent == tmp_path and not Path(fresh).exists() and (tmp_path / "wh").is_dir()
    common = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--platform",
        "manylinux2014_x86_64",
        "--implementation",
        "cp",
        "--only-binary=:all:",
    ]
    expected = [
        common + ["--python-version", v, "--dest", fresh, *specs]
        for v in ("3.10", "3.11")
        for specs in (
            ["--no-deps", "tf-keras==2.18.0"],
            ["--no-deps", "tf-keras==2.21.0"],
            ["polars==2.1.0", "dvclive==3.49.1"],
        )
    ]
    assert calls == expected


def test_download_wheels_failure_names_the_python_and_keeps_the_wheelhouse(tmp_path: Path):
    wheelhouse = tmp_path / "wh"
    wheelhouse.mkdir()
    (wheelhouse / "old-1.0-py3-none-any.whl").write_bytes(b"")

    def run(cmd, **_):
        version = cmd[cmd.index("--python-version") + 1]
        Path(cmd[cmd.index("--dest") + 1], f"new-{version}.whl").write_bytes(b"")
        if version == "3.10":
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for polars==2.1.0\n")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    with pytest.raises(KernelError) as err:
        download_wheels(
            [Requirement("polars", "2.1.0", False)], wheelhouse, ["3.12", "3.10"], ["manylinux2014_x86_64"], run
        )
    assert "pip download for Python 3.10 (needs the network) failed (exit code 1)" in str(err.value)
    assert "No matching distribution found for polars==2.1.0" in str(err.value)
    assert (
        "needs wheels for every kernels.python_versions (3.12, 3.10): pin a version that has them, or drop Python 3.10"
        in str(err.value)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wh"]  # no half-filled directory left
    assert [p.name for p in wheelhouse.iterdir()] == ["old-1.0-py3-none-any.whl"]


def compatible_tags(python_version: str, platforms: list[str]) -> set:
    """Wheel tags a CPython ``python_version`` on one of ``platforms`` installs."""
    from packaging import tags

    version = tuple(int(x) for x in python_version.split("."))
    return {*tags.cpython_tags(version, platforms=platforms), *tags.compatible_tags(version, platforms=platforms)}


def test_real_pip_download_of_the_bundle_resolves_for_every_configured_python(tmp_path: Path):
    """The real `pip download` (PyPI) of kernels/requirements-kernel.txt for the repo's
    kernels.python_versions and platforms: every requirement and dependency gets a wheel each
    configured Python can install. A pin without wheels for one of them fails, naming it."""
    from packaging.utils import parse_wheel_filename

    settings = load_config(REPO / "params.yaml").kernels
    requirements = read_requirements(REPO / settings.requirements)
    wheelhouse = tmp_path / "wheelhouse"
    download_wheels(requirements, wheelhouse, settings.python_versions, settings.platforms)
    wheels = bundled_wheels(requirements, wheelhouse)  # raises when a pin has no wheel
    parsed = [parse_wheel_filename(p.name) for p in wheels]
    names = {name for name, *_ in parsed}
    assert {"tensorflow-gnn", "tf-keras", "polars"} <= names
    for version in settings.python_versions:
        usable = compatible_tags(version, settings.platforms)
        for name in names:
            assert any(tags & usable for n, _, _, tags in parsed if n == name), (version, name)

    with pytest.raises(KernelError, match=r"pip download for Python 3.10 .*Requires-Python >=3.11.*drop Python 3.10"):
        download_wheels([Requirement("polars", "2.1.0", False)], tmp_path / "other", ["3.10"], settings.platforms)
    assert not (tmp_path / "other").exists()


# ---------------------------------------------------------------- (2) push through a fake kaggle


@pytest.fixture
def fake_kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    put_on_path(tmp_path, monkeypatch, "kaggle", FAKE_KAGGLE.format(python=sys.executable))
    log = tmp_path / "kaggle-calls.jsonl"
    monkeypatch.setenv("FAKE_KAGGLE_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_push_versions_the_bundle_waits_then_pushes_each_kernel(built: Path, fake_kaggle: Path, capsys):
    params = REPO / "params.yaml"
    assert main(["kernels", "push", "--dir", str(built), "--params", str(params)]) == 0
    manifest = json.loads((built / "bundle" / "bundle.json").read_text())
    note = f"tpuperf 0.1.0 source {manifest['source_sha256'][:12]}"
    assert calls(fake_kaggle) == [
        ["datasets", "version", "-p", str(built / "bundle"), "-m", note, "--dir-mode", "zip"],
        ["datasets", "status", f"{USER}/tpuperf-bundle"],
        *[["kernels", "push", "-p", str(built / slug)] for slug in sorted(SLUGS)],
    ]
    assert f"kaggle kernels status {USER}/tpuperf-tile-xla" in capsys.readouterr().out

    fake_kaggle.unlink()
    assert main(["kernels", "push", "--dir", str(built), "--params", str(params), "--create", "-m", "first"]) == 0
    assert calls(fake_kaggle)[0] == ["datasets", "create", "-p", str(built / "bundle"), "--dir-mode", "zip"]
    fake_kaggle.unlink()
    assert main(["kernels", "push", "--dir", str(built), "--params", str(params), "--kernels-only"]) == 0
    assert [c[:2] for c in calls(fake_kaggle)] == [["kernels", "push"]] * 5


def test_push_failures_are_clear(built: Path, fake_kaggle: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    params = REPO / "params.yaml"
    monkeypatch.setenv("FAKE_KAGGLE_FAIL", "kernels push")
    assert main(["kernels", "push", "--dir", str(built), "--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert "kaggle kernels push (tpuperf-layout-nlp-default) failed (exit code 0)" in err
    assert "Kernel push error: Notebook not found" in err
    assert [c[:2] for c in calls(fake_kaggle)][-1] == ["kernels", "push"]  # stopped at the first failure
    assert sum(c[:2] == ["kernels", "push"] for c in calls(fake_kaggle)) == 1

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent.parent / "no-such-bin"))
    assert main(["kernels", "push", "--dir", str(built), "--params", str(params)]) == 1
    assert "the `kaggle` command is not on PATH" in capsys.readouterr().err
    assert main(["kernels", "push", "--dir", str(built / "nothing"), "--params", str(params)]) == 1
    assert "run `tpuperf kernels build` first" in capsys.readouterr().err


def test_success_output_naming_an_error_slug_is_a_success(
    built: Path, fake_kaggle: Path, monkeypatch: pytest.MonkeyPatch
):
    """An account such as no-error-lab appears in the URLs of successful pushes: not a failure."""
    monkeypatch.setenv("FAKE_KAGGLE_OWNER", "no-error-lab")
    assert main(["kernels", "push", "--dir", str(built), "--params", str(REPO / "params.yaml")]) == 0
    assert [c[:2] for c in calls(fake_kaggle)] == [["datasets", "version"], ["datasets", "status"]] + [
        ["kernels", "push"]
    ] * 5


@pytest.mark.parametrize(
    "returncode, output, failure",
    [
        (
            0,
            "Kernel version 3 successfully pushed.  Please check progress at https://www.kaggle.com/code/no-error-lab/k\n",
            None,
        ),
        (
            0,
            "Dataset version is being created. Please check progress at https://www.kaggle.com/datasets/me/error-bundle\n",
            None,
        ),
        (0, "ready\n", None),
        (0, "Kernel push error: Notebook not found\n", "Kernel push error: Notebook not found"),
        (0, "Kernel push error: see previous output\n", "Kernel push error: see previous output"),
        (
            0,
            "Starting upload\nDataset version creation error: Invalid licence\n",
            "Dataset version creation error: Invalid licence",
        ),
        (0, "Dataset creation error: slug taken\n", "Dataset creation error: slug taken"),
        (
            0,
            "The following are not valid dataset sources and could not be added to the kernel: ['me/b']\nKernel version 2 "
            "successfully pushed.",
            "The following are not valid dataset sources and could not be added to the kernel: ['me/b']",
        ),
        (0, "403 - Forbidden\n", "403 - Forbidden"),
        (0, "Could not submit to competition\n", "Could not submit to competition"),
        (1, "403 Client Error: Forbidden for url: https://www.kaggle.com/api/v1/x\n", "exit code 1"),
    ],
)
def test_kaggle_failure_reads_the_cli_messages_precisely(returncode: int, output: str, failure: str | None):
    assert kaggle_failure(returncode, output) == failure


def test_wait_until_ready_stops_when_kaggle_failed_the_version(fake_kaggle: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_KAGGLE_STATUS", "failed")
    with pytest.raises(KernelError, match=r"reports the new version of someone/tpuperf-bundle as 'failed'"):
        wait_until_ready("kaggle", f"{USER}/tpuperf-bundle", timeout=60, run=subprocess.run, poll_seconds=0)
    assert len(calls(fake_kaggle)) == 1


def test_wait_until_ready_polls(fake_kaggle: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_KAGGLE_PENDING", "2")
    wait_until_ready("kaggle", f"{USER}/tpuperf-bundle", timeout=60, run=subprocess.run, poll_seconds=0)
    assert calls(fake_kaggle) == [["datasets", "status", f"{USER}/tpuperf-bundle"]] * 3
    monkeypatch.setenv("FAKE_KAGGLE_PENDING", "100")
    with pytest.raises(KernelError, match="still 'pending' after 0 s.*--kernels-only"):
        wait_until_ready("kaggle", f"{USER}/tpuperf-bundle", timeout=0, run=subprocess.run, poll_seconds=0)


# ---------------------------------------------------------------- (3) the entry script, locally


def test_entry_script_runs_the_pipeline_locally(built: Path, tmp_path: Path):
    """The built tile-xla kernel on CPU, against tiny synthetic data laid out as Kaggle mounts it."""
    from tpuperf.data.synthetic import write_dataset

    data = tmp_path / "input" / COMPETITION
    write_dataset(data, preset="tiny", seed=0)
    working = tmp_path / "working"
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}  # the script must set it
    env.update(
        TPUPERF_KERNEL_INPUT=str(tmp_path / "input"),
        TPUPERF_KERNEL_BUNDLE=str(built / "bundle"),
        TPUPERF_KERNEL_WORKING=str(working),
        TPUPERF_KERNEL_SCRATCH=str(tmp_path / "scratch"),
        TPUPERF_KERNEL_SKIP_INSTALL="1",
        CUDA_VISIBLE_DEVICES="",
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(built / "tpuperf-tile-xla" / "tpuperf-tile-xla.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert seconds < 120

    report = json.loads((working / "kernel_report.json").read_text())
    assert report["status"] == "ok" and report["tpu"] is False
    assert [s["step"] for s in report["steps"]] == [
        "download",
        "preprocess --collection tile:xla",
        "train --collection tile:xla --model tiny",
    ]
    assert report["versions"]["keras"] == "tf_keras"
    run_params = yaml.safe_load((working / "kernel_params.yaml").read_text())
    assert run_params["data"]["source"] == "local" and run_params["data"]["dir"] == str(data)
    assert run_params["train"]["runs_dir"] == str(working / "runs")
    assert (run_params["train"]["strategy"], run_params["train"]["jit_compile"]) == ("auto", True)

    preds = read_fold_predictions(working / "runs", folds=2, collections=["tile:xla"], models=["tiny"])
    collection = get_collection("tile:xla")
    for split in ("valid", "test"):
        files = sorted(collection.split_dir(data, split).glob("*.npz"))
        assert files
        for path in files:
            with np.load(path) as npz:
                configs = len(npz["config_runtime"])
            for fold in (0, 1):
                rows = preds.filter(
                    (preds["split"] == split) & (preds["graph_id"] == path.stem) & (preds["fold"] == fold)
                )
                assert sorted(rows["config_id"].to_list()) == list(range(configs)), (split, path.stem, fold)
    metrics = json.loads((working / "runs" / "tile-xla" / "tiny" / "report.json").read_text())
    assert [f["fold"] for f in metrics["folds"]] == [0, 1] and metrics["metric"] == "tile_score"
    # the local ensemble takes the run, copied into runs/: trained with params.yaml's settings (the overrides only
    # change how it ran), its fold files the ones its report describes
    local = load_config(built.parent.parent / "params.yaml")
    assert setting_differences("tiny", metrics["predicted_from"], trained_with(local, "tiny")) == []
    runs = tmp_path / "runs"
    shutil.copytree(working / "runs", runs)
    check_prediction_digests(runs, collection, "tiny", metrics, folds=2)


# ---------------------------------------------------------------- (4) environment checks


def test_version_check_refuses_a_mismatched_tf_keras():
    check_versions("2.18.1", "2.18.0", "1")  # same major.minor: fine
    check_versions("2.21.0+tpu", "2.21.0", "1")
    with pytest.raises(KernelEnvironmentError) as err:
        check_versions("2.18.1", "2.21.0", "1")
    assert "tf-keras 2.21.0 does not match TensorFlow 2.18.1 (their major.minor must be equal)" in str(err.value)
    assert "add tf-keras==2.18.* to kernels/requirements-kernel.txt" in str(err.value)
    with pytest.raises(KernelEnvironmentError, match="tf-keras is not installed"):
        check_versions("2.18.1", None, "1")
    with pytest.raises(
        KernelEnvironmentError, match="TF_USE_LEGACY_KERAS is None, must be '1' before TensorFlow is imported"
    ):
        check_versions("2.18.1", "2.18.0", None)
    with pytest.raises(KernelEnvironmentError, match="TensorFlow is not installed in this image"):
        check_versions(None, "2.18.0", "1")


def test_install_plan_adds_only_what_is_missing():
    bundled = [
        Requirement("tensorflow-gnn", "1.0.3", True),
        Requirement("tf-keras", "2.18.0", True),
        Requirement("tf-keras", "2.21.0", True),
        Requirement("polars", "2.1.0", False),
        Requirement("dvclive", "3.49.1", False),
    ]
    image = {"tf-keras": "2.15.0", "polars": "1.9.0"}  # tf-keras of another TF, polars present
    plan = plan_install(bundled, "0.1.0", "2.18.1", image.get)
    assert plan.no_deps == ["tf-keras==2.18.0", "tensorflow-gnn==1.0.3", "tpuperf==0.1.0"]
    assert plan.resolved == ["dvclive==3.49.1"]
    ready = {"tf-keras": "2.18.3", "tensorflow-gnn": "1.0.2", "polars": "1.9.0", "dvclive": "3.0"}
    assert plan_install(bundled, "0.1.0", "2.18.1", ready.get).specs == ["tpuperf==0.1.0"]
    with pytest.raises(
        KernelEnvironmentError,
        match=r"TensorFlow 2\.19\.0 and tf-keras 2\.15\.0, but the bundle's "
        r"tf-keras wheels are 2\.18\.0, 2\.21\.0: add tf-keras==2\.19\.\*",
    ):
        plan_install(bundled, "0.1.0", "2.19.0", image.get)


def test_bundle_is_found_and_must_match_the_kernel(tmp_path: Path, capsys):
    bundle = tmp_path / "input" / "datasets" / USER / "tpuperf-bundle"  # a mount path other than the default
    bundle.mkdir(parents=True)
    (bundle / "bundle.json").write_text(json.dumps({"dataset_id": f"{USER}/tpuperf-bundle", "source_sha256": "a" * 64}))
    found = find_mount(
        tmp_path / "input", "tpuperf-bundle", lambda d: is_bundle(d, f"{USER}/tpuperf-bundle"), "the bundle"
    )
    assert found == bundle and "is absent, using" in capsys.readouterr().out
    with pytest.raises(KernelEnvironmentError, match=r"the competition data is not mounted: .*\(datasets\)"):
        find_mount(tmp_path / "input", COMPETITION, kernel_entry.is_dataset_root, "the competition data")
    # as Kaggle mounts the competition: npz_all/npz/... beside sample_submission.csv (was 'not mounted')
    competition = tmp_path / "input" / COMPETITION
    (competition / "npz_all" / "npz" / "tile").mkdir(parents=True)
    (competition / "sample_submission.csv").write_text("ID,TopConfigs\n")
    assert find_mount(tmp_path / "input", COMPETITION, kernel_entry.is_dataset_root, "the data") == competition
    config = {"source_sha256": "b" * 64, "bundle_id": f"{USER}/tpuperf-bundle"}
    with pytest.raises(
        KernelEnvironmentError,
        match="holds tpuperf source aaaaaaaaaaaa but this kernel was built with "
        "bbbbbbbbbbbb: the new dataset version is still processing",
    ):
        read_manifest(bundle, config)
