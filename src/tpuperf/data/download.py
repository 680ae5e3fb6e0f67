"""The download stage: put one TpuGraphs dataset (real layout plus ``manifest.json``) at ``data.out``.

Sources (``data.source`` in params.yaml):

- ``kaggle``: the competition zip through the kaggle CLI, unzipped;
- ``synthetic``: :func:`tpuperf.data.synthetic.write_dataset` (the embedded default);
- ``local``: a directory that already has the real layout (``data.dir``), hard-linked or copied;
- ``auto``: kaggle when Kaggle credentials exist, synthetic otherwise, announced loudly.

Where a dataset's ``npz/`` folder and sample submission may be (:func:`layout_candidates`): both at the top, or
``npz/`` one folder down with the sample beside it or at the top: the competition's zip (and Kaggle's mount of it)
holds ``npz_all/npz/...`` beside ``sample_submission.csv``. The output always has them at its top.

The dataset is built in a hidden temporary directory beside the output, every file is validated,
and only then is it renamed into place. A failure therefore never leaves a half-written dataset
and never touches the previous one. The manifest holds no timestamp, so the same source gives the
same bytes and DVC sees nothing new on a rerun.

An invalid file does not stop the stage (one quirky file among ~7,000 must not cost another 6 GB
download): the manifest lists it with its problem (:func:`build_manifest`), a summary is printed,
and ``preprocess.on_bad_file`` decides in one place, preprocess, whether it stops the pipeline
(naming the files) or is left out. The stage still refuses a dataset that is unusable as a whole:
no ``npz/`` files, .npz files outside the layout, no valid file, no sample submission or a bad header.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from joblib import Parallel, delayed

from tpuperf.atomic import replaced_dir, write_json_atomic
from tpuperf.collection import COLLECTIONS, DATASET_MANIFEST, SPLITS, Collection
from tpuperf.config import Config, DataConfig
from tpuperf.data.npz import DataFormatError, validate_file, walk_files
from tpuperf.errors import TpuperfError, listing

MANIFEST_NAME = DATASET_MANIFEST
SAMPLE_SUBMISSION = "sample_submission.csv"
NPZ_DIR = "npz"
SUBMISSION_HEADER = "ID,TopConfigs"
ERROR_TAIL_LINES = 20  # lines of the kaggle CLI's output quoted when it fails


class DownloadError(TpuperfError, RuntimeError):
    """The stage could not produce a dataset; the message names the cause and what to do."""


def _credential_files() -> list[Path]:
    """Files the kaggle CLI (1.x and 2.x) reads credentials from."""
    home = Path.home()
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR")
    files = [Path(config_dir) / "kaggle.json"] if config_dir else [home / ".kaggle" / "kaggle.json"]
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files += [xdg / "kaggle" / "kaggle.json", home / ".kaggle" / "access_token", home / ".kaggle" / "credentials.json"]
    return files


def kaggle_credentials() -> str | None:
    """Where Kaggle credentials were found (env vars or a file), or None when there are none."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment variables KAGGLE_USERNAME and KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "environment variable KAGGLE_API_TOKEN"
    for path in _credential_files():
        if path.is_file():
            return str(path)
    return None


def _where_credentials_are_looked_for() -> str:
    files = ", ".join(str(p) for p in _credential_files())
    return f"KAGGLE_USERNAME+KAGGLE_KEY, KAGGLE_API_TOKEN, {files}"


def resolve_source(requested: str) -> tuple[str, str]:
    """The concrete source for ``requested`` and a sentence saying why it was chosen."""
    if requested != "auto":
        return requested, f"data.source is {requested!r}"
    found = kaggle_credentials()
    if found:
        return "kaggle", f"data.source is 'auto' and Kaggle credentials were found ({found})"
    return "synthetic", (
        f"data.source is 'auto' and no Kaggle credentials were found (looked for {_where_credentials_are_looked_for()})"
    )


