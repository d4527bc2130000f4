"""efface as a stage of a Ray Data pipeline: ``AnonymizeImages`` is a callable class for ``Dataset.map_batches``
over rows of image bytes, run on an actor pool (the models loaded once per actor), and ``DatasetRun`` is the
audited run it writes into.

    import ray
    from efface.ray_data import AnonymizeImages, DatasetRun

    with DatasetRun.begin(db_url="postgresql+psycopg://audit@db/efface") as run:   # on the driver
        photos = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
        anonymized = photos.map_batches(
            AnonymizeImages,
            fn_constructor_kwargs={"run": run.handle},
            concurrency=4,             # actors, each with its own models
            batch_format="pyarrow",    # or "numpy"
        )
        anonymized.write_parquet("s3://bucket/anonymized/")

Each actor anonymizes its rows with ``core.anonymize_part``, the path every picture in a shard or a table takes,
and writes one audit row per row of the dataset (``path``: the row's path column; mode ``dataset``) through the
same ``AuditedRun`` as every run, one transaction per batch, before it hands the batch on: the actors share the
run the driver began (the audit store's chain lock keeps one valid chain with many writers; use PostgreSQL
when the actors are on more than one machine). Pixels never pass through the driver: it begins the run, and
when the pipeline is done it reads back the counts and finishes it.

What a row holds decides what happens to it: a picture is anonymized (the column gets the anonymized bytes),
anything that is not media is kept as it is (audited ``not_media``), and a video, a shard, a table or a
picture that cannot be anonymized is an error: with ``on_error="raise"`` (the default) its audit row is
written and the stage raises, failing the pipeline aloud; with ``on_error="null"`` the cell becomes null (the
original never goes on down the pipeline) and the row's ``efface_outcome`` says ``error``. Two columns are
added to every batch: ``efface_outcome`` and ``efface_faces`` (faces anonymized).

Ray is an optional dependency (``pip install 'efface[ray]'``); this module imports it only for its types.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np

from efface.audit import AuditStore
from efface.config import Settings, load_settings
from efface.errors import ConfigurationError, InputError, UnsupportedFormatError
from efface.media.sniff import SNIFF_BYTES, MediaKind, sniff
from efface.pipeline import results
from efface.pipeline.build import audited_settings, build_policy, load_models
from efface.pipeline.core import anonymize_part
from efface.pipeline.run import AuditedRun
from efface.records import AnonymizationResult, Location, ObjectURL, RunInfo, RunSummary, WriteMode

__all__ = ["AnonymizeImages", "DatasetRun", "RunHandle"]

OUTCOME_COLUMN = "efface_outcome"
FACES_COLUMN = "efface_faces"
_IMAGE_FIELDS = ("bytes", "path")


@dataclass(frozen=True, slots=True)
class RunHandle:
    """What an actor needs to write into the driver's run: the run and its settings (picklable).

    Attributes:
        info: the run as the driver began it.
        settings: the run's settings (the audit database URL among them).
    """

    info: RunInfo
    settings: Settings


class DatasetRun:
    """The audited run of a Ray Data pipeline, begun and finished on the driver (``begin``; a context manager).

    Raises:
        ConfigurationError: a setting cannot work (a transform below the strength floor).
        ModelError: the models cannot be loaded (the run records their name and weights).
        AuditError: the audit database cannot be opened or written.
    """

    def __init__(self, settings: Settings, store: AuditStore, run: AuditedRun) -> None:
        self._settings = settings
        self._store = store
        self._run = run

    @classmethod
    def begin(cls, settings: Settings | None = None, **overrides: Any) -> Self:
        """Starts the run: settings as ``efface.Session`` takes them (``settings``, or overrides by name)."""
        if settings is not None and overrides:
            raise ConfigurationError("give either settings or setting overrides, not both")
        settings = settings if settings is not None else load_settings(**overrides)
        build_policy(settings)  # a transform below the floor fails here, before any actor starts
        models = load_models(settings, inference_threads=1)
        store = AuditStore(settings.db_url)
        try:
            run = AuditedRun.begin(
                store, command="ray-data", mode=WriteMode.DATASET, models=models, settings=audited_settings(settings)
            )
        except BaseException:
            store.close()
            raise
        return cls(settings, store, run)

    @property
    def run_id(self) -> str:
        return self._run.run_id

    @property
    def handle(self) -> RunHandle:
        """What to give ``AnonymizeImages`` (``fn_constructor_kwargs={"run": run.handle}``)."""
        return RunHandle(info=self._run.info, settings=self._settings)

    def finish(self, *, is_interrupted: bool = False) -> RunSummary:
        """Counts the rows the actors wrote and finishes the run (``failed`` if any row is an error)."""
        try:
            if self._run.summary is None:
                self._run.count_recorded()
            return self._run.finish(is_interrupted=is_interrupted)
        finally:
            self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.finish(is_interrupted=exc is not None)


class AnonymizeImages:
    """A Ray Data stage (``Dataset.map_batches``, as a class: one instance per actor) anonymizing a column of
    image bytes; see the module docstring.

    Args:
        run: ``DatasetRun.handle`` of the driver's run.
        column: the column of image bytes (binary, or a ``datasets`` image struct ``{bytes, path}``).
        path_column: the column naming each row (``read_binary_files(..., include_paths=True)`` gives ``path``),
            recorded as the row's path; None: rows are recorded without a path, each under a request id.
        on_error: ``"raise"``: a row that cannot be anonymized fails the stage (after its audit row is written);
            ``"null"``: its cell becomes null and the pipeline goes on.

    Raises:
        ConfigurationError: the actor's models are not the run's, or a setting cannot work.
        ModelError: the models cannot be loaded.
        AuditError: the audit database cannot be opened.
    """

    def __init__(
        self,
        run: RunHandle,
        *,
        column: str = "bytes",
        path_column: str | None = "path",
        on_error: Literal["raise", "null"] = "raise",
    ) -> None:
        if on_error not in ("raise", "null"):
            raise ConfigurationError(f"on_error must be 'raise' or 'null', not {on_error!r}")
        self._policy = build_policy(run.settings)
        self._models = load_models(run.settings, inference_threads=1)
        if self._models.weights_sha256 != run.info.model_sha256:
            raise ConfigurationError("this actor's detection models are not those of the run it writes into")
        self._column = column
        self._path_column = path_column
        self._is_raising = on_error == "raise"
        self._store = AuditStore(run.settings.db_url)
        self._run = AuditedRun(self._store, run.info)  # the driver's run, joined: begun there, finished there

    def __call__(self, batch: Any) -> Any:
        """One batch (a ``pyarrow.Table`` or a dict of numpy arrays), its column anonymized, two columns added.

        Raises:
            ConfigurationError: the batch has no such column.
            InputError: a row cannot be anonymized (``on_error="raise"``), after every row's audit row is written.
            AuditError: the rows cannot be recorded: the batch is not handed on.
        """
        is_arrow = _is_arrow(batch)
        contents, image_paths = self._contents(batch, is_arrow=is_arrow)
        names = self._names(batch, len(contents), is_arrow=is_arrow)
        rows: list[AnonymizationResult | None] = []
        outputs: list[bytes | None] = []
        errors: list[InputError] = []
        for content, name in zip(contents, names, strict=True):
            result, output, error = self._row(content, name)
            rows.append(result)
            outputs.append(output)
            if error is not None:
                errors.append(error)
        self._run.record_many([row for row in rows if row is not None])
        if errors and self._is_raising:
            raise errors[0]
        outcomes = [row.outcome.value if row is not None else None for row in rows]
        faces = [row.faces_anonymized if row is not None else 0 for row in rows]
        return _replaced(batch, self._column, outputs, image_paths, outcomes, faces, is_arrow=is_arrow)

    def _contents(self, batch: Any, *, is_arrow: bool) -> tuple[list[bytes | None], list[str | None] | None]:
        names = list(batch.column_names) if is_arrow else list(batch)
        if self._column not in names:
            raise ConfigurationError(f"the batch has no column {self._column!r} (its columns: {', '.join(names)})")
        values = batch.column(self._column).to_pylist() if is_arrow else list(batch[self._column])
        if values and all(value is None or isinstance(value, dict) for value in values):
            # A datasets image struct: its bytes are anonymized, its path kept.
            image_paths = [value.get("path") if value is not None else None for value in values]
            return [value.get("bytes") if value is not None else None for value in values], image_paths
        return [_as_bytes(value) for value in values], None

    def _names(self, batch: Any, count: int, *, is_arrow: bool) -> list[Location | None]:
        if self._path_column is None:
            return [None] * count
        names = list(batch.column_names) if is_arrow else list(batch)
        if self._path_column not in names:
            raise ConfigurationError(
                f"the batch has no column {self._path_column!r} naming its rows: read with include_paths=True, "
                "name another with path_column=, or record rows without a path with path_column=None"
            )
        values = batch.column(self._path_column).to_pylist() if is_arrow else list(batch[self._path_column])
        return [_location(value) for value in values]

    def _row(
        self, content: bytes | None, name: Location | None
    ) -> tuple[AnonymizationResult | None, bytes | None, InputError | None]:
        """One row's audit row (None for a null cell: no picture, nothing to record), its new content (None for a
        row that failed) and its error."""
        if content is None:
            return None, None, None
        started_at, t0 = datetime.now(UTC), time.perf_counter()
        path: Location = name if name is not None else Path("row")
        try:
            sniffed = sniff(content[:SNIFF_BYTES])
            if sniffed.kind is MediaKind.IMAGE:
                result, output = anonymize_part(
                    content,
                    path=path,
                    label=str(path),
                    name=path.name,
                    container=path,
                    mode=WriteMode.DATASET,
                    models=self._models,
                    policy=self._policy,
                    write=True,
                )
                result = dataclasses.replace(
                    result, started_at=started_at, output_sha256=hashlib.sha256(output).hexdigest()
                )
            elif sniffed.kind is None:
                reason = f"{sniffed.format_name or 'not a picture'}, kept as it is"
                result = dataclasses.replace(
                    results.not_media(path, mode=WriteMode.DATASET, reason=reason), started_at=started_at
                )
                output = content
            else:
                raise UnsupportedFormatError(
                    f"a {sniffed.kind.value} ({sniffed.format_name}) in a dataset row: a row must hold one picture; "
                    "anonymize the file itself with efface anonymize",
                    path=path,
                )
        except InputError as exc:
            failed = results.failed(path, exc, mode=WriteMode.DATASET, started_at=started_at)
            return self._named(failed, name, t0), None, exc
        return self._named(result, name, t0), output, None

    @staticmethod
    def _named(result: AnonymizationResult, name: Location | None, t0: float) -> AnonymizationResult:
        result = dataclasses.replace(result, duration_s=time.perf_counter() - t0)
        if name is None:  # recorded under a request id of its own: the dataset gave no name
            result = dataclasses.replace(result, path=None, request_id=uuid.uuid4().hex)
        return result

    def __del__(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 1:
        return value.tobytes()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise ConfigurationError(
        f"a cell of {type(value).__name__}, not image bytes: read the files with read_binary_files (read_images "
        "decodes them to pixels, which efface does not take)"
    )


def _location(value: Any) -> Location | None:
    if value is None:
        return None
    text = str(value)
    return ObjectURL.parse(text) if "://" in text else Path(text)


def _is_arrow(batch: Any) -> bool:
    if isinstance(batch, dict):
        return False
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return True
    raise ConfigurationError(f"a batch of {type(batch).__name__}: map with batch_format='pyarrow' or 'numpy'")


def _replaced(
    batch: Any,
    column: str,
    outputs: list[bytes | None],
    image_paths: list[str | None] | None,
    outcomes: list[str | None],
    faces: list[int],
    *,
    is_arrow: bool,
) -> Any:
    if image_paths is not None:
        cells: list[Any] = [
            # A failed row's cell is null, not a path alone (which a reader would take to load the original from).
            {"bytes": output, "path": image_path} if output is not None else None
            for output, image_path in zip(outputs, image_paths, strict=True)
        ]
    else:
        cells = list(outputs)
    if not is_arrow:
        replaced = dict(batch)
        column_cells = np.empty(len(cells), dtype=object)
        column_cells[:] = cells
        replaced[column] = column_cells
        replaced[OUTCOME_COLUMN] = np.array(outcomes, dtype=object)
        replaced[FACES_COLUMN] = np.array(faces, dtype=np.int64)
        return replaced
    import pyarrow as pa

    index = batch.column_names.index(column)
    field = batch.schema.field(index)
    table = batch.set_column(index, field, pa.array(cells, type=field.type))
    table = table.append_column(OUTCOME_COLUMN, pa.array(outcomes, type=pa.string()))
    return table.append_column(FACES_COLUMN, pa.array(faces, type=pa.int64()))
