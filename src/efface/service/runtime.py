"""The service layer between the routes and the pipeline: one ``Service`` per server process.

It owns the audit store and the process's audited run (``AuditedRun``, command ``serve``), the API keys, the one
copy of the models (loaded once, whatever options requests ask for; each request gets a cheap ``Policy`` of its
own), the bounded inference pool and the limits. Each request goes through ``Service.call``: authenticated,
rate-limited and admitted before its upload is read, processed by ``anonymize_bytes`` on a worker thread
(never on the event loop), and recorded as one audit row, success or failure, before its answer is sent.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import ParamSpec, TypeVar

from starlette.requests import Request

from efface.audit import AuditStore
from efface.audit.keys import ApiKey, ApiKeyStore
from efface.config import Settings
from efface.detection.models import DetectionModels
from efface.detection.static import StaticDetector, StaticModels
from efface.errors import EffaceError
from efface.media.images import ImageFormat
from efface.pipeline import results
from efface.pipeline.build import audited_settings, build_policy, inference_threads_for
from efface.pipeline.core import Policy, anonymize_bytes
from efface.pipeline.run import AuditedRun
from efface.recognition.matching import MatchMode
from efface.recognition.selection import IdentityCounts, Selection, load_person
from efface.records import AnonymizationResult, Face, Uncertainty, WriteMode
from efface.service.admission import Gate, RateLimiter
from efface.service.errors import (
    InvalidApiKeyError,
    ProcessingTimeoutError,
    RateLimitExceededError,
    ServerBusyError,
    UploadTooLargeError,
)
from efface.service.limits import ServiceLimits
from efface.service.metrics import ServiceMetrics
from efface.service.options import OptionKey
from efface.service.uploads import Upload, parse_multipart, read_body

References = tuple[MatchMode, tuple[tuple[str, bytes], ...]]
"""Selective anonymization asked for by a request: the mode and one photo per person, as uploaded (in memory)."""

__all__ = ["Call", "Endpoint", "JobResult", "ModelLoader", "Service"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Loads the process's models with the settings and a thread count (``load_models``; a fake in tests).
ModelLoader = Callable[[Settings, int], DetectionModels]

MEDIA_TYPES = {
    ImageFormat.JPEG: "image/jpeg",
    ImageFormat.PNG: "image/png",
    ImageFormat.WEBP: "image/webp",
    ImageFormat.TIFF: "image/tiff",
    ImageFormat.BMP: "image/bmp",
}
# Audit writes and key look-ups: a few threads, apart from inference, so a busy model never delays them.
_DATABASE_THREADS = 2
_READY_TIMEOUT_S = 5.0


class Endpoint(StrEnum):
    """The audited endpoints."""

    ANONYMIZE = "/v1/anonymize"
    DETECT = "/v1/detect"


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a worker thread hands back: counts, boxes and the encoded answer, never the decoded pixels.

    Attributes:
        faces: the faces detected.
        faces_anonymized: face regions changed.
        image_format: the upload's format.
        resolution_wh: the upright image's size.
        image_base64: the answer's image (anonymize only).
        output_sha256: sha256 of the answer's image (anonymize only), for the audit log.
        queue_s: time spent waiting for a worker.
        processing_s: time spent in the pipeline.
        media_details: what the answer's image leaves out of the upload and why (``DecodedImage.audit_details``).
        faint: the candidates below the operating threshold, not anonymized (none when the client gave the boxes).
        boxes_given: the client gave the boxes to anonymize (no detection ran).
        identity: under selective anonymization (reference photos uploaded with the request), how the faces were
            decided, and the selection's audited settings (counts and hashes, never an embedding).
    """

    faces: tuple[Face, ...]
    faces_anonymized: int
    image_format: ImageFormat
    resolution_wh: tuple[int, int]
    image_base64: str | None = field(repr=False)
    output_sha256: str | None
    queue_s: float
    processing_s: float
    media_details: dict[str, object] = field(default_factory=dict)
    faint: tuple[Face, ...] = ()
    boxes_given: bool = False
    identity: IdentityCounts | None = None
    identity_settings: dict[str, object] | None = None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.image_format]


