"""What runs inside a Kaggle TPU kernel: install the bundle offline, check the environment, then
download -> preprocess -> train one collection's models with the library calls of the DVC stages'
``tpuperf`` subcommands and leave ``runs/<slug>/<model>/`` in the working directory.

``tpuperf kernels build`` (:mod:`tpuperf.kaggle.kernels`) writes this module's source verbatim into
each kernel's script, followed by that kernel's ``CONFIG`` and ``main(CONFIG)``. There is no other
copy to keep in step. The script runs before tpuperf is installed, so this module imports only
the standard library at the top; tpuperf and TensorFlow are imported inside functions, after the
install step and after ``TF_USE_LEGACY_KERAS=1`` is set.

Installing (internet is off): only what the TPU image lacks, from the bundle dataset's wheels
(``--no-index``). TensorFlow itself is never installed: the image's build talks to the TPU.

- tf-keras: the bundled wheel whose major.minor equals the image's TensorFlow, unless the image
  already has such a tf-keras;
- requirements marked no-deps (tensorflow-gnn, tf-keras: their metadata asks for a distribution
  named ``tensorflow``, which pip would try to install over ``tensorflow-tpu``/``-cpu``) and tpuperf
  itself: ``--no-deps``;
- the rest (e.g. polars): with their dependencies, constrained to the version of every
  distribution already installed, so pip can add packages but never change one.

Paths (environment variables override the Kaggle defaults; the tests run the script locally):

    TPUPERF_KERNEL_INPUT    where Kaggle mounts inputs                    /kaggle/input
    TPUPERF_KERNEL_DATA     the competition data                          <input>/<competition>
    TPUPERF_KERNEL_BUNDLE   the bundle dataset (wheels + bundle.json)     <input>/<bundle slug>
    TPUPERF_KERNEL_WORKING  outputs Kaggle keeps (runs/, report, params)  /kaggle/working
    TPUPERF_KERNEL_SCRATCH  data copy, cache, checkpoints (not kept)      /tmp/tpuperf
    TPUPERF_KERNEL_SKIP_INSTALL=1   use the packages already installed (local runs)

When a default input path is absent, a directory holding the expected marker (bundle.json of the
right dataset; sample_submission.csv + npz/ beside it or one folder down) is searched for under the input root and announced.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUNDLE_MANIFEST = "bundle.json"
LEGACY_KERAS_VAR = "TF_USE_LEGACY_KERAS"
TF_KERAS = "tf-keras"
REPORT_FILE = "kernel_report.json"
PARAMS_FILE = "kernel_params.yaml"
SEARCH_DEPTH = 4  # how deep under the input root a moved mount is looked for
PIP_TAIL_LINES = 25  # lines of pip's output quoted when it fails


class KernelEnvironmentError(RuntimeError):
    """The kernel cannot run here; the message says what is wrong and how to fix it."""


def normalise(name: str) -> str:
    """PEP 503 distribution name: ``tf_keras`` and ``TF-Keras`` are both ``tf-keras``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def major_minor(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as ``2.18.1``, ``2.18.0rc1`` or ``2.18.0+cpu``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise KernelEnvironmentError(f"cannot read a major.minor version from {version!r}")
    return int(match.group(1)), int(match.group(2))


def check_versions(tensorflow: str | None, tf_keras: str | None, legacy_keras: str | None) -> None:
    """Refuse a combination that cannot work: tensorflow-gnn 1.0 needs Keras 2 (tf-keras) of the
    same major.minor as TensorFlow, selected with TF_USE_LEGACY_KERAS=1 before TensorFlow loads."""
    problems = []
    if tensorflow is None:
        problems.append("TensorFlow is not installed in this image (pick a TPU image with TensorFlow)")
    if tf_keras is None:
        problems.append(
            f"{TF_KERAS} is not installed: the bundle should provide the one matching TensorFlow {tensorflow}"
        )
    elif tensorflow is not None and major_minor(tf_keras) != major_minor(tensorflow):
        want = "{}.{}".format(*major_minor(tensorflow))
        problems.append(
            f"{TF_KERAS} {tf_keras} does not match TensorFlow {tensorflow} (their major.minor must be equal): "
            f"add {TF_KERAS}=={want}.* to kernels/requirements-kernel.txt, then `tpuperf kernels build "
            "--download-wheels` and `tpuperf kernels push`"
        )
    if legacy_keras != "1":
        problems.append(f"{LEGACY_KERAS_VAR} is {legacy_keras!r}, must be '1' before TensorFlow is imported")
    if problems:
        raise KernelEnvironmentError("the Python environment cannot run tpuperf:\n  - " + "\n  - ".join(problems))


def check_imports(distributions: list[str]) -> dict[str, str]:
    """Import what training needs: tensorflow-gnn, the modules of every bundled distribution
    (``distributions``) and tpuperf's stages. A clear error when one is missing or when Keras 3
    was picked up instead of tf-keras. Returns the versions found."""
    try:
        import tensorflow as tf
        import tensorflow_gnn as tfgnn
    except Exception as exc:  # any failure here means the stack cannot work together
        raise KernelEnvironmentError(f"tensorflow-gnn cannot be imported ({type(exc).__name__}: {exc})") from exc
    keras_module = tf.keras.layers.Dense.__module__
    if not keras_module.startswith("tf_keras"):
        raise KernelEnvironmentError(
            f"tf.keras is {keras_module}, not tf_keras: TensorFlow was imported before {LEGACY_KERAS_VAR}=1 was set"
        )
    provided = importlib.metadata.packages_distributions()
    modules = []
    for dist in sorted({normalise(d) for d in distributions}):
        tops = sorted(m for m, owners in provided.items() if dist in {normalise(o) for o in owners})
        if not tops:
            raise KernelEnvironmentError(f"{dist} is not installed (it is in the bundle's requirements)")
        # a distribution's own module when it has one: some list stray top-level names (tensorflow-gnn: dist, kokoro)
        guess = dist.replace("-", "_")
        modules += [guess] if guess in tops else tops
    try:
        for module in [*modules, "tpuperf.data.download", "tpuperf.data.preprocess", "tpuperf.training.trainer"]:
            importlib.import_module(module)
    except ImportError as exc:
        raise KernelEnvironmentError(
            f"importing {module} failed ({exc}): add the missing distribution to kernels/requirements-kernel.txt, "
            "rebuild with --download-wheels and push"
        ) from exc
    return {"tensorflow": tf.__version__, "tensorflow_gnn": tfgnn.__version__, "keras": keras_module.split(".")[0]}


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def tensorflow_version() -> str | None:
    """Version of whichever distribution provides ``import tensorflow`` (tensorflow, -tpu, -cpu),
    read from metadata so that TensorFlow is not imported before the install step."""
    dists = sorted(set(importlib.metadata.packages_distributions().get("tensorflow", [])))
    versions = {d: importlib.metadata.version(d) for d in dists}
    if len(set(versions.values())) > 1:
        raise KernelEnvironmentError(
            f"several TensorFlow distributions with different versions are installed: {versions}"
        )
    return next(iter(versions.values()), None)


@dataclass(frozen=True)
class Requirement:
    """One bundled requirement (from kernels/requirements-kernel.txt via bundle.json)."""

    name: str
    version: str
    no_deps: bool

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class InstallPlan:
    no_deps: list[str]  # installed with --no-deps --force-reinstall
    resolved: list[str]  # installed with dependencies, every installed distribution pinned

    @property
    def specs(self) -> list[str]:
        return self.no_deps + self.resolved


def plan_install(
    requirements: list[Requirement],
    tpuperf_version: str,
    tensorflow: str | None,
    installed: Callable[[str], str | None] = installed_version,
) -> InstallPlan:
    """What to install from the bundle: the tf-keras matching ``tensorflow`` (unless one is
    installed), every other requirement the image lacks, and always tpuperf."""
    if tensorflow is None:
        raise KernelEnvironmentError("TensorFlow is not installed in this image (pick a TPU image with TensorFlow)")
    no_deps, resolved = [], []
    keras = [r for r in requirements if normalise(r.name) == TF_KERAS]
    have = installed(TF_KERAS)
    if keras and not (have and major_minor(have) == major_minor(tensorflow)):
        match = [r for r in keras if major_minor(r.version) == major_minor(tensorflow)]
        if not match:
            bundled = ", ".join(r.version for r in keras)
            raise KernelEnvironmentError(
                f"the image has TensorFlow {tensorflow}{f' and {TF_KERAS} {have}' if have else ''}, but the bundle's "
                f"{TF_KERAS} wheels are {bundled}: add {TF_KERAS}=={'.'.join(map(str, major_minor(tensorflow)))}.* to "
                "kernels/requirements-kernel.txt, then `tpuperf kernels build --download-wheels` and `tpuperf kernels push`"
            )
        no_deps.append(max(match, key=lambda r: [int(x) for x in re.findall(r"\d+", r.version)]).spec)
    for req in requirements:
        if normalise(req.name) != TF_KERAS and installed(req.name) is None:
            (no_deps if req.no_deps else resolved).append(req.spec)
    return InstallPlan(no_deps + [f"tpuperf=={tpuperf_version}"], resolved)


def _pip(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", *args]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-PIP_TAIL_LINES:]
        raise KernelEnvironmentError(
            f"pip could not install from the bundle (exit {proc.returncode}):\n    " + "\n    ".join(tail)
        )


def install_bundle(bundle: Path, plan: InstallPlan, scratch: Path) -> None:
    """Install ``plan`` from the bundle's wheels only; never touches an installed distribution
    except a tf-keras that does not match TensorFlow."""
    wheel_dirs = sorted({p.parent for p in bundle.rglob("*.whl")})
    if not wheel_dirs:
        raise KernelEnvironmentError(
            f"{bundle} holds no .whl files: was the bundle dataset pushed by `tpuperf kernels push`?"
        )
    links = [arg for d in wheel_dirs for arg in ("--find-links", str(d))]
    _pip(links + ["--no-deps", "--force-reinstall", *plan.no_deps])  # never empty: tpuperf is always installed
    if plan.resolved:
        pins: dict[str, str] = {}  # the first of duplicate installs is the one Python imports
        for dist in importlib.metadata.distributions():
            if dist.metadata["Name"]:
                pins.setdefault(normalise(dist.metadata["Name"]), dist.version)
        constraints = scratch / "installed-constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
        _pip(links + ["--constraint", str(constraints), *plan.resolved])
    importlib.invalidate_caches()


@dataclass(frozen=True)
class Paths:
    input: Path
    data: Path
    bundle: Path
    working: Path
    scratch: Path

    @classmethod
    def from_env(cls, config: dict) -> Paths:
        env = os.environ
        root = Path(env.get("TPUPERF_KERNEL_INPUT", "/kaggle/input"))
        data = env.get("TPUPERF_KERNEL_DATA")
        bundle = env.get("TPUPERF_KERNEL_BUNDLE")
        return cls(
            input=root,
            data=Path(data)
            if data
            else find_mount(root, config["competition"], is_dataset_root, "the competition data"),
            bundle=Path(bundle)
            if bundle
            else find_mount(
                root,
                config["bundle_slug"],
                lambda d: is_bundle(d, config["bundle_id"]),
                f"the bundle {config['bundle_id']}",
            ),
            working=Path(env.get("TPUPERF_KERNEL_WORKING", "/kaggle/working")),
            scratch=Path(env.get("TPUPERF_KERNEL_SCRATCH", "/tmp/tpuperf")),
        )


def is_dataset_root(path: Path) -> bool:
    """``path`` holds sample_submission.csv and npz/ beside it or one folder down (Kaggle mounts the competition
    with npz_all/npz/...): what the local source accepts as data.dir (tpuperf.data.download.layout_candidates,
    which this stdlib-only script cannot import before the install)."""
    sample = (path / "sample_submission.csv").is_file()
    return sample and ((path / "npz").is_dir() or any((d / "npz").is_dir() for d in path.glob("*")))


def is_bundle(path: Path, dataset_id: str) -> bool:
    try:
        return json.loads((path / BUNDLE_MANIFEST).read_text()).get("dataset_id") == dataset_id
    except (OSError, ValueError):
        return False


def find_mount(root: Path, name: str, accept: Callable[[Path], bool], what: str) -> Path:
    """``root/name`` when it is what we want, else the one directory under ``root`` that is."""
    if accept(root / name):
        return root / name
    found = (
        []
        if not root.is_dir()
        else [
            d
            for depth in range(1, SEARCH_DEPTH + 1)
            for d in sorted(root.glob("/".join(["*"] * depth)))
            if d.is_dir() and accept(d)
        ]
    )
    if not found:
        listing = ", ".join(sorted(p.name for p in root.iterdir())) if root.is_dir() else "it does not exist"
        raise KernelEnvironmentError(
            f"{what} is not mounted: no {root / name}, nothing suitable under {root} ({listing}); "
            "add it to the kernel's inputs (kernel-metadata.json) or set the TPUPERF_KERNEL_* path"
        )
    print(f"{what}: {root / name} is absent, using {found[0]}", flush=True)
    return found[0]


def read_manifest(bundle: Path, config: dict) -> dict:
    """bundle.json, which must come from the same source as this kernel."""
    manifest = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    if manifest["source_sha256"] != config["source_sha256"]:
        raise KernelEnvironmentError(
            f"the bundle at {bundle} holds tpuperf source {manifest['source_sha256'][:12]} but this kernel was built with "
            f"{config['source_sha256'][:12]}: the new dataset version is still processing or was not pushed; wait for "
            f"`kaggle datasets status {config['bundle_id']}` to say ready, or run `tpuperf kernels push` again"
        )
    return manifest


def run_params(params: dict, paths: Paths) -> dict:
    """The params of this run: the built ones with Kaggle's paths (outputs that matter under
    working, bulky intermediates under scratch)."""
    from tpuperf.config import deep_merge

    return deep_merge(
        params,
        {
            "data": {"source": "local", "dir": str(paths.data), "out": str(paths.scratch / "data")},
            "preprocess": {"out": str(paths.scratch / "cache")},
            "train": {"runs_dir": str(paths.working / "runs"), "checkpoints_dir": str(paths.scratch / "checkpoints")},
        },
    )


def prepare_environment(config: dict, paths: Paths) -> dict:
    """Install what is missing, check versions and imports; the versions found."""
    manifest = read_manifest(paths.bundle, config)
    tensorflow = tensorflow_version()
    if os.environ.get("TPUPERF_KERNEL_SKIP_INSTALL") == "1":
        print("TPUPERF_KERNEL_SKIP_INSTALL=1: using the installed packages as they are", flush=True)
    else:
        requirements = [Requirement(**r) for r in manifest["requirements"]]
        plan = plan_install(requirements, manifest["tpuperf_version"], tensorflow)
        print(
            f"TensorFlow {tensorflow} (from the image); installing from the bundle: {', '.join(plan.specs)}", flush=True
        )
        install_bundle(paths.bundle, plan, paths.scratch)
    check_versions(tensorflow, installed_version(TF_KERAS), os.environ.get(LEGACY_KERAS_VAR))
    versions = check_imports([r["name"] for r in manifest["requirements"]])
    versions["tf_keras"] = installed_version(TF_KERAS)
    versions["tpuperf"] = installed_version("tpuperf")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    return versions


def check_accelerator(require_tpu: bool) -> bool:
    """Whether TensorFlow sees a TPU (the test tpuperf's strategy selection uses)."""
    from tpuperf.training.strategy import find_tpu

    found = find_tpu() is not None
    if require_tpu and not found:
        # TPU VM chips appear as /dev/accel* (v2-v4) or /dev/vfio/<n> (v5e and later): says which side is missing
        devices = sorted(str(p) for p in [*Path("/dev").glob("accel*"), *Path("/dev/vfio").glob("[0-9]*")])
        raise KernelEnvironmentError(
            f"TensorFlow sees no TPU (TPU device files: {', '.join(devices) or 'none'}; TensorFlow distribution(s): "
            f"{', '.join(importlib.metadata.packages_distributions().get('tensorflow', [])) or 'none'}). Without device "
            "files the kernel did not get a TPU; with them, the image's TensorFlow is not a TPU build or "
            "tpuperf.training.strategy.find_tpu missed a TPU VM's local TPU. Set kernels.require_tpu: false in params.yaml "
            "to train on the host CPU instead"
        )
    print(f"accelerator: {'TPU' if found else 'none found; the default strategy will run on the CPU'}", flush=True)
    return found


def run_pipeline(config: dict, params_path: Path) -> list[dict]:
    """download -> preprocess -> train per collection and model: the library calls the DVC stages'
    ``tpuperf`` subcommands make (not the CLI itself, which imports this module's builder)."""
    import logging

    from tpuperf.collection import get_collection
    from tpuperf.config import load_config
    from tpuperf.data.download import download_stage
    from tpuperf.data.preprocess import preprocess_stage
    from tpuperf.errors import EXPECTED
    from tpuperf.training.trainer import train_collection

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = load_config(params_path)
    steps: list[tuple[str, Callable[[], object]]] = [("download", lambda: download_stage(params))]
    for name in config["collections"]:
        collection = get_collection(name)
        steps.append((f"preprocess --collection {name}", lambda c=collection: preprocess_stage(params, c)))
        steps += [
            (f"train --collection {name} --model {model}", lambda m=model, n=name: train_collection(n, m, params))
            for model in config["models"]
        ]
    done = []
    for step, run in steps:
        print(f"\n=== tpuperf {step} ===", flush=True)
        start = time.perf_counter()
        try:
            run()
        except EXPECTED as exc:
            raise KernelEnvironmentError(f"`tpuperf {step}` failed: {exc}") from exc
        done.append({"step": step, "seconds": round(time.perf_counter() - start, 1)})
    return done


def main(config: dict) -> int:
    """The kernel: 0 when every collection x model has predictions in working/runs."""
    os.environ[LEGACY_KERAS_VAR] = "1"  # before anything can import TensorFlow
    started = time.perf_counter()
    working = Path(os.environ.get("TPUPERF_KERNEL_WORKING", "/kaggle/working"))
    report: dict = {
        "kernel": config["kernel_id"],
        "collections": config["collections"],
        "models": config["models"],
        "status": "crashed (see the log)",
    }
    try:
        paths = Paths.from_env(config)
        print(
            f"tpuperf kernel {config['kernel_id']}: data {paths.data}, bundle {paths.bundle}, outputs {paths.working}",
            flush=True,
        )
        paths.working.mkdir(parents=True, exist_ok=True)
        paths.scratch.mkdir(parents=True, exist_ok=True)
        report["versions"] = prepare_environment(config, paths)
        report["tpu"] = check_accelerator(config["require_tpu"])
        params_path = paths.working / PARAMS_FILE
        import yaml  # a tpuperf dependency, importable once prepare_environment has run

        # YAML, not JSON: PyYAML reads JSON's 1e-06 as a string (YAML 1.1 floats need a dot)
        params_path.write_text(yaml.safe_dump(run_params(config["params"], paths), sort_keys=False))
        os.chdir(paths.scratch)
        report["steps"] = run_pipeline(config, params_path)
        report["status"] = "ok"
        return 0
    except KernelEnvironmentError as exc:
        report["status"] = f"failed: {exc}"
        print(f"\ntpuperf kernel STOPPED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        report["seconds"] = round(time.perf_counter() - started, 1)
        if working.is_dir():
            (working / REPORT_FILE).write_text(json.dumps(report, indent=1, default=str))