def download(params: DataConfig) -> dict[str, Any]:
    """Build the dataset for ``params`` at ``params.out`` and return its manifest."""
    source, reason = resolve_source(params.source)
    _announce(source, reason, params)
    out = Path(params.out)
    try:
        with replaced_dir(out) as staging:
            origin = _FILL[source](staging, params)
            manifest = build_manifest(staging, source, params.source, origin, params.jobs)
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    except DownloadError as exc:
        kept = " (the previous dataset there is untouched)" if out.exists() else ""
        raise DownloadError(f"{exc} Nothing was written to {out}{kept}.") from exc
    counts = ", ".join(
        f"{name} {sum(s['num_files'] for s in splits.values())}" for name, splits in manifest["collections"].items()
    )
    invalid = f" ({manifest['num_invalid']} invalid)" if manifest["num_invalid"] else ""
    print(
        f"tpuperf download: wrote {manifest['num_files']} validated files{invalid} to {out} ({counts}); "
        f"see {out / MANIFEST_NAME}"
    )
    return manifest


def data_fingerprint(params: DataConfig) -> dict[str, Any]:
    """What :func:`download` would build the dataset from, computed in milliseconds without network.

    The ``fingerprint`` stage (``always_changed`` in dvc.yaml) writes it on every ``dvc repro`` and
    the download stage depends on the file, so DVC re-runs the download exactly when it changes:

    - ``kaggle``: the competition slug (the competition's data never changes, so no re-download);
    - ``synthetic``: the generator preset and seed;
    - ``local``: the resolved ``data.dir`` and, per file the stage takes from it (sorted
      ``[relative path, size in bytes, mtime in ns, inode]``). These are the signals DVC's own
      state database trusts to skip rehashing a file; hashing the contents instead would read
      ~6 GB on every repro. A false alarm (e.g. a copy with new inodes) costs one re-run of
      download, whose output is byte-identical, so DVC still skips everything downstream. The blind
      spot is an in-place rewrite to the same size with the old mtime restored (``touch -r``,
      ``rsync -a`` of another version): ``dvc repro -f -s download`` then forces the stage.

    ``auto`` is resolved first, so Kaggle credentials appearing switch the source on the next repro.
    Raises DownloadError for ``local`` without a valid ``data.dir``.
    """
    source, _ = resolve_source(params.source)
    if source == "kaggle":
        return {"source": source, "competition": params.competition}
    if source == "synthetic":
        return {"source": source, "preset": params.synthetic.preset, "seed": params.synthetic.seed}
    src, layout = _local_dir(params)
    files = []
    for rel, _ in _local_files(src, layout):
        st = src.joinpath(*rel.parts).stat()
        files.append([str(rel), st.st_size, st.st_mtime_ns, st.st_ino])
    return {"source": source, "dir": str(src.resolve()), "files": files}


def download_stage(config: Config) -> dict[str, Any]:
    """The ``download`` stage (``tpuperf download``, the Kaggle kernel): :func:`download` with the
    ``data`` section of the loaded params.yaml; the manifest. Raises :class:`DownloadError`."""
    return download(config.data)


def write_data_fingerprint(params: DataConfig) -> dict[str, Any]:
    """Write :func:`data_fingerprint` to ``params.fingerprint`` (JSON, atomically) and return it."""
    fingerprint = data_fingerprint(params)
    write_json_atomic(Path(params.fingerprint), fingerprint)
    return fingerprint


def _announce(source: str, reason: str, params: DataConfig) -> None:
    what = {
        "kaggle": f"the real competition data ({params.competition}) through the kaggle CLI",
        "synthetic": (
            f"GENERATED data (preset {params.synthetic.preset!r}, seed {params.synthetic.seed}), not the competition's; "
            "for real data set up Kaggle credentials or set data.source: local with data.dir"
        ),
        "local": f"the existing dataset in {params.dir}",
    }[source]
    banner = "=" * 78
    print(f"{banner}\ntpuperf download: data source = {source.upper()}: {reason}.\nUsing {what}.\n{banner}", flush=True)


