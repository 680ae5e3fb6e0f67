"""Kaggle TPU kernels that run this repository's pipeline: ``tpuperf kernels build`` and ``push``.

Design (kernels/README.md has the user's side):

- The code goes to Kaggle as a DATASET, the *bundle*: a wheel of tpuperf built from src/ with
  ``pip wheel --no-deps``, the wheels the TPU image lacks (kernels/requirements-kernel.txt:
  tensorflow-gnn, the tf-keras builds, polars...; fetched into ``kernels.wheelhouse`` by
  ``--download-wheels``), ``bundle.json`` (tpuperf version, source fingerprint, requirements) and
  ``dataset-metadata.json``. A kernel has internet off and installs from it with
  ``pip install --no-index`` (:mod:`tpuperf.kaggle.kernel_entry`). Wheels rather than a script that
  inlines the package: the kernel runs the very package the tests and DVC run, pip checks what it
  installs, and one bundle serves every kernel.
- Each kernel's script is generated, never hand-written: the source of
  :mod:`tpuperf.kaggle.kernel_entry` + a ``CONFIG`` literal (collection, models, params.yaml with
  ``kernels.overrides`` merged, bundle id, source fingerprint). It imports tpuperf from the
  installed wheel and calls the CLI functions DVC calls. The fingerprint ties a kernel to its
  bundle: a kernel that sees an older bundle version stops and says so.
- One kernel per collection (``kernels.per_model: true``: per collection x model). A Kaggle TPU
  session ends after 9 hours; layout:nlp (244 graphs, ~60k configs each) alone can take most of
  one, so a single kernel for all five collections would not finish, and a failure would lose
  everything. Separate kernels run, fail and rerun independently, and each copies and
  preprocesses only what it trains on.
- Outputs: each kernel leaves ``runs/<slug>/<model>/{predictions/fold_<k>.parquet,report.json,metrics.json}``
  in /kaggle/working; ``kaggle kernels output`` + copying into runs/ feeds ``python ensemble.py``.

``build_kernels`` writes ``<out>/bundle/`` and ``<out>/<kernel slug>/{kernel-metadata.json,<slug>.py}``
(all or nothing); ``push_kernels`` versions (or creates) the bundle dataset with the kaggle CLI,
waits until Kaggle has processed it, then pushes each kernel.
"""

from __future__ import annotations

import json
import os
import pprint
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tpuperf
from tpuperf.atomic import replaced_dir
from tpuperf.collection import Collection, get_collection
from tpuperf.config import Config, KernelsConfig, deep_merge
from tpuperf.errors import TpuperfError
from tpuperf.kaggle import kernel_entry
from tpuperf.kaggle.cli import kaggle_failure
from tpuperf.kaggle.kernel_entry import BUNDLE_MANIFEST, Requirement, normalise
from tpuperf.provenance import source_fingerprint

BUNDLE_DIR = "bundle"
KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"
DATASET_LIMITS = (6, 50)  # characters in a dataset slug or title (the kaggle CLI checks)
KERNEL_TITLE_LIMITS = (5, 50)  # characters in a kernel title
TENSORFLOW_NAMES = re.compile(r"^(tensorflow|tf-nightly)(-(cpu|gpu|tpu|intel|macos))?$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")
OUTPUT_TAIL_LINES = 20  # lines of a failing command's output quoted in the error

Runner = Callable[..., subprocess.CompletedProcess]


class KernelError(TpuperfError, RuntimeError):
    """Building or pushing kernels failed; the message names the cause and the fix."""


def kernel_owner(settings: KernelsConfig) -> str:
    """The Kaggle account owning the kernels: kernels.username, else $KAGGLE_USERNAME; KernelError when neither."""
    owner = settings.username or os.environ.get("KAGGLE_USERNAME")
    if not owner:
        raise KernelError("no Kaggle username: set kernels.username in params.yaml or export KAGGLE_USERNAME")
    return owner


def bundle_id(settings: KernelsConfig) -> str:
    """``<owner>/<kernels.bundle.slug>``: the Kaggle dataset holding the wheels."""
    return f"{kernel_owner(settings)}/{settings.bundle.slug}"


# ---------------------------------------------------------------- requirements and wheels


