"""The memory of a process tree, read from /proc: shared by the service's bounded-memory test and
``bench/serve_memory.py`` (which puts this folder on ``sys.path``), so that both measure the same thing."""

from __future__ import annotations

from pathlib import Path


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants, from /proc (Linux): a process that exits meanwhile counts 0."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = [
                int(child)
                for task in Path(f"/proc/{current}/task").iterdir()
                for child in (task / "children").read_text().split()
            ]
        except (FileNotFoundError, ProcessLookupError):
            continue  # it has just exited
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        pending.extend(children)
    return total
