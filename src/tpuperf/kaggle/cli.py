"""How the kaggle CLI (2.x) reports failure, so callers can tell a failed call from a successful one.

Most failures exit non-zero (HTTP errors such as ``403 Client Error: Forbidden for url: ...``,
refused arguments). Some are printed to stdout with exit code 0, each on a line of its own:
``Kernel push error: <reason>``, ``Dataset version creation error: <reason>``, ``Dataset creation
error: <reason>``, and, after a kernel push that did go through, ``The following are not valid
dataset sources and could not be added to the kernel: [...]`` (the kernel would run without its
inputs). Older CLIs printed ``403 - Forbidden`` and ``Could not submit to competition``.

Only those line shapes count: a successful call whose output merely contains the word "error"
(an account or dataset slug such as ``no-error-lab`` in a URL) is a success.
"""

from __future__ import annotations

import re

FAILURE_LINE = re.compile(
    r"^\s*(?:"
    r"[A-Z][A-Za-z ]* error: .*"  # "<Operation> error: <reason>", e.g. Kernel push error: ...
    r"|\d{3} (?:Client|Server) Error: .*"  # requests' HTTPError text
    r"|\d{3} - .*"  # kaggle 1.x's "403 - Forbidden"
    r"|The following are not valid \w+ sources\b.*"
    r"|Could not submit to competition.*"
    r")$",
    re.MULTILINE,
)


def kaggle_failure(returncode: int, output: str) -> str | None:
    """Why a kaggle CLI call failed, or None when it succeeded.

    ``output`` is its stdout + stderr (text). Returns ``exit code N`` for a non-zero exit, else the
    first line of ``output`` that is one of the CLI's failure messages (module docstring).
    """
    if returncode != 0:
        return f"exit code {returncode}"
    found = FAILURE_LINE.search(output)
    return found.group(0).strip() if found else None