def read_requirements(path: Path) -> list[Requirement]:
    """kernels/requirements-kernel.txt: exact pins, ``# no-deps`` after those pip must not resolve."""
    if not path.is_file():
        raise KernelError(f"{path}: kernel requirements file not found (kernels.requirements in params.yaml)")
    found = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        spec, _, comment = line.partition("#")
        spec = spec.strip()
        if not spec:
            continue
        match = PIN.match(spec)
        if not match:
            raise KernelError(f"{path}:{lineno}: {spec!r} is not an exact pin name==version")
        name, version = match.groups()
        if TENSORFLOW_NAMES.match(normalise(name)) or normalise(name) == "tpuperf":
            raise KernelError(
                f"{path}:{lineno}: {name} must not be bundled (the image's TensorFlow stays; "
                "tpuperf is built from src/)"
            )
        found.append(Requirement(name, version, comment.strip().startswith("no-deps")))
    return found


def wheel_identity(path: Path) -> tuple[str, str]:
    """(normalised distribution name, version) from a wheel file name."""
    parts = path.name[: -len(".whl")].split("-")
    return normalise(parts[0]), parts[1]


def download_wheels(
    requirements: Sequence[Requirement],
    wheelhouse: Path,
    python_versions: Sequence[str],
    platforms: Sequence[str],
    run: Runner = subprocess.run,
) -> None:
    """``pip download`` the requirements (binary wheels for each of the kernel's Python versions,
    any of the platforms) and make them the ``wheelhouse``: each no-deps pin alone (pip refuses
    two pins of one name, as the tf-keras builds are, in one call), the others together with
    their dependencies. Every pin must resolve for every Python version.

    All or nothing: the wheels are fetched into a new directory beside ``wheelhouse``, which
    replaces it (stale wheels of older pins included) only when every download succeeded.
    Raises :class:`KernelError` naming the Python version whose download failed.
    """
    target = [arg for p in platforms for arg in ("--platform", p)] + ["--implementation", "cp", "--only-binary=:all:"]
    calls = [["--no-deps", r.spec] for r in requirements if r.no_deps]
    resolved = [r.spec for r in requirements if not r.no_deps]
    calls += [resolved] if resolved else []
    with replaced_dir(wheelhouse) as fresh:
        for version in python_versions:
            for specs in calls:
                cmd = [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--disable-pip-version-check",
                    *target,
                    "--python-version",
                    version,
                    "--dest",
                    str(fresh),
                    *specs,
                ]
                try:
                    _run(cmd, run, f"pip download for Python {version} (needs the network)")
                except KernelError as exc:
                    raise KernelError(
                        f"{exc} -- each pin of kernels.requirements needs wheels for every kernels.python_versions "
                        f"({', '.join(python_versions)}): pin a version that has them, or drop Python {version} "
                        "from params.yaml; the wheelhouse was left as it was"
                    ) from exc


def bundled_wheels(requirements: Sequence[Requirement], wheelhouse: Path) -> list[Path]:
    """Every wheel in ``wheelhouse`` (requirements and their dependencies); an error naming the
    requirements that have no wheel there."""
    wheels = (
        sorted(p for p in wheelhouse.glob("*.whl") if wheel_identity(p)[0] != "tpuperf") if wheelhouse.is_dir() else []
    )
    have = {wheel_identity(p) for p in wheels}
    missing = [r.spec for r in requirements if (normalise(r.name), r.version) not in have]
    if missing:
        raise KernelError(
            f"{wheelhouse} has no wheel for {', '.join(missing)}: run `tpuperf kernels build "
            "--download-wheels` once with network access"
        )
    return wheels


