"""params.yaml: the one place every knob lives. DVC stages and the CLI read it through here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """The whole params file as a dict; a clear error when it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found (run from the repo root or pass --params)")
    with path.open() as fh:
        params = yaml.safe_load(fh)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return params


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """One top-level section, failing with the section's name when it is absent."""
    if name not in params:
        raise KeyError(f"params.yaml has no '{name}' section")
    return params[name]