@dataclass(slots=True)
class Call:
    """One audited request, filled in as it goes.

    Attributes:
        request_id: uuid4 hex, also sent as ``X-Request-Id``.
        endpoint: what was asked.
        client: the client's address.
        started_at: UTC time the request was taken up.
        t0: ``time.perf_counter()`` then.
        key: the API key, once authenticated.
        upload_bytes: the image's size, once read.
        filename: the file name the client gave, once read.
        options: the settings the request changed, and its own options (``return_boxes``).
        result: the result, on success.
        error: what went wrong, on failure.
    """

    request_id: str
    endpoint: Endpoint
    client: str | None
    started_at: datetime
    t0: float
    key: ApiKey | None = None
    upload_bytes: int | None = None
    filename: str | None = None
    options: dict[str, object] = field(default_factory=dict)
    result: JobResult | None = None
    error: BaseException | None = None
    _job: Future[JobResult] | None = None


def _upload_name(filename: str | None) -> Path:
    """A name for messages and the format guess: the client's suffix only, never its path."""
    suffix = PurePosixPath(filename).suffix.lower() if filename else ""
    return Path(f"upload{suffix}" if suffix[1:].isalnum() and len(suffix) <= 6 else "upload")


class Service:
    """Everything one server process holds. Building it blocks (database, model); so does ``close``.

    Args:
        settings: the server's settings; requests may change method, strength, threshold and preset.
        limits: the process's bounds.
        load: loads the models once, with the settings and an inference-thread count (``load_models``; a fake
            in tests).

    Raises:
        AuditError: the audit database cannot be opened or written.
        EffaceError: the server's own settings cannot work (e.g. a transform below the floor).
    """

    def __init__(self, settings: Settings, limits: ServiceLimits, *, load: ModelLoader) -> None:
        self.settings = settings
        self.limits = limits
        # Checked before anything is opened: a transform below the floor never starts a server.
        self.policy = build_policy(settings)
        self.store = AuditStore(settings.db_url)
        try:
            self.keys = ApiKeyStore(self.store)
            # Requests run on ``limits.workers`` threads at once, all on this one copy of the models.
            self.models = load(settings, inference_threads_for(limits.workers))
            self.run = AuditedRun.begin(
                self.store,
                command="serve",
                mode=WriteMode.RESPONSE,
                models=self.models,
                settings={**audited_settings(settings), "service": dataclasses.asdict(limits)},
            )
        except BaseException:
            self.store.close()
            raise
        self.gate = Gate(limits.max_in_flight)
        self.rate_limiter = RateLimiter()
        self.metrics = ServiceMetrics(in_flight=lambda: self.gate.in_flight, capacity=self.gate.capacity)
        self._inference = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="efface-inference")
        self._database = ThreadPoolExecutor(max_workers=_DATABASE_THREADS, thread_name_prefix="efface-audit")
        logger.info(
            "audit run %s started; %d workers, %d in flight at most",
            self.run.run_id,
            limits.workers,
            limits.max_in_flight,
        )

    def close(self) -> None:
        """Waits for the requests still processing, finishes the audit run and closes the database."""
        self._inference.shutdown(wait=True, cancel_futures=True)
        self._database.shutdown(wait=True)
        try:
            self.run.finish(is_clean_stop=True)
        finally:
            self.store.close()

    async def _in_database(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.wrap_future(self._database.submit(function, *args, **kwargs))

    async def is_ready(self) -> tuple[bool, bool]:
        """Whether the model is loaded and the audit database answers."""
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                await self._in_database(self.store.get_run, self.run.run_id)
        except (EffaceError, TimeoutError) as exc:
            logger.warning("audit database not reachable: %s", exc)
            return True, False
        return True, True

    @asynccontextmanager
    async def call(self, request: Request, endpoint: Endpoint, api_key: str | None) -> AsyncIterator[Call]:
        """One audited request: authenticated, rate-limited and admitted on entry; recorded on exit.

        Raises:
            InvalidApiKeyError, RateLimitExceededError, ServerBusyError: on entry.
            AuditError: on exit, when the request succeeded but cannot be audited (its answer is withheld).
        """
        call = Call(
            request_id=request.state.request_id,
            endpoint=endpoint,
            client=request.client.host if request.client else None,
            started_at=datetime.now(UTC),
            t0=time.perf_counter(),
        )
        is_admitted = False
        try:
            await self._authenticate(call, api_key)
            if not self.gate.try_enter():
                raise ServerBusyError(
                    f"all {self.gate.capacity} places are taken; retry later", retry_after_s=self.limits.retry_after_s
                )
            is_admitted = True
            yield call
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            if is_admitted:
                self._leave_when_done(call)
            await self._record(call)

    async def _authenticate(self, call: Call, api_key: str | None) -> None:
        if not api_key:
            raise InvalidApiKeyError("no API key: send the header 'Authorization: Bearer <key>'")
        key = await self._in_database(self.keys.authenticate, api_key)
        if key is None:
            raise InvalidApiKeyError("invalid API key")
        call.key = key
        if key.is_revoked:
            raise InvalidApiKeyError("this API key has been revoked")
        limit = key.rate_limit_per_min or self.limits.rate_limit_per_min
        wait_s = self.rate_limiter.acquire(key.key_id, limit_per_min=limit)
        if wait_s is not None:
            retry_s = RateLimiter.retry_after_header(wait_s)
            raise RateLimitExceededError(f"rate limit of {limit} requests per minute reached", retry_after_s=retry_s)

    def _leave_when_done(self, call: Call) -> None:
        # A thread cannot be stopped: a request that stopped waiting keeps its place until its thread is done,
        # so a burst of timeouts cannot pile up work beyond the gate.
        if call._job is None:
            self.gate.leave()
        else:
            call._job.add_done_callback(lambda _: self.gate.leave())

    async def receive(self, call: Call, request: Request) -> Upload:
        """Reads and parses the upload, in memory only.

        Raises:
            UploadTooLargeError, UploadTimeoutError, MalformedRequestError: see ``read_body`` and
                ``parse_multipart``.
        """
        body = await read_body(
            request, max_image_bytes=self.limits.max_upload_bytes, timeout_s=self.limits.upload_timeout_s
        )
        upload = parse_multipart(body, request.headers.get("content-type"))
        del body
        call.upload_bytes = len(upload.content)
        call.filename = upload.filename
        self.metrics.upload_bytes.observe(len(upload.content))
        size, limit = len(upload.content), self.limits.max_upload_bytes
        if size > limit:
            raise UploadTooLargeError(f"the image of {size:,} bytes is over the limit of {limit:,} bytes")
        return upload

    async def process(
        self,
        call: Call,
        upload: Upload,
        options: OptionKey,
        *,
        write: bool,
        boxes: tuple[Face, ...] | None = None,
        references: References | None = None,
    ) -> JobResult:
        """Runs ``anonymize_bytes`` on a worker thread with the models and the policy of ``options``.

        Args:
            call: the request.
            upload: the image.
            options: the settings the request changes (see ``resolve_options``).
            write: anonymize and encode the image; False to detect only.
            boxes: the faces to anonymize, as a person reviewed them (no detection runs); None: detect them.
            references: selective anonymization: the mode and each person's photo, from the upload (in memory).

        Raises:
            ProcessingTimeoutError: no answer within the request timeout (waiting included).
            InputError: the upload is not an image efface can anonymize, or a reference photo cannot be used.
            WeakTransformError, ConfigurationError: the options cannot work.
        """
        call.options = {**dict(options), **call.options}
        job = self._inference.submit(
            self._process,
            upload.content,
            _upload_name(upload.filename),
            options,
            write,
            time.perf_counter(),
            boxes,
            references,
        )
        call._job = job
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                processed = await asyncio.wrap_future(job)
        except TimeoutError as exc:
            job.cancel()  # still queued: never runs; already running: finishes and is dropped
            raise ProcessingTimeoutError(
                f"no answer within {self.limits.request_timeout_s:g} s; retry later",
                retry_after_s=self.limits.retry_after_s,
            ) from exc
        call.result = processed
        return processed

    def policy_for(self, options: OptionKey) -> Policy:
        """The policy of a request's options: the server's own, or one built for them (cheap: no model is loaded).

        Raises:
            WeakTransformError: the options ask for a transform below the floor.
            ConfigurationError: another option cannot work.
        """
        if not options:
            return self.policy
        return build_policy(self.settings.model_copy(update=dict(options)))

    def _process(
        self,
        content: bytes,
        name: Path,
        options: OptionKey,
        write: bool,
        submitted_s: float,
        boxes: tuple[Face, ...] | None,
        references: References | None,
    ) -> JobResult:
        started_s = time.perf_counter()
        policy = self.policy_for(options)
        selection = None
        if references is not None:
            mode, photos = references
            detector = self.models.detector(policy.detection)
            people = tuple(load_person([photo], detector=detector, codec=policy.codec) for photo in photos)
            selection = Selection(mode, people)
            policy = dataclasses.replace(policy, identity=selection)
        # Boxes a person reviewed are anonymized as given, with the same policy (the same strength floor).
        models = self.models if boxes is None else StaticModels(StaticDetector(boxes, name=self.models.name))
        processed = anonymize_bytes(content, name=name, models=models, policy=policy, write=write)
        image_base64 = output_sha256 = None
        if write:
            image = processed.data if processed.data is not None else content
            image_base64 = base64.b64encode(image).decode("ascii")
            output_sha256 = hashlib.sha256(image).hexdigest()
        done_s = time.perf_counter()
        self.metrics.queue_wait.observe(started_s - submitted_s)
        self.metrics.processing.observe(done_s - started_s)
        return JobResult(
            faces=processed.faces,
            faces_anonymized=processed.faces_anonymized,
            image_format=processed.decoded.image_format,
            resolution_wh=processed.decoded.resolution_wh,
            image_base64=image_base64,
            output_sha256=output_sha256,
            queue_s=started_s - submitted_s,
            processing_s=done_s - started_s,
            media_details=processed.decoded.audit_details,
            faint=processed.faint,
            boxes_given=boxes is not None,
            identity=processed.identity,
            identity_settings=selection.audited() if selection is not None else None,
        )

    async def _record(self, call: Call) -> None:
        latency_s = time.perf_counter() - call.t0
        result = self._result(call, latency_s=latency_s)
        self.metrics.faces.inc(result.faces_detected)
        if call.error is not None:
            self.metrics.rejected.labels(type=type(call.error).__name__).inc()
        try:
            await self._in_database(self.run.record, result)
        except (EffaceError, RuntimeError) as exc:  # RuntimeError: the pool is shut down
            logger.error("request %s could not be audited: %s", call.request_id, exc)
            if call.error is None:
                raise

    def _result(self, call: Call, *, latency_s: float) -> AnonymizationResult:
        """The request as one audit row: everything about it but the image."""
        processed = call.result
        details: dict[str, object] = {
            "endpoint": call.endpoint.value,
            "key_id": call.key.key_id if call.key else None,
            "client": call.client,
            "filename": call.filename,
            "upload_bytes": call.upload_bytes,
            "options": call.options,
            "latency_s": round(latency_s, 6),
            "output": "response" if call.endpoint is Endpoint.ANONYMIZE else None,
        }
        if processed is not None:
            details |= {"queue_s": round(processed.queue_s, 6), "processing_s": round(processed.processing_s, 6)}
            details |= processed.media_details
            if processed.boxes_given:  # reviewed by a person on the upload page: no detection ran
                details["boxes_given_by_client"] = len(processed.faces)
            if processed.identity is not None:
                details["identity"] = processed.identity.as_dict()
                details["identity_settings"] = processed.identity_settings
        mode = WriteMode.RESPONSE if call.endpoint is Endpoint.ANONYMIZE else WriteMode.DRY_RUN
        if call.error is not None or processed is None:
            error = call.error or RuntimeError("the request ended without a result")
            return results.failed(
                None,
                error,
                mode=mode,
                started_at=call.started_at,
                duration_s=latency_s,
                details=details,
                request_id=call.request_id,
            )
        return results.answered(
            call.request_id,
            mode=mode,
            started_at=call.started_at,
            duration_s=latency_s,
            faces=processed.faces,
            faces_anonymized=processed.faces_anonymized,
            output_sha256=processed.output_sha256,
            image_format=processed.image_format.value,
            resolution_wh=processed.resolution_wh,
            details=details,
            uncertainty=None if processed.boxes_given else Uncertainty.of_faces(processed.faint),
        )