def _fill_synthetic(staging: Path, params: DataConfig) -> dict[str, Any]:
    from tpuperf.data.synthetic import write_dataset

    staging.rmdir()  # the generator publishes its own output atomically and wants a fresh path
    write_dataset(staging, params.synthetic.preset, params.synthetic.seed)
    return {"preset": params.synthetic.preset, "seed": params.synthetic.seed}


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (no extra disk for a 6 GB dataset) and copy where linking is impossible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def layout_candidates(top_folders: Iterable[str]) -> list[tuple[str, str]]:
    """Where a dataset's ``npz/`` folder and sample submission may be, as (npz folder, sample file) POSIX paths
    relative to its root, in the order tried: both at the top; then, per folder of ``top_folders`` (sorted),
    ``<folder>/npz`` with the sample beside it or at the top (the competition's ``npz_all/npz`` and
    ``sample_submission.csv``)."""
    pairs = [(NPZ_DIR, SAMPLE_SUBMISSION)]
    for folder in sorted(top_folders):
        pairs += [(f"{folder}/{NPZ_DIR}", f"{folder}/{SAMPLE_SUBMISSION}"), (f"{folder}/{NPZ_DIR}", SAMPLE_SUBMISSION)]
    return pairs


def local_layout(src: Path) -> tuple[str, str] | None:
    """The first of :func:`layout_candidates` that directory ``src`` has (npz folder and sample file), or None."""
    folders = [d.name for d in src.iterdir() if d.is_dir()] if src.is_dir() else []
    return next(
        (
            (npz, sample)
            for npz, sample in layout_candidates(folders)
            if (src / npz).is_dir() and (src / sample).is_file()
        ),
        None,
    )


def _local_dir(params: DataConfig) -> tuple[Path, tuple[str, str]]:
    """``data.dir`` and where its npz folder and sample submission are (:func:`local_layout`), for
    ``data.source: local``; DownloadError when it has no TpuGraphs layout."""
    src = Path(params.dir) if params.dir else None
    if src is None:
        raise DownloadError(
            "data.source is 'local' but data.dir is not set: point data.dir in params.yaml at a directory "
            f"holding npz/... and {SAMPLE_SUBMISSION} (for example an unzipped Kaggle download)."
        )
    layout = local_layout(src)
    if layout is None:
        pairs = layout_candidates([d.name for d in src.iterdir() if d.is_dir()] if src.is_dir() else [])
        found = {NPZ_DIR: any((src / npz).is_dir() for npz, _ in pairs)}
        found[SAMPLE_SUBMISSION] = any((src / sample).is_file() for _, sample in pairs)
        missing = [name for name, ok in found.items() if not ok] or [f"{SAMPLE_SUBMISSION} beside npz or at the top"]
        raise DownloadError(
            f"data.source is 'local' but data.dir {src} does not have the TpuGraphs layout: "
            f"{' and '.join(missing)} missing (expected npz/<kind>/<source>/[<search>/]<split>/*.npz at the top or "
            f"one folder down, as the unzipped competition's npz_all/npz, and {SAMPLE_SUBMISSION} beside that "
            "npz folder or at the top)."
        )
    return src, layout


def _local_files(src: Path, layout: tuple[str, str]) -> list[tuple[PurePosixPath, PurePosixPath]]:
    """Every file the local source takes from ``src`` (all under the npz folder, and the sample submission) as
    (path relative to ``src``, path in the dataset), sorted. Symlinked files and folders are followed
    (:func:`tpuperf.data.npz.walk_files`)."""
    npz, sample = layout
    files = [(PurePosixPath(sample), PurePosixPath(SAMPLE_SUBMISSION))]
    for f in walk_files(src / npz):
        rel = PurePosixPath(f.relative_to(src / npz).as_posix())
        files.append((PurePosixPath(npz) / rel, PurePosixPath(NPZ_DIR) / rel))
    return sorted(files)


