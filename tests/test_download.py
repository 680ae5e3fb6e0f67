"""The download stage, each source, without network: kaggle goes through a fake ``kaggle`` executable."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import params_with, put_on_path

from tpuperf.cli import main
from tpuperf.collection import COLLECTIONS, SPLITS
from tpuperf.config import Config, ConfigError, DataConfig, parse
from tpuperf.data.download import (
    MANIFEST_NAME,
    DownloadError,
    data_fingerprint,
    download,
    resolve_source,
    write_data_fingerprint,
)

COMPETITION = "predict-ai-model-runtime"

FAKE_KAGGLE = """#!{python}
# Stands in for the kaggle CLI: logs its arguments, then serves a zip or fails as told.
import json, os, shutil, sys
with open(os.environ["FAKE_KAGGLE_LOG"], "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_KAGGLE_FAIL"):
    print("403 - Forbidden: you must accept this competition's rules", file=sys.stderr)
    sys.exit(1)
args = sys.argv[1:]
competition, dest = args[args.index("-c") + 1], args[args.index("-p") + 1]
shutil.copy(os.environ["FAKE_KAGGLE_ZIP"], os.path.join(dest, competition + ".zip"))
print("Downloading " + competition + ".zip to " + dest)
"""


@pytest.fixture(autouse=True)
def no_kaggle_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home and no KAGGLE_* variables, so that the machine's own setup never leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    return home


class FakeKaggle:
    """Controls the fake executable and reads back how it was called."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.log = root / "kaggle-calls.jsonl"
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("FAKE_KAGGLE_LOG", str(self.log))

    def serve(self, archive: Path) -> None:
        self.monkeypatch.setenv("FAKE_KAGGLE_ZIP", str(archive))

    def fail(self) -> None:
        self.monkeypatch.setenv("FAKE_KAGGLE_FAIL", "1")

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
def fake_kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKaggle:
    put_on_path(tmp_path, monkeypatch, "kaggle", FAKE_KAGGLE.format(python=sys.executable))
    return FakeKaggle(tmp_path, monkeypatch)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")


def zip_dataset(root: Path, archive: Path, prefix: str = "", npz_prefix: str = "") -> Path:
    """A competition zip: the dataset's files at the top level (or under ``prefix``), its npz/ folder under
    ``npz_prefix`` too (the real zip: ``npz_all/npz/...`` beside ``sample_submission.csv``)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            zf.write(path, prefix + (npz_prefix + rel if rel.startswith("npz/") else rel))
    return archive


def competition_layout(dataset: Path, out: Path) -> Path:
    """``dataset`` laid out as the unzipped competition data: ``npz_all/npz/...`` and ``sample_submission.csv``
    (Kaggle mounts it so at /kaggle/input/predict-ai-model-runtime)."""
    shutil.copytree(dataset / "npz", out / "npz_all" / "npz")
    shutil.copy(dataset / "sample_submission.csv", out / "sample_submission.csv")
    return out


def params_for(tmp_path: Path, source: str, *, dir: Path | None = None, seed: int = 0, jobs: int = 1) -> DataConfig:
    """A data section writing under ``tmp_path`` (tiny synthetic preset), checked like params.yaml's."""
    return parse(
        DataConfig,
        {
            "source": source,
            "dir": None if dir is None else str(dir),
            "out": str(tmp_path / "data" / "raw"),
            "fingerprint": str(tmp_path / "data" / "source.json"),
            "competition": COMPETITION,
            "synthetic": {"preset": "tiny", "seed": seed},
            "jobs": jobs,
        },
        "data",
        "test",
    )


def leftovers(params: DataConfig) -> list[str]:
    """Anything the stage left beside its output (temporary directories would show here)."""
    parent = Path(params.out).parent
    return sorted(p.name for p in parent.iterdir() if p != Path(params.out)) if parent.exists() else []


def assert_same_dataset(out: Path, source_root: Path) -> None:
    """``out`` holds exactly the source's files, byte for byte, plus the manifest."""
    want = {p.relative_to(source_root).as_posix(): p.read_bytes() for p in source_root.rglob("*") if p.is_file()}
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got.pop(MANIFEST_NAME)
    assert got == want


