"""The five TpuGraphs collections and where their files live in the dataset layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Collection:
    """One TpuGraphs collection, e.g. ``layout:nlp:random``."""

    name: str

    @property
    def kind(self) -> str:
        """``tile`` (config per graph) or ``layout`` (config per configurable node)."""
        return self.name.split(":")[0]

    @property
    def is_tile(self) -> bool:
        return self.kind == "tile"

    @property
    def source(self) -> str:
        return self.name.split(":")[1]

    @property
    def search(self) -> str | None:
        parts = self.name.split(":")
        return parts[2] if len(parts) > 2 else None

    @property
    def slug(self) -> str:
        """Filesystem- and DVC-friendly name: ``layout-nlp-random``."""
        return self.name.replace(":", "-")

    def split_dir(self, root: Path | str, split: str) -> Path:
        """Directory of one split in the real layout: ``<root>/npz/layout/nlp/random/train``."""
        return Path(root, "npz", *self.name.split(":"), split)

    def submission_id(self, graph_id: str) -> str:
        """Row ID in the submission CSV: ``layout:nlp:random:<graph>``."""
        return f"{self.name}:{graph_id}"


COLLECTIONS = tuple(
    Collection(n)
    for n in (
        "tile:xla",
        "layout:xla:random",
        "layout:xla:default",
        "layout:nlp:random",
        "layout:nlp:default",
    )
)
BY_NAME = {c.name: c for c in COLLECTIONS}
BY_SLUG = {c.slug: c for c in COLLECTIONS}


def get_collection(name_or_slug: str) -> Collection:
    """Look a collection up by ``layout:nlp:random`` or ``layout-nlp-random``."""
    found = BY_NAME.get(name_or_slug) or BY_SLUG.get(name_or_slug)
    if found is None:
        known = ", ".join(c.name for c in COLLECTIONS)
        raise ValueError(f"unknown collection {name_or_slug!r}; known: {known}")
    return found


def locate(path: Path | str) -> tuple[Collection | None, str | None]:
    """Infer (collection, split) from a path inside the real layout, or (None, None)."""
    parts = Path(path).resolve().parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] != "npz":
            continue
        rest = parts[i + 1 :]
        for col in COLLECTIONS:
            segs = tuple(col.name.split(":"))
            if rest[: len(segs)] == segs:
                split = rest[len(segs)] if len(rest) > len(segs) else None
                return col, split if split in SPLITS else None
    return None, None
