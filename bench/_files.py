"""Fresh copies of benchmark inputs: every tool anonymizes in place, so each run gets its own."""

from __future__ import annotations

import shutil
from pathlib import Path


def fresh_copies(sources: list[Path], folder: Path) -> list[Path]:
    """Copies ``sources`` into an emptied ``folder`` as 00000.jpg, 00001.png, ... (suffix kept, lower-cased)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    copies = []
    for index, path in enumerate(sources):
        copy = folder / f"{index:05d}{path.suffix.lower()}"
        shutil.copyfile(path, copy)
        copies.append(copy)
    return copies