def assert_manifest_describes(out: Path, manifest: dict, source: str, requested: str) -> None:
    on_disk = json.loads((out / MANIFEST_NAME).read_text())
    assert on_disk == manifest
    assert manifest["source"] == source and manifest["requested_source"] == requested
    total = 0
    for col in COLLECTIONS:
        for split in SPLITS:
            entry = manifest["collections"][col.name][split]
            files = sorted(col.split_dir(out, split).glob("*.npz"))
            valid = [f for f in files if f.name not in entry["invalid"]]
            assert entry["num_files"] == len(files) and set(entry["invalid"]) <= {f.name for f in files}
            assert entry["sha256"] == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in valid}
            total += len(files)
    assert manifest["num_files"] == total > 0
    sample = out / "sample_submission.csv"
    assert manifest["sample_submission.csv"] == {
        "rows": len(sample.read_text().splitlines()) - 1,
        "sha256": hashlib.sha256(sample.read_bytes()).hexdigest(),
    }


# ---------------------------------------------------------------- kaggle


@pytest.mark.parametrize(
    "prefix, npz_prefix",
    [("", ""), (f"{COMPETITION}/", ""), ("", "npz_all/")],
    ids=["top-level", "nested", "competition-zip"],
)
def test_kaggle_downloads_unzips_and_validates(
    tmp_path, tiny_dataset, fake_kaggle, credentials, prefix, npz_prefix
) -> None:
    """The competition's zip holds npz_all/npz/... beside sample_submission.csv: it was refused as 'does not
    have the TpuGraphs layout' (npz/ and the sample had to share a folder)."""
    fake_kaggle.serve(zip_dataset(tiny_dataset, tmp_path / "served.zip", prefix, npz_prefix))
    params = params_for(tmp_path, "kaggle")
    manifest = download(params)
    [call] = fake_kaggle.calls()
    assert call[:-1] == ["competitions", "download", "-c", COMPETITION, "-p"]
    # downloaded inside the output's staging dir (same file system), which the next download removes if killed
    staging = Path(call[-1]).parent
    assert staging.parent == Path(params.out).parent
    assert re.fullmatch(rf"\.{Path(params.out).name}\.staging-\d+-[0-9a-f]{{8}}", staging.name), staging.name
    assert_same_dataset(Path(params.out), tiny_dataset)
    assert_manifest_describes(Path(params.out), manifest, "kaggle", "kaggle")
    assert manifest["origin"] == {"competition": COMPETITION}
    assert manifest["num_files"] == 10
    assert leftovers(params) == []  # neither the staging dir nor the downloaded zip remain


def test_kaggle_without_executable(tmp_path, credentials, monkeypatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    params = params_for(tmp_path, "kaggle")
    with pytest.raises(DownloadError, match=r"`kaggle` command is not on PATH.*Nothing was written to"):
        download(params)
    assert not Path(params.out).exists() and leftovers(params) == []


def test_kaggle_without_credentials(tmp_path, tiny_dataset, fake_kaggle) -> None:
    fake_kaggle.serve(zip_dataset(tiny_dataset, tmp_path / "served.zip"))
    params = params_for(tmp_path, "kaggle")
    with pytest.raises(DownloadError) as info:
        download(params)
    message = str(info.value)
    assert "no Kaggle credentials were found" in message and "KAGGLE_USERNAME" in message and "kaggle.json" in message
    assert fake_kaggle.calls() == []
    assert not Path(params.out).exists() and leftovers(params) == []


def test_failed_download_shows_what_kaggle_said(tmp_path, fake_kaggle, credentials) -> None:
    fake_kaggle.fail()
    params = params_for(tmp_path, "kaggle")
    with pytest.raises(DownloadError) as info:
        download(params)
    message = str(info.value)
    assert "exit code 1" in message and "403 - Forbidden: you must accept this competition's rules" in message
    assert f"Nothing was written to {Path(params.out)}." in message and "\n" not in message
    assert not Path(params.out).exists() and leftovers(params) == []


def test_corrupt_zip(tmp_path, tiny_dataset, fake_kaggle, credentials) -> None:
    archive = zip_dataset(tiny_dataset, tmp_path / "served.zip")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    fake_kaggle.serve(archive)
    params = params_for(tmp_path, "kaggle")
    with pytest.raises(DownloadError, match=rf"{COMPETITION}\.zip is corrupt or truncated"):
        download(params)
    assert not Path(params.out).exists() and leftovers(params) == []


def test_corrupt_member_inside_zip(tmp_path, tiny_dataset, fake_kaggle, credentials) -> None:
    archive = zip_dataset(tiny_dataset, tmp_path / "served.zip")
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("sample_submission.csv")
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start : start + info.compress_size] = bytes(b ^ 0x55 for b in data[start : start + info.compress_size])
    archive.write_bytes(bytes(data))
    fake_kaggle.serve(archive)
    params = params_for(tmp_path, "kaggle")
    with pytest.raises(DownloadError, match="is corrupt or truncated"):
        download(params)
    assert not Path(params.out).exists() and leftovers(params) == []


