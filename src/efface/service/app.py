"""``create_app(settings)``: the FastAPI application, its routes and the one place errors become answers."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from importlib import resources
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from efface import __version__
from efface.config import Settings
from efface.detection.models import DetectionModels
from efface.errors import EffaceError
from efface.pipeline.build import load_models
from efface.recognition.matching import MatchMode
from efface.service.errors import InvalidOptionError, http_status, retry_after_s
from efface.service.limits import ServiceLimits
from efface.service.metrics import CONTENT_TYPE
from efface.service.options import resolve_options
from efface.service.runtime import Endpoint, JobResult, ModelLoader, References, Service
from efface.service.schemas import (
    ANONYMIZE_BODY,
    DETECT_BODY,
    ERROR_RESPONSES,
    AnonymizeOptions,
    AnonymizeResponse,
    DetectOptions,
    DetectResponse,
    EncodedImage,
    ErrorBody,
    ErrorResponse,
    FaceBox,
    HealthResponse,
    ReadyResponse,
)
from efface.service.uploads import KEEP_PERSON_FIELD, ONLY_PERSON_FIELD, Upload

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Face anonymization over HTTP. Upload an image as `multipart/form-data` (the image in the `file` part, options as
further fields); the answer is one JSON document with the face count, the boxes and the processed image as base64.

* Authenticate with `Authorization: Bearer <key>` (keys from `efface keys create`).
* Nothing is stored but one audit row per request: no pixel of an upload is written, cached or logged.
* Every error answer is `{"error": {"type", "message", "request_id"}}`; a bad upload is a 4xx, never a 500.
* `503` with `Retry-After` means the server is saturated: retry after that many seconds.
"""
_ROUTE_LABELS = frozenset({Endpoint.ANONYMIZE.value, Endpoint.DETECT.value, "/healthz", "/readyz", "/metrics"})

bearer = HTTPBearer(auto_error=False, description="An efface API key (`efface keys create`).")


def _service(request: Request) -> Service:
    service: Service = request.app.state.service  # set by the lifespan before any request is served
    return service


