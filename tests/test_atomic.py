"""write_json_atomic: all or nothing."""
from __future__ import annotations

import json

import pytest

from tpuperf.atomic import write_json_atomic


def test_writes_json_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "new" / "x.json"
    write_json_atomic({"a": [1, 2]}, path)
    assert json.loads(path.read_text()) == {"a": [1, 2]} and path.read_text().endswith("}\n")
    with pytest.raises(TypeError):
        write_json_atomic({"a": object()}, path)
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary left