def test_zip_without_the_layout(tmp_path, fake_kaggle, credentials) -> None:
    archive = tmp_path / "served.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train.csv", "a,b\n1,2\n")
    fake_kaggle.serve(archive)
    params = params_for(tmp_path, "kaggle")
    with pytest.raises(DownloadError, match=r"does not have the TpuGraphs layout.*holds train\.csv"):
        download(params)
    assert not Path(params.out).exists() and leftovers(params) == []


def test_invalid_npz_inside_zip_is_listed_not_refused(
    tmp_path, tiny_dataset, fake_kaggle, credentials, rewrite_npz, capsys
) -> None:
    """One invalid file among many used to refuse the whole download (and, with kaggle, cost the 6 GB again
    after fixing nothing); now it is kept, listed with its problem in the manifest and announced."""
    bad = tiny_dataset / "npz/layout/nlp/default/train/train4.npz"
    rewrite_npz(bad, config_runtime=np.zeros(4, np.int64))
    fake_kaggle.serve(zip_dataset(tiny_dataset, tmp_path / "served.zip"))
    params = params_for(tmp_path, "kaggle")
    manifest = download(params)
    out = Path(params.out)
    assert_same_dataset(out, tiny_dataset)
    assert_manifest_describes(out, manifest, "kaggle", "kaggle")
    problem = "config_runtime: 4 non-positive runtimes in a train file"
    assert manifest["collections"]["layout:nlp:default"]["train"] == {
        "num_files": 1,
        "sha256": {},
        "invalid": {"train4.npz": problem},
    }
    assert manifest["num_invalid"] == 1
    assert sum(len(split["invalid"]) for col in manifest["collections"].values() for split in col.values()) == 1
    printed = capsys.readouterr().out
    assert f"WARNING: 1 of 10 files failed validation and are listed as invalid in {MANIFEST_NAME}: " in printed
    assert f"npz/layout/nlp/default/train/train4.npz: {problem}" in printed
    assert "preprocess.on_bad_file" in printed and "wrote 10 validated files (1 invalid) to" in printed
    assert len(fake_kaggle.calls()) == 1 and leftovers(params) == []
    assert main(["validate", str(out)]) == 1  # the check alone still fails on it
    assert f"BAD {out}/npz/layout/nlp/default/train/train4.npz: {problem}" in capsys.readouterr().out


def test_no_valid_file_is_refused_and_keeps_previous_output(tmp_path, tiny_dataset) -> None:
    for path in tiny_dataset.rglob("*.npz"):
        path.write_bytes(b"not a zip archive")
    params = params_for(tmp_path, "local", dir=tiny_dataset)
    Path(params.out).mkdir(parents=True)
    (Path(params.out) / "previous.txt").write_text("from an earlier run")
    with pytest.raises(DownloadError) as info:
        download(params)
    message = str(info.value)
    assert message.startswith("all 10 files failed validation: npz/tile/xla/train/train0.npz: ")
    assert "unreadable or truncated archive" in message and "(and 5 more)" in message
    assert "the previous dataset there is untouched" in message
    assert [p.name for p in Path(params.out).iterdir()] == ["previous.txt"]
    assert leftovers(params) == []