ServiceDep = Annotated[Service, Depends(_service)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def _api_key(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials else None


class _RequestIds:
    """Pure ASGI middleware: gives every request an id (``X-Request-Id``) and counts answers by status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = HTTPStatus.INTERNAL_SERVER_ERROR.value
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            service: Service | None = getattr(scope["app"].state, "service", None)
            if service is not None:
                label = scope["path"] if scope["path"] in _ROUTE_LABELS else "other"
                service.metrics.requests.labels(endpoint=label, status=str(status)).inc()
                service.metrics.latency.labels(endpoint=label).observe(time.perf_counter() - t0)


def _error_response(request: Request, *, status: int, error_type: str, message: str) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorBody(type=error_type, message=message, request_id=getattr(request.state, "request_id", None))
    )
    return JSONResponse(body.model_dump(), status_code=status)


async def _on_efface_error(request: Request, exc: EffaceError) -> JSONResponse:
    status = http_status(exc)
    response = _error_response(request, status=status, error_type=type(exc).__name__, message=exc.message)
    service: Service | None = getattr(request.app.state, "service", None)
    retry_s = retry_after_s(exc, default_s=service.limits.retry_after_s if service else 1)
    if retry_s is not None:
        response.headers["Retry-After"] = str(retry_s)
    return response


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    phrase = HTTPStatus(exc.status_code).phrase
    response = _error_response(
        request, status=exc.status_code, error_type=phrase.title().replace(" ", ""), message=str(exc.detail)
    )
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
    return _error_response(
        request, status=HTTPStatus.UNPROCESSABLE_ENTITY, error_type="InvalidOptionError", message=first["msg"]
    )


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("request %s failed", getattr(request.state, "request_id", None), exc_info=exc)
    return _error_response(
        request,
        status=HTTPStatus.INTERNAL_SERVER_ERROR,
        error_type="InternalError",
        message="the server failed on this request; it is logged under its request id",
    )


def _references(upload: Upload) -> References | None:
    """The selective anonymization a request asks for with its reference photos (None: every face anonymized).

    Raises:
        InvalidOptionError: photos given for both modes.
    """
    keep, only = upload.references.get(KEEP_PERSON_FIELD, []), upload.references.get(ONLY_PERSON_FIELD, [])
    if keep and only:
        raise InvalidOptionError(f"give {KEEP_PERSON_FIELD} or {ONLY_PERSON_FIELD} photos, not both")
    if not keep and not only:
        return None
    return (MatchMode.KEEP if keep else MatchMode.ONLY, tuple(keep or only))


def _boxes(result: JobResult) -> list[FaceBox]:
    return [FaceBox.of(face) for face in result.faces]


def _add_routes(app: FastAPI) -> None:
    @app.post(
        Endpoint.ANONYMIZE.value,
        summary="Anonymize every face in an image",
        description=(
            "Detects every face and anonymizes it with the server's settings or the options given, which are "
            "checked against the same strength floor as the command line (a weaker transform is a 422). The "
            "answer holds the processed image (its format, without metadata; byte for byte the upload when it "
            "has neither faces nor metadata) as base64, the face count and, unless return_boxes is false, the "
            "boxes in pixels of the upright image."
        ),
        response_model=AnonymizeResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=ANONYMIZE_BODY,
        tags=["images"],
    )
    async def anonymize(request: Request, service: ServiceDep, credentials: CredentialsDep) -> AnonymizeResponse:
        async with service.call(request, Endpoint.ANONYMIZE, _api_key(credentials)) as call:
            upload = await service.receive(call, request)
            options = AnonymizeOptions.from_fields(upload.fields)
            boxes = options.reviewed_boxes()
            call.options = {"return_boxes": options.return_boxes}
            if boxes is not None:  # reviewed by a person: no detection runs
                call.options["boxes_given"] = True
            references = _references(upload)
            if references is not None:
                if boxes is not None:
                    raise InvalidOptionError("reference photos choose among detected faces: not with 'boxes'")
                call.options["identity"] = references[0].value
            key = resolve_options(
                service.settings,
                method=options.method,
                strength=options.strength,
                threshold=options.threshold,
                preset=options.preset,
            )
            result = await service.process(call, upload, key, write=True, boxes=boxes, references=references)
        assert result.image_base64 is not None  # written: write=True
        width, height = result.resolution_wh
        return AnonymizeResponse(
            request_id=call.request_id,
            faces=len(result.faces),
            faces_anonymized=result.faces_anonymized,
            faces_kept=result.identity.kept if result.identity is not None else None,
            boxes=_boxes(result) if options.return_boxes else None,
            width=width,
            height=height,
            image=EncodedImage(media_type=result.media_type, data_base64=result.image_base64),
        )

    @app.post(
        Endpoint.DETECT.value,
        summary="Find the faces in an image",
        description="Detects every face; the image is neither changed nor returned.",
        response_model=DetectResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=DETECT_BODY,
        tags=["images"],
    )
    async def detect(request: Request, service: ServiceDep, credentials: CredentialsDep) -> DetectResponse:
        async with service.call(request, Endpoint.DETECT, _api_key(credentials)) as call:
            upload = await service.receive(call, request)
            options = DetectOptions.from_fields(upload.fields)
            if upload.references:
                raise InvalidOptionError("reference photos are for /v1/anonymize")
            key = resolve_options(service.settings, threshold=options.threshold, preset=options.preset)
            result = await service.process(call, upload, key, write=False)
        width, height = result.resolution_wh
        return DetectResponse(
            request_id=call.request_id,
            faces=len(result.faces),
            boxes=_boxes(result),
            faint=[FaceBox.of(face) for face in result.faint],
            width=width,
            height=height,
        )

    @app.get("/healthz", summary="The process answers", response_model=HealthResponse, tags=["operations"])
    async def healthz() -> HealthResponse:
        return HealthResponse(status="ok")

    @app.get(
        "/readyz",
        summary="The model is loaded and the audit database answers",
        response_model=ReadyResponse,
        responses={int(HTTPStatus.SERVICE_UNAVAILABLE): {"model": ReadyResponse, "description": "Not ready."}},
        tags=["operations"],
    )
    async def readyz(service: ServiceDep) -> JSONResponse:
        model_loaded, database_reachable = await service.is_ready()
        is_ready = model_loaded and database_reachable
        body = ReadyResponse(
            status="ready" if is_ready else "not ready",
            model_loaded=model_loaded,
            database_reachable=database_reachable,
        )
        status = HTTPStatus.OK if is_ready else HTTPStatus.SERVICE_UNAVAILABLE
        return JSONResponse(body.model_dump(), status_code=status)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Text format."}},
        tags=["operations"],
    )
    async def metrics(service: ServiceDep) -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)


def _load_models(settings: Settings, inference_threads: int) -> DetectionModels:
    return load_models(settings, inference_threads=inference_threads)


def create_app(
    settings: Settings,
    *,
    limits: ServiceLimits | None = None,
    load: ModelLoader | None = None,
    ui: bool = False,
) -> FastAPI:
    """The HTTP service. Starting it (the ASGI lifespan) opens the audit database, starts one audit run and
    loads the model; stopping it waits for the requests in flight and finishes the run.

    Args:
        settings: the server's settings; requests may change method, strength, threshold and preset.
        limits: the process's bounds (default: ``ServiceLimits`` with a worker thread per core). The
            stricter of ``settings.max_image_pixels`` and ``limits.max_image_pixels`` applies.
        load: loads the models once, with the settings and an inference-thread count (``load_models`` unless a
            test fakes the detector).
        ui: also serve the upload page at ``/ui`` (a person drops a picture, checks and adjusts the boxes,
            downloads the result; the page calls the API with the key typed into it).
    """
    limits = limits or ServiceLimits(workers=os.cpu_count() or 1)
    settings = settings.model_copy(update={"max_image_pixels": min(settings.max_image_pixels, limits.max_image_pixels)})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await asyncio.to_thread(Service, settings, limits, load=load or _load_models)
        app.state.service = service
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    app = FastAPI(title="efface", version=__version__, description=_DESCRIPTION, lifespan=lifespan)
    app.add_middleware(_RequestIds)
    # Starlette types every handler as taking Exception; it calls each only with the class it is registered for.
    app.add_exception_handler(EffaceError, _on_efface_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected_error)
    _add_routes(app)
    if ui:
        _add_ui(app)
    return app


_UI_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob:; style-src 'self' 'unsafe-inline'; script-src 'self' "
        "'unsafe-inline'; frame-ancestors 'none'"
    ),
}


def _add_ui(app: FastAPI) -> None:
    """The upload page: static, it holds no key and no picture; every call it makes is an audited API request."""
    from efface.review.app import box_editor_script  # the box editor the review page uses

    @app.get("/ui", include_in_schema=False)
    async def upload_page() -> Response:
        page = resources.files("efface.service").joinpath("ui.html").read_text(encoding="utf-8")
        return Response(page, media_type="text/html", headers=_UI_HEADERS)

    @app.get("/static/boxes.js", include_in_schema=False)
    async def boxes_script() -> Response:
        return Response(box_editor_script(), media_type="text/javascript", headers=_UI_HEADERS)