def repo_root() -> Path:
    """The source tree tpuperf was installed from (editable install)."""
    root = Path(tpuperf.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise KernelError(
            f"tpuperf is not installed from a source tree ({root} has no pyproject.toml): "
            "`tpuperf kernels build` needs the repository (pip install -e .)"
        )
    return root


def build_tpuperf_wheel(repo: Path, dest: Path, run: Runner = subprocess.run) -> tuple[Path, str]:
    """``pip wheel --no-deps`` of a clean copy of src/tpuperf (no stale build/ files); the wheel
    and the source fingerprint. Offline: no build isolation, the installed setuptools builds it."""
    with tempfile.TemporaryDirectory(prefix="tpuperf-wheel-") as tmp:
        tree = Path(tmp, "tree")
        shutil.copytree(
            repo / "src" / "tpuperf", tree / "src" / "tpuperf", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy2(repo / "pyproject.toml", tree / "pyproject.toml")
        readme = repo / "README.md"
        if readme.is_file():
            shutil.copy2(readme, tree / "README.md")
        else:  # pyproject names a readme; its text only fills the wheel's long description
            (tree / "README.md").write_text("tpuperf\n")
        fingerprint = source_fingerprint(tree / "src" / "tpuperf")
        wheels = Path(tmp, "wheels")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--disable-pip-version-check",
                "--wheel-dir",
                str(wheels),
                str(tree),
            ],
            run,
            "pip wheel",
        )
        built = sorted(wheels.glob("tpuperf-*.whl"))
        if len(built) != 1:
            raise KernelError(f"pip wheel did not produce one tpuperf wheel (got {[p.name for p in built]})")
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(built[0], dest / built[0].name)), fingerprint


# ---------------------------------------------------------------- metadata and scripts


@dataclass(frozen=True)
class KernelPlan:
    """One kernel: a slug and what it trains."""

    slug: str
    collections: list[str]
    models: list[str]

    @property
    def title(self) -> str:
        """Slugifies back to ``slug`` (Kaggle links the two)."""
        return self.slug.replace("-", " ", 1)


def plan_kernels(settings: KernelsConfig, collections: Sequence[Collection], models: Sequence[str]) -> list[KernelPlan]:
    if settings.per_model:
        plans = [KernelPlan(f"{settings.prefix}-{c.slug}-{m}", [c.name], [m]) for c in collections for m in models]
    else:
        plans = [KernelPlan(f"{settings.prefix}-{c.slug}", [c.name], list(models)) for c in collections]
    for plan in plans:
        _check_length("kernel title", plan.title, KERNEL_TITLE_LIMITS)
    return plans


def _check_length(what: str, text: str, limits: tuple[int, int]) -> None:
    low, high = limits
    if not low <= len(text) <= high:
        raise KernelError(f"{what} {text!r} has {len(text)} characters; Kaggle accepts {low} to {high}")


def kernel_metadata(plan: KernelPlan, settings: KernelsConfig, competition: str) -> dict[str, Any]:
    """kernel-metadata.json for ``kaggle kernels push``."""
    return {
        "id": f"{kernel_owner(settings)}/{plan.slug}",
        "title": plan.title,
        "code_file": f"{plan.slug}.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": settings.is_private,
        "enable_gpu": False,
        "enable_tpu": True,
        "enable_internet": False,
        "machine_shape": settings.machine_shape,
        "dataset_sources": [bundle_id(settings)],
        "competition_sources": [competition],
        "kernel_sources": [],
        "model_sources": [],
    }


def dataset_metadata(settings: KernelsConfig) -> dict[str, Any]:
    """dataset-metadata.json of the bundle for ``kaggle datasets create/version``."""
    _check_length("kernels.bundle.slug", settings.bundle.slug, DATASET_LIMITS)
    _check_length("kernels.bundle.title", settings.bundle.title, DATASET_LIMITS)
    return {"title": settings.bundle.title, "id": bundle_id(settings), "licenses": [{"name": settings.bundle.license}]}


def render_script(config: dict[str, Any]) -> str:
    """The kernel's script: kernel_entry's source, this kernel's CONFIG, and the call to main."""
    source = Path(kernel_entry.__file__).read_text()
    return (
        f"# Generated by `tpuperf kernels build` for {config['kernel_id']}; do not edit (rebuild instead).\n"
        f"# Code: src/tpuperf/kaggle/kernel_entry.py (source {config['source_sha256'][:12]}).\n"
        f"{source}\n\n"
        f"CONFIG = {pprint.pformat(config, width=120, sort_dicts=False)}\n\n"
        'if __name__ == "__main__":\n'
        "    sys.exit(main(CONFIG))\n"
    )


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------- build