def test_manifest_of_invalid_files_is_deterministic(tmp_path, tiny_dataset) -> None:
    """A problem quoting the file's path (here an OS error on a folder named like an .npz) must not carry the
    temporary directory the dataset was built in: the same files give the same manifest bytes."""
    (tiny_dataset / "npz/tile/xla/valid/folder.npz").mkdir(parents=True)
    (tiny_dataset / "npz/tile/xla/valid/folder.npz/readme.txt").write_text("not an npz")
    manifests = []
    for run in ("a", "b"):
        manifest = download(params_for(tmp_path / run, "local", dir=tiny_dataset))
        assert manifest["num_invalid"] == 1
        manifests.append((tmp_path / run / "data" / "raw" / MANIFEST_NAME).read_bytes())
    why = manifest["collections"]["tile:xla"]["valid"]["invalid"]["folder.npz"]
    assert "Is a directory: 'npz/tile/xla/valid/folder.npz'" in why and ".tmp" not in why
    assert manifests[0] == manifests[1]


# ---------------------------------------------------------------- local


def test_local_links_validates_and_replaces_previous_output(tmp_path, tiny_dataset) -> None:
    params = params_for(tmp_path, "local", dir=tiny_dataset)
    Path(params.out).mkdir(parents=True)
    (Path(params.out) / "stale.txt").write_text("old")
    manifest = download(params)
    assert_same_dataset(Path(params.out), tiny_dataset)
    assert_manifest_describes(Path(params.out), manifest, "local", "local")
    assert manifest["origin"] == {"dir": str(tiny_dataset.resolve())}
    src, dst = tiny_dataset / "sample_submission.csv", Path(params.out) / "sample_submission.csv"
    assert src.stat().st_ino == dst.stat().st_ino  # hard-linked, not copied
    assert leftovers(params) == []
    first = (Path(params.out) / MANIFEST_NAME).read_bytes()
    download(params)
    assert (Path(params.out) / MANIFEST_NAME).read_bytes() == first  # deterministic: no timestamps


def test_local_dataset_assembled_from_symlinked_folders_is_taken_whole(tmp_path, tiny_dataset) -> None:
    """data.dir built from links to split folders elsewhere: those folders' files were skipped
    (os.walk did not follow them), so the download left e.g. every train split out."""
    mine = tmp_path / "mine"
    for src in sorted(tiny_dataset.rglob("*")):
        rel = src.relative_to(tiny_dataset)
        if src.is_dir() and src.name in SPLITS:
            (mine / rel).parent.mkdir(parents=True, exist_ok=True)
            (mine / rel).symlink_to(src)
    (mine / "sample_submission.csv").symlink_to(tiny_dataset / "sample_submission.csv")
    params = params_for(tmp_path, "local", dir=mine)
    manifest = download(params)
    assert manifest["num_files"] == len(list(tiny_dataset.rglob("*.npz"))) == 10
    assert_same_dataset(Path(params.out), tiny_dataset)
    assert len(data_fingerprint(params)["files"]) == 11  # the fingerprint lists them too


def test_local_real_files(tmp_path, shared_data) -> None:
    params = params_for(tmp_path, "local", dir=shared_data, jobs=2)
    manifest = download(params)
    assert manifest["num_files"] == len(list(shared_data.rglob("*.npz")))
    tile_test = len(list((shared_data / "npz/tile/xla/test").glob("*.npz")))
    assert manifest["collections"]["tile:xla"]["test"]["num_files"] == tile_test > 0
    rows = len((shared_data / "sample_submission.csv").read_text().splitlines()) - 1
    assert manifest["sample_submission.csv"]["rows"] == rows > 0
    assert not (Path(params.out) / "README.md").exists()  # only the layout is taken


def test_local_unzipped_competition_data(tmp_path, tiny_dataset) -> None:
    """data.dir = the unzipped competition data (npz_all/npz/... beside sample_submission.csv, as Kaggle
    mounts it): refused with 'npz missing' before; now the dataset is taken as if npz/ were at the top."""
    params = params_for(tmp_path, "local", dir=competition_layout(tiny_dataset, tmp_path / "unzipped"))
    manifest = download(params)
    assert_same_dataset(Path(params.out), tiny_dataset)
    assert_manifest_describes(Path(params.out), manifest, "local", "local")
    files = [rel for rel, *_ in data_fingerprint(params)["files"]]
    assert len(files) == 11 and "sample_submission.csv" in files and "npz_all/npz/tile/xla/test/test0.npz" in files


