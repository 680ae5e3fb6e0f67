"""One error base: every error class tpuperf defines derives from TpuperfError, and the CLI alone
turns errors into exit codes."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from tpuperf.cli import main
from tpuperf.errors import EXPECTED, TpuperfError, UsageError

SRC = Path(__file__).resolve().parents[1] / "src" / "tpuperf"
# runs in the Kaggle kernel before tpuperf is installed, so it imports only the standard library
STANDALONE = {"kaggle/kernel_entry.py"}


def test_every_error_class_derives_from_tpuperf_error():
    found = {}  # class name -> (file, base names)
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and rel not in STANDALONE:
                found[node.name] = (rel, {b.id for b in node.bases if isinstance(b, ast.Name)})
    derived = {"TpuperfError"}  # directly, or through another tpuperf error class
    while grown := {n for n, (_, bases) in found.items() if n not in derived and bases & derived}:
        derived |= grown
    classes = list(found)
    wrong = [f"{rel}: {n}({', '.join(sorted(bases))})" for n, (rel, bases) in found.items() if n not in derived]
    assert not wrong, f"error classes not derived from tpuperf.errors.TpuperfError: {wrong}"
    assert {"DataFormatError", "TrainingError", "SubmissionError", "KaggleError", "PredictionFormatError"} <= set(
        classes
    )


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


@pytest.mark.parametrize(
    "raised",
    [
        PermissionError(13, "Permission denied", "runs/tile-xla/chebsage"),
        PermissionError("Permission denied (os error 13): runs/x/.fold_0.parquet.tmp-1"),  # polars: no errno
        OSError(28, "No space left on device", "checkpoints/x/state.json"),
        KeyboardInterrupt(),
    ],
)
def test_cli_says_what_an_unwritable_location_or_an_interrupt_means(monkeypatch, capsys, raised):
    """A read-only or full output location, and Ctrl-C (`timeout -s INT`), ended in a traceback from wherever it hit
    (dvclive, polars, TensorFlow). Now one line: the path, and that nothing half-written is left / how to go on."""
    import tpuperf.cli as cli

    def fail(args):
        raise raised

    monkeypatch.setattr(cli, "_fingerprint", fail)
    code = main(["fingerprint"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    if isinstance(raised, KeyboardInterrupt):
        assert code == 130 and err.startswith("tpuperf fingerprint interrupted: its outputs are written whole")
    else:
        assert code == 1 and err.startswith(f"tpuperf fingerprint failed: {raised}: nothing half-written is left")
        # an unreadable input is denied too: the hint must not send the user to fix only where outputs go
        may = "may read and write" if isinstance(raised, PermissionError) else "can write"
        assert err.endswith(f"run it again once it {may} there\n")


def test_cli_keeps_the_traceback_of_other_os_errors(monkeypatch):
    import tpuperf.cli as cli

    def fail(args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(cli, "_fingerprint", fail)
    with pytest.raises(OSError, match="Input/output error"):
        main(["fingerprint"])


def test_cli_prints_a_warning_as_one_line_naming_the_command(monkeypatch, capsys):
    """`tpuperf rank` warnings (synthetic training data, opcodes training never saw) printed as Python's
    `.../ranker.py:419: UserWarning: ...` plus the line of tpuperf source that raised it: now one line per warning,
    `tpuperf <command>: warning: <message>`, the command going on."""
    import warnings

    import tpuperf.cli as cli

    def warn(args):
        warnings.warn("prog.npz: 2 of its 9 nodes have opcodes the tile:xla models never saw", stacklevel=2)
        return 0

    monkeypatch.setattr(cli, "_fingerprint", warn)
    assert main(["fingerprint"]) == 0
    err = capsys.readouterr().err
    assert (
        err == "tpuperf fingerprint: warning: prog.npz: 2 of its 9 nodes have opcodes the tile:xla models never saw\n"
    )


def test_cli_warning_of_a_library_keeps_its_category_and_place(monkeypatch, capsys):
    """The one-line warning printed a library's RuntimeWarning (numpy's `overflow encountered`) exactly like
    tpuperf's own UserWarnings, without its category or where it came from: now both are kept."""
    import tpuperf.cli as cli

    def overflow(args):
        np.exp(np.float64(1000.0))
        return 0

    monkeypatch.setattr(cli, "_fingerprint", overflow)
    assert main(["fingerprint"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("tpuperf fingerprint: warning: RuntimeWarning: overflow encountered in exp (")
    assert f"{Path(__file__).name}:" in err and err.count("\n") == 1


def test_cli_rank_top_that_is_no_integer_says_so(capsys):
    """`tpuperf rank --top x` said "invalid _positive value: 'x'" (argparse names the type function, a private
    one since --top refuses values below 1): it says "invalid int value" again, a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(["rank", "prog.npz", "--top", "2.5"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --top: invalid int value: '2.5'" in err and "_positive" not in err
