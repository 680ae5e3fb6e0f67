"""Send a submission with the kaggle CLI, after the full check against the data
(:func:`tpuperf.submission.csv.check_submission`): a file that check refuses is never sent, nor one checked
against a synthetic dataset (its test files are not the competition's)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tpuperf.collection import data_source
from tpuperf.errors import TpuperfError
from tpuperf.kaggle.cli import kaggle_failure
from tpuperf.submission.csv import SubmissionError, check_submission


class KaggleError(TpuperfError, RuntimeError):
    """The kaggle CLI is missing or refused the submission."""


def submit(
    path: Path | str, message: str, competition: str, *, data_dir: Path | str, sample: Path | str | None = None
) -> str:
    """Check the file against the test files of ``data_dir`` (the full check of
    :func:`~tpuperf.submission.csv.check_submission`, plus ``sample``'s ID set when given), then ``kaggle competitions
    submit``; returns the CLI's output.

    Raises :class:`~tpuperf.submission.csv.SubmissionError` for a file that check refuses or a ``data_dir`` whose
    manifest says it was generated (data.source synthetic; nothing is sent then) and
    :class:`KaggleError` when the kaggle CLI is missing or reports a failure.
    """
    if not message.strip():
        raise ValueError("a submission message is required (-m)")
    problems = check_submission(path, sample=sample, data_dir=data_dir, split="test")
    if data_source(data_dir) == "synthetic":
        problems.append(
            f"{data_dir} was built by data.source synthetic: its test files are generated, not the competition's "
            "test files (run the pipeline on the real data: Kaggle credentials, or data.source kaggle / local)"
        )
    if problems:
        raise SubmissionError(path, problems)
    kaggle = shutil.which("kaggle")
    if kaggle is None:
        raise KaggleError("kaggle CLI not found on PATH (pip install kaggle; token in ~/.kaggle/kaggle.json)")
    cmd = [kaggle, "competitions", "submit", "-c", competition, "-f", str(path), "-m", message]
    done = subprocess.run(cmd, capture_output=True, text=True)
    output = (done.stdout + done.stderr).strip()
    failure = kaggle_failure(done.returncode, output)
    if failure:
        raise KaggleError(f"kaggle competitions submit failed ({failure}): {output}")
    return output