@pytest.mark.parametrize("problem", ["unset", "no npz", "no sample"])
def test_local_without_the_layout(tmp_path, tiny_dataset, problem) -> None:
    if problem == "no npz":
        (tiny_dataset / "npz").rename(tiny_dataset / "arrays")
    if problem == "no sample":
        (tiny_dataset / "sample_submission.csv").unlink()
    params = params_for(tmp_path, "local", dir=None if problem == "unset" else tiny_dataset)
    expected = {"unset": "data.dir is not set", "no npz": "npz missing", "no sample": "sample_submission.csv missing"}
    with pytest.raises(DownloadError, match=expected[problem]):
        download(params)
    assert not Path(params.out).exists() and leftovers(params) == []


def test_npz_outside_the_layout_is_rejected(tmp_path, tiny_dataset, write_graph) -> None:
    stray = tiny_dataset / "npz" / "tile" / "xla" / "extra" / "x.npz"
    stray.parent.mkdir()
    write_graph(tmp_path, "tile:xla", "train").rename(stray)
    params = params_for(tmp_path, "local", dir=tiny_dataset)
    with pytest.raises(
        DownloadError, match=r"1 \.npz files are outside the TpuGraphs layout.*npz/tile/xla/extra/x\.npz"
    ):
        download(params)
    assert not Path(params.out).exists()


# ---------------------------------------------------------------- auto and synthetic


def test_auto_uses_kaggle_when_credentials_exist(
    tmp_path, tiny_dataset, fake_kaggle, no_kaggle_credentials, capsys
) -> None:
    token = no_kaggle_credentials / ".kaggle" / "kaggle.json"
    token.parent.mkdir()
    token.write_text('{"username": "someone", "key": "0123"}')
    assert resolve_source("auto") == ("kaggle", f"data.source is 'auto' and Kaggle credentials were found ({token})")
    fake_kaggle.serve(zip_dataset(tiny_dataset, tmp_path / "served.zip"))
    params = params_for(tmp_path, "auto")
    manifest = download(params)
    assert manifest["source"] == "kaggle" and manifest["requested_source"] == "auto"
    assert len(fake_kaggle.calls()) == 1
    assert "data source = KAGGLE" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["env", "token env", "config dir"])
def test_credential_sources(tmp_path, monkeypatch, how) -> None:
    assert resolve_source("auto")[0] == "synthetic"
    if how == "env":
        monkeypatch.setenv("KAGGLE_USERNAME", "someone")
        assert resolve_source("auto")[0] == "synthetic"  # a user name alone is not a credential
        monkeypatch.setenv("KAGGLE_KEY", "0123")
    elif how == "token env":
        monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_0123")
    else:
        (tmp_path / "cfg").mkdir()
        (tmp_path / "cfg" / "kaggle.json").write_text("{}")
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    assert resolve_source("auto")[0] == "kaggle"
    assert resolve_source("synthetic") == ("synthetic", "data.source is 'synthetic'")


def test_auto_without_credentials_generates_synthetic_data_loudly(tmp_path, fake_kaggle, capsys) -> None:
    params = params_for(tmp_path, "auto")
    manifest = download(params)
    out = capsys.readouterr().out
    assert "data source = SYNTHETIC: data.source is 'auto' and no Kaggle credentials were found" in out
    assert "GENERATED data (preset 'tiny', seed 0)" in out
    assert fake_kaggle.calls() == []
    assert_manifest_describes(Path(params.out), manifest, "synthetic", "auto")
    assert manifest["origin"] == {"preset": "tiny", "seed": 0}
    assert all(manifest["collections"][c.name][s]["num_files"] > 0 for c in COLLECTIONS for s in SPLITS)
    assert leftovers(params) == []


def test_synthetic_is_reproducible(tmp_path) -> None:
    first = download(params_for(tmp_path / "a", "synthetic"))
    second = download(params_for(tmp_path / "b", "synthetic"))
    assert first == second
    a, b = tmp_path / "a" / "data" / "raw" / MANIFEST_NAME, tmp_path / "b" / "data" / "raw" / MANIFEST_NAME
    assert a.read_bytes() == b.read_bytes()
    other = download(params_for(tmp_path / "c", "synthetic", seed=1))
    assert other["collections"] != first["collections"]


