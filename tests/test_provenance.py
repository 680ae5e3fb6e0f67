"""tpuperf.provenance: the source hash every artifact records."""

from __future__ import annotations

import hashlib

from tpuperf.provenance import PACKAGE_DIR, source_fingerprint


def test_source_fingerprint_follows_every_python_file_and_only_them(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("# a comment\n")
    expected = hashlib.sha256(b"a.py\0x = 1\n\0sub/b.py\0# a comment\n\0").hexdigest()
    assert source_fingerprint(tmp_path) == expected
    (tmp_path / "notes.txt").write_text("not code")
    assert source_fingerprint(tmp_path) == expected
    (tmp_path / "sub" / "b.py").write_text("# another comment\n")  # a comment edit is a change too
    changed = source_fingerprint(tmp_path)
    assert changed != expected
    (tmp_path / "sub" / "b.py").rename(tmp_path / "sub" / "c.py")  # so is a rename
    assert source_fingerprint(tmp_path) not in (expected, changed)


def test_default_is_the_installed_package() -> None:
    assert (PACKAGE_DIR / "provenance.py").is_file()
    assert source_fingerprint() == source_fingerprint(PACKAGE_DIR)