def _fill_local(staging: Path, params: DataConfig) -> dict[str, Any]:
    """Link or copy the local files; folders are created afresh (not copying a read-only mode
    from the source, which would make the output impossible to delete)."""
    src, layout = _local_dir(params)
    for rel, dest in _local_files(src, layout):
        target = staging.joinpath(*dest.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(src.joinpath(*rel.parts), target)
    return {"dir": str(src.resolve())}


def _fill_kaggle(staging: Path, params: DataConfig) -> dict[str, Any]:
    exe = shutil.which("kaggle")
    if exe is None:
        raise DownloadError(
            "data source is kaggle but the `kaggle` command is not on PATH: install it "
            "(`pip install -r requirements.txt` pins it) or set data.source: synthetic in params.yaml."
        )
    if kaggle_credentials() is None:
        raise DownloadError(
            "data.source is 'kaggle' but no Kaggle credentials were found (looked for "
            f"{_where_credentials_are_looked_for()}): create an API token at https://www.kaggle.com/settings "
            "and save it as ~/.kaggle/kaggle.json or export KAGGLE_USERNAME and KAGGLE_KEY, or set "
            "data.source: auto or synthetic to use generated data."
        )
    # inside the staging dir (same file system as the output): what a SIGKILL leaves, the ~6 GB zip included, goes
    # with the staging dir at the next download (tpuperf.atomic.remove_stale_leftovers)
    scratch = staging / ".kaggle-download"
    scratch.mkdir()
    try:
        cmd = [exe, "competitions", "download", "-c", params.competition, "-p", str(scratch)]
        print(f"tpuperf download: running {' '.join(cmd)} (about 6 GB for the real competition)", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip() or "(no output)").splitlines()[-ERROR_TAIL_LINES:]
            raise DownloadError(
                f"the kaggle download failed (exit code {proc.returncode}) and said: {' | '.join(said)} -- "
                "check the credentials, the network, and that you accepted the competition's rules on "
                f"https://www.kaggle.com/competitions/{params.competition}/rules."
            )
        archive = _find_archive(scratch, params)
        _extract_layout(archive, staging)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"competition": params.competition}


def _find_archive(scratch: Path, params: DataConfig) -> Path:
    expected = scratch / f"{params.competition}.zip"
    zips = sorted(scratch.glob("*.zip"))
    if expected.exists():
        return expected
    if len(zips) == 1:
        return zips[0]
    found = ", ".join(p.name for p in sorted(scratch.iterdir())) or "nothing"
    raise DownloadError(
        f"the kaggle download exited 0 but did not leave exactly one zip ({expected.name} expected; found {found})."
    )


def _zip_layout(names: list[str]) -> tuple[str, str] | None:
    """The first of :func:`layout_candidates` a zip holding files ``names`` has: (npz folder holding .npz
    files, sample file), or None."""
    present = set(names)
    for npz, sample in layout_candidates({n.split("/", 1)[0] for n in names if "/" in n}):
        if sample in present and any(n.startswith(f"{npz}/") and n.endswith(".npz") for n in names):
            return npz, sample
    return None


