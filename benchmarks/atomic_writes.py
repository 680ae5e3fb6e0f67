"""How long writing many small files into one directory takes through :func:`tpuperf.atomic.write_atomic`.

Each write looks for what killed writers left in the target's directory. When every write listed the directory,
writing n files into one directory took O(n^2) (``tpuperf synth`` writes each ``.npz`` through it: 600 tile train
files in one directory at the medium preset); a growing time per write over the run shows it.

Prints one JSON line: files, bytes per file, total seconds, milliseconds per write over the first and the last
``--window`` writes, and the load average (``/proc/loadavg``) before and after.

Usage: python benchmarks/atomic_writes.py [--files 2000] [--bytes 1024] [--window 200] [--dir DIR]
(DIR: where to make the scratch directory, default the system's temp dir; it is removed at the end)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tpuperf.atomic import write_atomic


def load() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"6.24 4.62 3.62"``."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def time_writes(directory: Path, files: int, size: int) -> list[float]:
    """Seconds of each of ``files`` writes of ``size`` bytes into ``directory`` (empty at the start)."""
    payload = os.urandom(size)
    seconds = []
    for i in range(files):
        started = time.perf_counter()
        write_atomic(directory / f"file_{i:06d}.bin", lambda tmp: tmp.write_bytes(payload))
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--bytes", type=int, default=1024)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    before = load()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        seconds = time_writes(Path(scratch) / "out", args.files, args.bytes)
    window = min(args.window, args.files)
    print(
        json.dumps(
            {
                "files": args.files,
                "bytes": args.bytes,
                "total_s": round(sum(seconds), 3),
                f"ms_per_write_first_{window}": round(1000 * sum(seconds[:window]) / window, 3),
                f"ms_per_write_last_{window}": round(1000 * sum(seconds[-window:]) / window, 3),
                "loadavg_before": before,
                "loadavg_after": load(),
            }
        )
    )


if __name__ == "__main__":
    main()
