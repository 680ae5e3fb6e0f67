"""The base class of every error tpuperf raises on purpose, and how the ``tpuperf`` command ends.

Each stage module defines its own subclass (``DataFormatError``, ``TrainingError``, ...; ``grep
'(TpuperfError'``) whose message names the file, field or key at fault and what to do. A subclass
also keeps the builtin base it had (``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so
``except ValueError`` in callers still catches it.

Exit codes of ``tpuperf`` (mapped in one place, :func:`tpuperf.cli.main`): 0 success, 1 an
expected failure (:data:`EXPECTED`; one line ``tpuperf <command> failed: <message>`` on stderr),
2 a usage error (argparse's own, or :class:`UsageError`). Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class TpuperfError(Exception):
    """Base of tpuperf's own errors; the message is complete (cause and fix) on its own."""


class UsageError(TpuperfError):
    """The command line names something that does not exist (exit code 2, like argparse's)."""


# What a stage reports as a failure rather than a bug. Besides tpuperf's own errors (a bad
# params.yaml is a tpuperf.config.ConfigError): an unknown name (KeyError), a missing input path
# (FileNotFoundError), an existing output (FileExistsError) and a bad params value (ValueError).
EXPECTED: tuple[type[Exception], ...] = (TpuperfError, KeyError, FileNotFoundError, FileExistsError, ValueError)


def listing(items: list[str], limit: int = 5) -> str:
    """The first ``limit`` of ``items`` joined with ``; `` and how many more there are, for a
    one-paragraph message; ``nothing`` when empty."""
    if not items:
        return "nothing"
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more
