"""What a user names on the command line, told apart: local files and folders, or objects by URL.

``efface anonymize photos/ s3://bucket/prefix/`` plans the local paths with ``jobs.plan_jobs`` and the URLs with
``objects.plan_objects``, in one run with one write mode. ``file://`` URLs are local paths. A URL scheme efface
cannot write safely is refused before anything is read (``storage.open_store_for``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from efface.errors import ConfigurationError
from efface.pipeline.jobs import Plan, PlanItem, output_target, plan_jobs
from efface.pipeline.objects import ObjectPlan, plan_objects
from efface.records import Location, ObjectURL, WriteMode

__all__ = ["Sources", "parse_location", "parse_storage_options", "plan_sources"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def parse_location(text: str) -> Location:
    """A command-line argument as a local path or an object URL (``file://`` URLs are local paths).

    Raises:
        ConfigurationError: a URL with no bucket (``s3://``).
    """
    if not _URL.match(text):
        return Path(text)
    if text.lower().startswith("file://"):
        return Path(unquote(urlparse(text).path))
    try:
        return ObjectURL.parse(text)
    except ValueError as exc:
        raise ConfigurationError(f"{text}: not an object URL (scheme://bucket/key)") from exc


def parse_storage_options(pairs: Sequence[str]) -> dict[str, object]:
    """``--storage-option KEY=VALUE`` pairs as keyword arguments of the store's filesystem; a value that reads as
    JSON (``true``, ``3``, ``{"region_name": "eu-west-1"}``) is taken as such, any other as a string. They are never
    written to the audit log (they may hold secrets).

    Raises:
        ConfigurationError: a pair without ``=`` or with an empty key.
    """
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--storage-option takes KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


@dataclass(frozen=True, slots=True)
class Sources:
    """A run's plan over local paths and object URLs together.

    Attributes:
        mode: in place, output or dry run (the same for both).
        local: the local paths' plan (None when none was given).
        objects: the URLs' plan (None when none was given).
    """

    mode: WriteMode
    local: Plan | None
    objects: ObjectPlan | None

    def items(self) -> Iterator[PlanItem]:
        """The local paths' items, then the objects'."""
        if self.local is not None:
            yield from self.local.items()
        if self.objects is not None:
            yield from self.objects.items()


def plan_sources(
    given: Sequence[str],
    *,
    output: str | None = None,
    dry_run: bool = False,
    storage_options: Mapping[str, object] | None = None,
    work_folder: Path | None = None,
) -> Sources:
    """Plans a run over what the user named.

    Args:
        given: paths and URLs as typed.
        output: a local folder or an object URL (a prefix) to write to instead of in place.
        dry_run: detect only.
        storage_options: keyword arguments of the object store's filesystem.
        work_folder: the run's private local folder for object copies (``objects.WorkFolder``); needed when a URL
            is given.

    Raises:
        ConfigurationError: a URL scheme efface cannot write safely, an object output for local inputs, a URL
            given without a work folder, or an output folder that is an input.
    """
    locations = [parse_location(text) for text in given]
    paths = [location for location in locations if isinstance(location, Path)]
    urls = [location for location in locations if isinstance(location, ObjectURL)]
    out = parse_location(output) if output is not None else None
    if isinstance(out, ObjectURL) and paths:
        raise ConfigurationError(
            "--output to an object store is for object inputs: write local files to a local folder"
        )
    local = None
    if paths and not isinstance(out, ObjectURL):
        output_dir, output_file = out, None
        if out is not None and output is not None and not urls:
            output_dir, output_file = output_target(paths, out, text=output)
        local = plan_jobs(paths, output_dir=output_dir, output_file=output_file, dry_run=dry_run)
    objects = None
    if urls:
        from efface.storage import open_store_for

        store = open_store_for(urls[0], storage_options or {})
        for url in [*urls[1:], *([out] if isinstance(out, ObjectURL) else [])]:
            open_store_for(url, storage_options or {})  # each scheme checked before anything is read
        if work_folder is None:
            raise ConfigurationError("object URLs need a local work folder")
        objects = plan_objects(urls, store=store, work_folder=work_folder, output=out, dry_run=dry_run)
    mode = WriteMode.DRY_RUN if dry_run else (WriteMode.OUTPUT_DIR if out is not None else WriteMode.IN_PLACE)
    return Sources(mode=mode, local=local, objects=objects)