def check_overrides(config: Config, run: Config, models: Sequence[str]) -> None:
    """KernelError naming every setting ``kernels.overrides`` changes (``run``: params.yaml merged with them) that
    the local ``tpuperf ensemble`` compares with params.yaml's (``config``), so that it would refuse the kernels'
    runs after their hours of TPU time: a ``preprocess`` setting the cache records
    (:func:`tpuperf.data.cache.preprocess_differences`), a setting of one of ``models`` or a train setting a run report
    records (:func:`tpuperf.submission.ensemble.setting_differences`). How a run executes may be overridden."""
    from tpuperf.data.cache import preprocess_differences
    from tpuperf.runs import trained_with
    from tpuperf.submission.ensemble import TRAIN_EXECUTION_KEYS, setting_differences

    where = ("kernels.overrides", "params.yaml")
    diff = [
        f"preprocess.{k}: {was} in {where[0]}, {now} in {where[1]}"
        for k, was, now in preprocess_differences(run.preprocess, config.preprocess)
    ]
    for model in models:
        diff += setting_differences(model, trained_with(run, model), trained_with(config, model), *where)
    if diff:
        raise KernelError(
            f"kernels.overrides changes settings the local tpuperf ensemble compares with params.yaml's, so it would "
            f"refuse the kernels' runs: {'; '.join(dict.fromkeys(diff))}: set them in params.yaml instead (overrides "
            f"may change how a run executes: train.{', '.join(TRAIN_EXECUTION_KEYS)}, verbose, live, jobs)"
        )


def build_kernels(
    params: dict[str, Any],
    out: Path | str,
    *,
    collections: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    download: bool = False,
    repo: Path | None = None,
    run: Runner = subprocess.run,
) -> list[Path]:
    """Write the bundle and one folder per kernel under ``out`` (replacing it whole); the kernel folders."""
    config = Config.from_dict(params)
    settings = config.kernels
    kernel_owner(settings)
    cols = [get_collection(c) for c in (collections or settings.collections)]
    models = list(models or settings.models)
    unknown = [m for m in models if m not in config.models]
    if unknown or not models:
        raise KernelError(f"models {unknown or models} not in params.yaml models (have {list(config.models)})")
    requirements = read_requirements(Path(settings.requirements))
    if download:
        download_wheels(requirements, Path(settings.wheelhouse), settings.python_versions, settings.platforms, run)
    wheels = bundled_wheels(requirements, Path(settings.wheelhouse))
    plans = plan_kernels(settings, cols, models)
    competition = config.data.competition
    run_params = deep_merge(params, settings.overrides)
    # a bad override fails here, not on Kaggle
    check_overrides(config, Config.from_dict(run_params, "params.yaml merged with kernels.overrides"), models)

    out = Path(out)
    with replaced_dir(out) as tmp:
        bundle = tmp / BUNDLE_DIR
        wheel, fingerprint = build_tpuperf_wheel(repo or repo_root(), bundle, run)
        for path in wheels:
            shutil.copy2(path, bundle / path.name)
        _write_json(bundle / DATASET_METADATA, dataset_metadata(settings))
        _write_json(
            bundle / BUNDLE_MANIFEST,
            {
                "dataset_id": bundle_id(settings),
                "tpuperf_version": tpuperf.__version__,
                "tpuperf_wheel": wheel.name,
                "source_sha256": fingerprint,
                "requirements": [{"name": r.name, "version": r.version, "no_deps": r.no_deps} for r in requirements],
                "python_versions": list(settings.python_versions),
            },
        )
        for plan in plans:
            folder = tmp / plan.slug
            folder.mkdir()
            meta = kernel_metadata(plan, settings, competition)
            _write_json(folder / KERNEL_METADATA, meta)
            config = {
                "kernel_id": meta["id"],
                "collections": plan.collections,
                "models": plan.models,
                "competition": competition,
                "bundle_id": bundle_id(settings),
                "bundle_slug": settings.bundle.slug,
                "source_sha256": fingerprint,
                "require_tpu": settings.require_tpu,
                "params": run_params,
            }
            (folder / meta["code_file"]).write_text(render_script(config))
    size = sum(p.stat().st_size for p in (out / BUNDLE_DIR).iterdir()) / 1e6
    print(
        f"tpuperf kernels build: bundle {bundle_id(settings)} ({len(wheels) + 1} wheels, {size:.1f} MB, source "
        f"{fingerprint[:12]}) and {len(plans)} kernels in {out}: {', '.join(p.slug for p in plans)}"
    )
    return [out / p.slug for p in plans]


