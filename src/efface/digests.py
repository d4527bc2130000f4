"""The sha256 of a file, read in chunks of 1 MiB: how efface hashes every file it names in the audit log (weights,
inputs, outputs), whatever the file's size."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]

_CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file's content.

    Raises:
        OSError: the file cannot be read (FileNotFoundError when it is not there).
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
