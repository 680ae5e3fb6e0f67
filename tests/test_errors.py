"""One error base: every error class tpuperf defines derives from TpuperfError, and the CLI alone
turns errors into exit codes."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tpuperf.cli import main
from tpuperf.errors import EXPECTED, TpuperfError, UsageError

SRC = Path(__file__).resolve().parents[1] / "src" / "tpuperf"
# runs in the Kaggle kernel before tpuperf is installed, so it imports only the standard library
STANDALONE = {"kaggle/kernel_entry.py"}


def test_every_error_class_derives_from_tpuperf_error():
    classes, wrong = [], []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and rel not in STANDALONE:
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                classes.append(node.name)
                if node.name != "TpuperfError" and not bases & {"TpuperfError", "UsageError"}:
                    wrong.append(f"{rel}: {node.name}({', '.join(sorted(bases))})")
    assert not wrong, f"error classes not derived from tpuperf.errors.TpuperfError: {wrong}"
    assert {"DataFormatError", "TrainingError", "SubmissionError", "KaggleError", "PredictionFormatError"} <= set(classes)


def test_cli_maps_errors_to_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert issubclass(UsageError, TpuperfError) and TpuperfError in EXPECTED
    params = tmp_path / "params.yaml"
    params.write_text("data: {out: nowhere}\n")
    assert main(["ensemble", "--params", str(params)]) == 1  # an expected failure: one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("tpuperf ensemble failed: ") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["validate", str(tmp_path / "missing")]) == 2  # a path that does not exist: a usage error
    assert capsys.readouterr().err == f"tpuperf validate: {tmp_path / 'missing'}: no such file or directory\n"
    with pytest.raises(SystemExit) as exc:  # argparse's own usage errors
        main(["train"])
    assert exc.value.code == 2
