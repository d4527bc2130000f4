"""efface from Python: ``Session`` anonymizes paths and in-memory images with the models loaded once, through the
same orchestration path and the same audit log as the command line and the HTTP service.

A session loads the models (or takes ones loaded with ``load_models``, to share them between sessions with other
settings), checks the settings' strength once, and opens the audit database. ``anonymize_paths`` is one audited
run, exactly as ``efface anonymize`` records it (in place, into an output folder, or a dry run); images given as
bytes are recorded in one run of the session (command ``library``), one row each, and the anonymized bytes are
handed back: nothing is written to disk.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from efface.audit import AuditStore
from efface.config import Settings, load_settings
from efface.detection.models import DetectionModels
from efface.errors import ConfigurationError, EffaceError
from efface.pipeline import results
from efface.pipeline.build import audited_settings, build_policy, build_selection, inference_threads_for, with_selection
from efface.pipeline.build import load_models as _load_models
from efface.pipeline.core import anonymize_bytes
from efface.pipeline.jobs import plan_jobs
from efface.pipeline.pool import InProcess
from efface.pipeline.run import AuditedRun, run_plan
from efface.records import AnonymizationResult, WriteMode

__all__ = ["AnonymizedContent", "Session", "load_models"]


def load_models(settings: Settings | None = None, *, inference_threads: int | None = None) -> DetectionModels:
    """Loads the detection models once, to share between sessions (``Session(models=...)``).

    Args:
        settings: which detectors (``extra_detectors``) on which device (``providers``); default: the
            environment's and config file's settings.
        inference_threads: threads one inference may use; default: every core. Give 1 where each core runs a
            process of its own (a Ray actor, a Spark executor core, ``datasets.map(num_proc=...)``).

    Raises:
        ConfigurationError: an unavailable execution provider.
        ModelError: a model cannot be loaded.
    """
    settings = settings or load_settings()
    threads = inference_threads if inference_threads is not None else inference_threads_for(1)
    return _load_models(settings, inference_threads=threads)


@dataclass(frozen=True, slots=True)
class AnonymizedContent:
    """An image anonymized in memory.

    Attributes:
        data: the anonymized image file, in the format it came in, without metadata (the input itself when it
            had neither faces nor metadata).
        result: its audit record (faces, boxes, format, size, output sha256).
    """

    data: bytes = field(repr=False)
    result: AnonymizationResult


def _path_list(paths: str | PathLike[str] | Iterable[str | PathLike[str]]) -> list[Path]:
    if isinstance(paths, str | PathLike):
        return [Path(paths)]
    return [Path(path) for path in paths]


class Session:
    """Anonymizes files and images with the models loaded once; every file and image is audited.

    Args:
        settings: the settings to use; default: built from ``overrides``, the environment (``EFFACE_*``) and the
            config file, as the command line does.
        models: models from ``load_models`` to share; default: loaded here with every core for inference.
        keep_person: selective anonymization (a subject access request): these people's faces are left visible
            and everyone else's anonymized; one photo, or folder of photos, per person (``--keep-person``).
        only_person: selective anonymization (an erasure request): only these people's faces are anonymized
            (``--only-person``); not with ``keep_person``.
        **overrides: settings by name (``method="blur"``, ``db_url=...``), when ``settings`` is not given.

    Raises:
        ConfigurationError: a setting cannot work (``WeakTransformError`` below the strength floor), both
            ``keep_person`` and ``only_person``, or the face recognizers are not installed.
        InputError: a reference photo that cannot be used (no face, several of like size, too small).
        ModelError: the models cannot be loaded.
        AuditError: the audit database cannot be opened.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        models: DetectionModels | None = None,
        keep_person: Iterable[str | PathLike[str]] = (),
        only_person: Iterable[str | PathLike[str]] = (),
        **overrides: Any,
    ) -> None:
        if settings is not None and overrides:
            raise ConfigurationError("give either settings or setting overrides, not both")
        self.settings = settings if settings is not None else load_settings(**overrides)
        policy = build_policy(self.settings)
        self.models = models if models is not None else load_models(self.settings)
        self.selection = build_selection(
            keep=[Path(path) for path in keep_person],
            only=[Path(path) for path in only_person],
            models=self.models,
            policy=policy,
        )
        self.policy = with_selection(policy, self.selection)
        self.store = AuditStore(self.settings.db_url)
        self._content_run: AuditedRun | None = None

    def anonymize_paths(
        self,
        paths: str | PathLike[str] | Iterable[str | PathLike[str]],
        *,
        output_dir: str | PathLike[str] | None = None,
        dry_run: bool = False,
        force: bool = False,
    ) -> list[AnonymizationResult]:
        """Anonymizes files and folders (walked recursively) as one audited run, like ``efface anonymize``.

        Args:
            paths: files and folders.
            output_dir: write a mirrored tree here and leave the sources untouched; default: in place.
            dry_run: detect and audit only; write nothing.
            force: redo files an earlier run already anonymized (default: they are skipped).

        Returns:
            One result per file (and per leftover temporary file removed), in plan order; failures are results
            with outcome ``error``, never exceptions.

        Raises:
            InputNotFoundError: an output folder inside an input, or no path given (as the CLI refuses them).
            AuditError: the audit log cannot be written (the files done so far are recorded).
        """
        plan = plan_jobs(
            _path_list(paths), output_dir=Path(output_dir) if output_dir is not None else None, dry_run=dry_run
        )
        recorded: list[AnonymizationResult] = []
        run = AuditedRun.begin(
            self.store,
            command="library",
            mode=plan.mode,
            models=self.models,
            settings=audited_settings(self.settings, identity=self.selection),
            on_result=recorded.append,
        )
        with run:
            run_plan(plan.items(), executor=InProcess(self.models, self.policy), run=run, is_forced=force)
        return recorded

    def anonymize_bytes(self, content: bytes, *, name: str = "image") -> AnonymizedContent:
        """Anonymizes an image held in memory; nothing is written to disk. Recorded as one row of the session's run.

        Args:
            content: the image file's bytes (JPEG, PNG, WebP, TIFF, BMP).
            name: what the image is called (its suffix helps the format check; recorded in the audit row).

        Raises:
            InputError: not an image efface can anonymize (recorded as a failure, then raised).
            AuditError: the row cannot be written (the anonymized image is then not handed back).
        """
        run = self._run_for_content()
        started_at, t0 = datetime.now(UTC), time.perf_counter()
        request_id = uuid.uuid4().hex
        details: dict[str, object] = {"name": name, "input_bytes": len(content)}
        try:
            processed = anonymize_bytes(content, name=Path(name), models=self.models, policy=self.policy)
        except EffaceError as exc:
            duration_s = time.perf_counter() - t0
            failure = results.failed(
                None,
                exc,
                mode=WriteMode.RESPONSE,
                started_at=started_at,
                duration_s=duration_s,
                details=details,
                request_id=request_id,
            )
            run.record(failure)
            raise
        data = processed.data if processed.data is not None else content
        details |= processed.decoded.audit_details
        if processed.identity is not None:
            details["identity"] = processed.identity.as_dict()
        result = results.answered(
            request_id,
            mode=WriteMode.RESPONSE,
            started_at=started_at,
            duration_s=time.perf_counter() - t0,
            faces=processed.faces,
            faces_anonymized=processed.faces_anonymized,
            output_sha256=hashlib.sha256(data).hexdigest(),
            image_format=processed.decoded.image_format.value,
            resolution_wh=processed.decoded.resolution_wh,
            details=details,
        )
        run.record(result)
        return AnonymizedContent(data=data, result=result)

    def _run_for_content(self) -> AuditedRun:
        if self._content_run is None:
            self._content_run = AuditedRun.begin(
                self.store,
                command="library",
                mode=WriteMode.RESPONSE,
                models=self.models,
                settings=audited_settings(self.settings, identity=self.selection),
            )
        return self._content_run

    def close(self) -> None:
        """Finishes the session's run of in-memory images and closes the audit database."""
        try:
            if self._content_run is not None:
                self._content_run.finish()
        finally:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
