"""Files written all or nothing: a reader (or DVC) never sees a half-written one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping


def write_json_atomic(data: Mapping[str, Any], path: Path) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary sibling renamed into place;
    on any error ``path`` keeps its previous content (or stays absent) and no temporary is left.
    Creates missing parent folders. Raises what ``json.dump`` (TypeError for unserialisable
    values) or the file system (OSError) raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