# ---------------------------------------------------------------- params and CLI


def write_params(tmp_path: Path, **data) -> Path:
    section = {
        "source": "local",
        "dir": None,
        "out": str(tmp_path / "data" / "raw"),
        "fingerprint": str(tmp_path / "data" / "source.json"),
        "competition": COMPETITION,
        "synthetic": {"preset": "tiny", "seed": 0},
        "jobs": 1,
        **data,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_with({"data": section})))
    return path


def test_cli_download(tmp_path, tiny_dataset, capsys) -> None:
    assert main(["download", "--params", str(write_params(tmp_path, dir=str(tiny_dataset)))]) == 0
    assert "wrote 10 validated files" in capsys.readouterr().out
    assert (tmp_path / "data" / "raw" / MANIFEST_NAME).exists()


def test_cli_download_failure_is_one_clear_message(tmp_path, capsys) -> None:
    assert main(["download", "--params", str(write_params(tmp_path, source="kaggle"))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tpuperf download failed: ") and err.count("\n") == 1
    assert not (tmp_path / "data" / "raw").exists()


def test_params_are_checked(tmp_path) -> None:
    params = yaml.safe_load(write_params(tmp_path).read_text())
    assert Config.from_dict(params).data == params_for(tmp_path, "local")
    with pytest.raises(ConfigError, match="data.source must be one of auto, kaggle, synthetic, local, got 'ftp'"):
        Config.from_dict({**params, "data": {**params["data"], "source": "ftp"}})
    with pytest.raises(ConfigError, match="data.jobs missing"):
        Config.from_dict({**params, "data": {k: v for k, v in params["data"].items() if k != "jobs"}})


# ---------------------------------------------------------------- source fingerprint and DVC staleness


def test_fingerprint_of_each_source(tmp_path, tiny_dataset, credentials, monkeypatch) -> None:
    assert data_fingerprint(params_for(tmp_path, "kaggle")) == {"source": "kaggle", "competition": COMPETITION}
    assert data_fingerprint(params_for(tmp_path, "auto")) == {"source": "kaggle", "competition": COMPETITION}
    assert data_fingerprint(params_for(tmp_path, "synthetic", seed=3)) == {
        "source": "synthetic",
        "preset": "tiny",
        "seed": 3,
    }
    params = params_for(tmp_path, "local", dir=tiny_dataset)
    fingerprint = write_data_fingerprint(params)
    assert json.loads(Path(params.fingerprint).read_text()) == fingerprint
    assert fingerprint["source"] == "local" and fingerprint["dir"] == str(tiny_dataset.resolve())
    # exactly the files download takes, with size, mtime and inode
    manifest = download(params)
    listed = {row[0]: row[1:] for row in fingerprint["files"]}
    taken = {
        f"{col.split_dir(Path(), split).as_posix()}/{name}"
        for col in COLLECTIONS
        for split in SPLITS
        for name in manifest["collections"][col.name][split]["sha256"]
    }
    assert set(listed) == taken | {"sample_submission.csv"}
    sample = (tiny_dataset / "sample_submission.csv").stat()
    assert listed["sample_submission.csv"] == [sample.st_size, sample.st_mtime_ns, sample.st_ino]
    assert data_fingerprint(params) == fingerprint  # downloading (hard links) does not change it
    monkeypatch.chdir(tiny_dataset.parent)  # a relative data.dir is relative to the working directory (DVC: the repo)
    assert data_fingerprint(replace(params, dir=tiny_dataset.name)) == fingerprint
    (tiny_dataset / "notes.txt").write_text("not part of the dataset")
    assert data_fingerprint(params) == fingerprint
    os.utime(tiny_dataset / "sample_submission.csv", ns=(sample.st_atime_ns, sample.st_mtime_ns + 1))
    assert data_fingerprint(params) != fingerprint


def test_cli_fingerprint_refusal_writes_nothing(tmp_path, capsys) -> None:
    assert main(["fingerprint", "--params", str(write_params(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tpuperf fingerprint failed: data.source is 'local' but data.dir is not set")
    assert "Nothing was written to" in err and not (tmp_path / "data").exists()


REPO = Path(__file__).resolve().parents[1]
CONSUMER = {  # stands in for preprocess: re-runs only when data/raw's content changes
    "cmd": "python -c \"import pathlib; pathlib.Path('consumed.txt').write_text(pathlib.Path('data/raw/manifest.json').read_text())\"",
    "deps": ["data/raw"],
    "outs": ["consumed.txt"],
}


def dvc(project: Path, *args: str) -> str:
    """``dvc ARGS`` in ``project``; the stages' ``tpuperf`` runs this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def ran(log: str) -> set[str]:
    """Stages DVC ran or, having seen the same deps before, restored from its run cache."""
    return {a or b for a, b in re.findall(r"Running stage '([^']+)'|Stage '([^']+)' is cached - skipping run", log)}


def dvc_project(tmp_path: Path, **data) -> Path:
    """A scratch DVC project with the real fingerprint and download stages of dvc.yaml, plus CONSUMER."""
    project = tmp_path / "project"
    project.mkdir()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    (project / "dvc.yaml").write_text(
        yaml.safe_dump(
            {"stages": {"fingerprint": stages["fingerprint"], "download": stages["download"], "consumer": CONSUMER}}
        )
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params_with({"data": {"jobs": 1, **data}})))
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dvc(project, "init", "--no-scm")
    return project


def test_dvc_reruns_download_when_a_local_file_changes(tmp_path, tiny_dataset, write_graph) -> None:
    """Runs the real stages in a scratch DVC project (~20 s)."""
    project = dvc_project(tmp_path, source="local", dir=str(tiny_dataset))
    assert ran(dvc(project, "repro")) == {"fingerprint", "download", "consumer"}
    again = dvc(project, "repro")
    assert ran(again) == {"fingerprint"} and "Stage 'download' didn't change" in again

    # a new mtime on unchanged content: download re-runs, its output is identical, the consumer is skipped
    sample = tiny_dataset / "sample_submission.csv"
    os.utime(sample, ns=(sample.stat().st_atime_ns, sample.stat().st_mtime_ns + 10**9))
    log = dvc(project, "repro")
    assert ran(log) == {"fingerprint", "download"} and "Stage 'consumer' didn't change" in log

    # changed content: everything downstream re-runs and sees the new file
    changed = write_graph(tiny_dataset, "tile:xla", "train", name="train0", seed=99)
    assert ran(dvc(project, "repro")) == {"fingerprint", "download", "consumer"}
    raw = project / "data" / "raw"
    assert_same_dataset(raw, tiny_dataset)
    assert (project / "consumed.txt").read_text() == (raw / MANIFEST_NAME).read_text()
    sha = json.loads((raw / MANIFEST_NAME).read_text())["collections"]["tile:xla"]["train"]["sha256"]["train0.npz"]
    assert sha == hashlib.sha256(changed.read_bytes()).hexdigest()

    # a file added, then one removed
    added = write_graph(tiny_dataset, "layout:nlp:random", "valid", name="extra")
    assert ran(dvc(project, "repro")) == {"fingerprint", "download", "consumer"}
    assert (raw / added.relative_to(tiny_dataset)).is_file()
    added.unlink()  # back to a state DVC has seen: download and consumer come from its run cache
    assert ran(dvc(project, "repro")) == {"fingerprint", "download", "consumer"}
    assert_same_dataset(raw, tiny_dataset)
    assert (project / "consumed.txt").read_text() == (raw / MANIFEST_NAME).read_text()


def test_dvc_does_not_download_kaggle_again(tmp_path, tiny_dataset, fake_kaggle, credentials) -> None:
    """Runs the real stages in a scratch DVC project with the fake kaggle CLI (~10 s)."""
    fake_kaggle.serve(zip_dataset(tiny_dataset, tmp_path / "served.zip"))
    project = dvc_project(tmp_path, source="kaggle")
    assert ran(dvc(project, "repro")) == {"fingerprint", "download", "consumer"}
    assert len(fake_kaggle.calls()) == 1
    again = dvc(project, "repro")
    assert ran(again) == {"fingerprint"} and "Stage 'download' didn't change" in again
    assert len(fake_kaggle.calls()) == 1