# ---------------------------------------------------------------- push


def _run(cmd: list[str], run: Runner, what: str, *, kaggle: bool = False) -> str:
    """Run ``cmd``; its output, or KernelError quoting it. The kaggle CLI reports some failures
    ("Kernel push error: ...") with exit code 0, so for it those lines are failures too
    (:func:`tpuperf.kaggle.cli.kaggle_failure`)."""
    try:
        proc = run(cmd, capture_output=True, text=True, errors="replace")
    except FileNotFoundError as exc:
        raise KernelError(f"{what}: cannot run {cmd[0]} ({exc})") from exc
    said = (proc.stdout or "") + (proc.stderr or "")
    failed = kaggle_failure(proc.returncode, said) if kaggle else proc.returncode != 0
    if failed:
        tail = " | ".join(said.strip().splitlines()[-OUTPUT_TAIL_LINES:]) or "(no output)"
        raise KernelError(f"{what} failed (exit code {proc.returncode}): `{' '.join(cmd)}` said: {tail}")
    return said


def kaggle_executable() -> str:
    exe = shutil.which("kaggle")
    if exe is None:
        raise KernelError(
            "the `kaggle` command is not on PATH: `pip install kaggle` (requirements.txt pins it) and put "
            "an API token in ~/.kaggle/kaggle.json (https://www.kaggle.com/settings)"
        )
    return exe


def wait_until_ready(exe: str, dataset_id: str, timeout: int, run: Runner, poll_seconds: float = 10.0) -> None:
    """Poll ``kaggle datasets status`` until the new version is ready (kernels pushed earlier
    would attach the previous version and stop on the fingerprint check)."""
    deadline = time.monotonic() + timeout
    while True:
        status = (
            _run([exe, "datasets", "status", dataset_id], run, "kaggle datasets status", kaggle=True).strip().lower()
        )
        if status.endswith("ready"):
            return
        if status.endswith(("failed", "deleted")):
            raise KernelError(
                f"Kaggle reports the new version of {dataset_id} as {status!r}: look at the dataset's "
                "page, then push the bundle again with `tpuperf kernels push`"
            )
        if time.monotonic() >= deadline:
            raise KernelError(
                f"{dataset_id} is still {status!r} after {timeout} s: push the kernels later with "
                "`tpuperf kernels push --kernels-only`"
            )
        time.sleep(poll_seconds)


def push_kernels(
    build_dir: Path | str,
    *,
    message: str | None = None,
    create: bool = False,
    kernels_only: bool = False,
    wait_seconds: int = 900,
    run: Runner = subprocess.run,
) -> list[str]:
    """Version (or ``create``) the bundle dataset, wait until it is ready, push every kernel.
    Returns the ids of the kernels pushed."""
    build_dir = Path(build_dir)
    bundle = build_dir / BUNDLE_DIR
    kernels = sorted(d for d in build_dir.iterdir() if (d / KERNEL_METADATA).is_file()) if build_dir.is_dir() else []
    if not (bundle / BUNDLE_MANIFEST).is_file() or not kernels:
        raise KernelError(f"{build_dir} holds no built bundle and kernels: run `tpuperf kernels build` first")
    exe = kaggle_executable()
    manifest = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    if not kernels_only:
        if create:
            cmd = [exe, "datasets", "create", "-p", str(bundle), "--dir-mode", "zip"]
        else:
            note = message or f"tpuperf {manifest['tpuperf_version']} source {manifest['source_sha256'][:12]}"
            cmd = [exe, "datasets", "version", "-p", str(bundle), "-m", note, "--dir-mode", "zip"]
        print(_run(cmd, run, f"kaggle datasets {cmd[2]}", kaggle=True).strip())
        if wait_seconds > 0:
            wait_until_ready(exe, manifest["dataset_id"], wait_seconds, run)
    pushed = []
    for folder in kernels:
        print(
            _run(
                [exe, "kernels", "push", "-p", str(folder)], run, f"kaggle kernels push ({folder.name})", kaggle=True
            ).strip()
        )
        pushed.append(json.loads((folder / KERNEL_METADATA).read_text())["id"])
    return pushed
