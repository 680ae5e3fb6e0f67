"""The base class of every error tpuperf raises on purpose, and how the ``tpuperf`` command ends.

Each stage module defines its own subclass (``DataFormatError``, ``TrainingError``, ...; ``grep
'(TpuperfError'``) whose message names the file, field or key at fault and what to do. A subclass
also keeps the builtin base it had (``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so
``except ValueError`` in callers still catches it.

Exit codes of ``tpuperf`` (mapped in one place, :func:`tpuperf.cli.main`): 0 success, 1 an
expected failure (:data:`EXPECTED`, or an output location that cannot be written: :func:`storage_error`;
one line ``tpuperf <command> failed: <message>`` on stderr), 2 a usage error (argparse's own, or
:class:`UsageError`), 130 an interrupt (Ctrl-C, ``timeout -s INT``: one line saying how to go on). Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class TpuperfError(Exception):
    """Base of tpuperf's own errors; the message is complete (cause and fix) on its own."""


class UsageError(TpuperfError):
    """The command line names something that does not exist (exit code 2, like argparse's)."""


# What a stage reports as a failure rather than a bug. Besides tpuperf's own errors (a bad
# params.yaml is a tpuperf.config.ConfigError): an unknown name (KeyError), a missing input path
# (FileNotFoundError), an existing output (FileExistsError) and a bad params value (ValueError).
EXPECTED: tuple[type[Exception], ...] = (TpuperfError, KeyError, FileNotFoundError, FileExistsError, ValueError)


# an output location that cannot take the write: full, over quota, or a read-only file system
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def storage_error(exc: BaseException) -> bool:
    """True for an OSError of where the inputs and outputs are rather than of tpuperf: permission denied
    (PermissionError, reading or writing; polars raises it without an errno) or :data:`STORAGE_ERRNOS`. Its message
    names the path; every output is written to a temp name and renamed (:mod:`tpuperf.atomic`), so nothing
    half-written is left."""
    return isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS)


def listing(items: list[str], limit: int = 5) -> str:
    """The first ``limit`` of ``items`` joined with ``; `` and how many more there are, for a
    one-paragraph message; ``nothing`` when empty."""
    if not items:
        return "nothing"
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more