def _extract_layout(archive: Path, dest: Path) -> None:
    """Unpack the dataset part of the competition zip into ``dest`` (CRC-checked while reading)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            layout = _zip_layout([i.filename for i in members])
            if layout is None:
                raise DownloadError(
                    f"{archive.name} does not have the TpuGraphs layout: expected npz/... at its top level or one "
                    f"folder down and {SAMPLE_SUBMISSION} beside it or at the top, but it holds "
                    f"{listing([i.filename for i in members])}."
                )
            npz, sample = layout
            for info in members:
                if info.filename == sample:
                    rel = PurePosixPath(SAMPLE_SUBMISSION)
                elif info.filename.startswith(f"{npz}/"):
                    rel = PurePosixPath(NPZ_DIR, info.filename[len(npz) + 1 :])
                else:
                    continue
                if ".." in rel.parts:
                    raise DownloadError(f"{archive.name} holds an unsafe path {info.filename!r}.")
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(
            f"the downloaded {archive.name} is corrupt or truncated ({exc}); the download was probably "
            f"interrupted: run the stage again."
        ) from exc


def _layout_files(root: Path) -> list[tuple[Collection, str, Path]]:
    """Every .npz of the real layout under ``root``; any .npz elsewhere is an error."""
    files = [
        (col, split, path)
        for col in COLLECTIONS
        for split in SPLITS
        for path in sorted(col.split_dir(root, split).glob("*.npz"))
    ]
    stray = sorted(set(root.rglob("*.npz")) - {path for _, _, path in files})
    if stray:
        raise DownloadError(
            f"{len(stray)} .npz files are outside the TpuGraphs layout (npz/<kind>/<source>/[<search>/]<split>/): "
            f"{listing([str(p.relative_to(root)) for p in stray])}."
        )
    if not files:
        raise DownloadError("the dataset holds no .npz files under npz/.")
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_and_hash(root: Path, col: Collection, split: str, path: Path) -> tuple[str | None, str | None]:
    """(sha256, None) for a valid file, (None, 'field: problem') for an invalid one. The problem never holds
    ``root`` (a temporary directory), so the manifest stays the same for the same files."""
    try:
        validate_file(path, col, split)
    except DataFormatError as exc:
        field = f"{exc.field}: " if exc.field else ""
        return None, f"{field}{exc.problem}".replace(f"{root}{os.sep}", "")
    return _sha256(path), None


def _sample_submission_rows(root: Path) -> int:
    path = root / SAMPLE_SUBMISSION
    if not path.is_file():
        raise DownloadError(f"the dataset has no {SAMPLE_SUBMISSION}.")
    with path.open() as fh:
        header = fh.readline().strip()
        rows = sum(1 for line in fh if line.strip())
    if header != SUBMISSION_HEADER:
        raise DownloadError(f"{SAMPLE_SUBMISSION}: header is {header!r}, expected {SUBMISSION_HEADER!r}.")
    return rows


def build_manifest(root: Path, source: str, requested: str, origin: dict[str, Any], jobs: int = 1) -> dict[str, Any]:
    """Validate and checksum every file under ``root``; the manifest.

    A file that fails validation does not stop the stage: it is listed, with its problem, under
    ``collections.<name>.<split>.invalid`` (file name -> ``"field: problem"``; its ``sha256`` left out)
    and counted in ``num_invalid``, and a summary is printed; ``preprocess.on_bad_file`` then decides
    (:func:`tpuperf.collection.invalid_files`). DownloadError for what leaves no usable dataset:
    .npz files outside the layout, none under npz/, no valid one, no sample submission or a bad header.
    Deterministic for a given dataset: files in sorted order, no timestamps.
    """
    files = _layout_files(root)
    rows = _sample_submission_rows(root)
    results = Parallel(n_jobs=jobs, prefer="threads")(delayed(_check_and_hash)(root, *f) for f in files)
    problems = [f"{path.relative_to(root)}: {problem}" for (_, _, path), (_, problem) in zip(files, results) if problem]
    if len(problems) == len(files):
        raise DownloadError(f"all {len(files)} files failed validation: {listing(problems)}.")
    collections: dict[str, Any] = {
        col.name: {split: {"num_files": 0, "sha256": {}, "invalid": {}} for split in SPLITS} for col in COLLECTIONS
    }
    for (col, split, path), (sha, problem) in zip(files, results):
        entry = collections[col.name][split]
        entry["num_files"] += 1
        if problem:
            entry["invalid"][path.name] = problem
        else:
            entry["sha256"][path.name] = sha
    if problems:
        _warn_invalid(problems, len(files))
    return {
        "source": source,
        "requested_source": requested,
        "origin": origin,
        "num_files": len(files),
        "num_invalid": len(problems),
        "collections": collections,
        SAMPLE_SUBMISSION: {"rows": rows, "sha256": _sha256(root / SAMPLE_SUBMISSION)},
    }


def _warn_invalid(problems: list[str], total: int) -> None:
    """The loud summary of the files that failed validation (the count and the first few)."""
    banner = "!" * 78
    print(
        f"{banner}\ntpuperf download: WARNING: {len(problems)} of {total} files failed validation and are listed as "
        f"invalid in {MANIFEST_NAME}: {listing(problems)}.\npreprocess.on_bad_file in params.yaml decides: fail stops "
        "preprocess naming them; skip leaves them out (a test file left out has no submission rows, "
        "which Kaggle refuses). Check a fixed file with `tpuperf validate PATH`.\n" + banner,
        flush=True,
    )


_FILL = {"kaggle": _fill_kaggle, "synthetic": _fill_synthetic, "local": _fill_local}
