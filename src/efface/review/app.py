"""The review page's HTTP edge: a FastAPI app over a ``ReviewSession``, for a browser on this machine.

Every request needs the session's one-time token (``?token=`` on the link the command prints, then a cookie the
page keeps, or an ``X-Efface-Token`` header), compared in constant time; without it the answer is 403. Requests
must name a host the server is bound to (a page elsewhere cannot reach it by DNS rebinding). Pictures are sent
encoded in memory with ``Cache-Control: no-store``, so the browser keeps no copy of an original on disk.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from efface.errors import AuditError
from efface.review.session import BoxOrigin, ReviewBox, ReviewFile, ReviewSession

__all__ = ["TOKEN_COOKIE", "box_editor_script", "create_review_app"]

TOKEN_COOKIE = "efface_review_token"
_T = TypeVar("_T")
_TOKEN_HEADER = "x-efface-token"


def box_editor_script() -> str:
    """The pages' box editor (``boxes.js``, a JavaScript module)."""
    return resources.files("efface.review").joinpath("boxes.js").read_text(encoding="utf-8")


class BoxIn(BaseModel):
    """A box as the page sends it."""

    box_id: str = Field(min_length=1, max_length=64)
    xyxy: list[float] = Field(min_length=4, max_length=4)
    origin: BoxOrigin
    is_applied: bool
    score: float | None = None

    def record(self) -> ReviewBox:
        x1, y1, x2, y2 = self.xyxy
        return ReviewBox(self.box_id, (x1, y1, x2, y2), self.origin, self.is_applied, self.score)


class BoxesIn(BaseModel):
    """The boxes of a preview."""

    boxes: list[BoxIn] = Field(max_length=10_000)


class FileUpdate(BoxesIn):
    """A file's boxes and whether it is accepted."""

    is_accepted: bool = False


class ManualTrack(BaseModel):
    """A face added by hand to a video: its box on one or more frames."""

    track_id: str = Field(min_length=2, max_length=64)
    keyframes: list[tuple[int, list[float]]] = Field(max_length=100_000)


class TracksUpdate(BaseModel):
    """A video's tracks: the tracker's applied or not, the ones added by hand, and whether it is accepted."""

    applied: dict[str, bool] = Field(default_factory=dict)
    manual: list[ManualTrack] = Field(default_factory=list, max_length=1_000)
    is_accepted: bool = False


FileId = Annotated[int, Path(ge=0)]
FrameIndex = Annotated[int, Path(ge=0)]


def create_review_app(session: ReviewSession, *, token: str, hosts: frozenset[str]) -> FastAPI:
    """The review page and its API.

    Args:
        session: the review.
        token: the one-time token every request must present.
        hosts: the host names requests may name (the address the server is bound to, ``localhost`` for loopback).
    """
    app = FastAPI(title="efface review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in hosts:
            return JSONResponse({"error": f"this page is served for {', '.join(sorted(hosts))} only"}, status_code=403)
        given = request.query_params.get("token")
        presented = given or request.headers.get(_TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE) or ""
        if not hmac.compare_digest(presented.encode(), token.encode()):
            return JSONResponse(
                {"error": "open the link efface review printed: it holds the page's token"}, status_code=403
            )
        response = await call_next(request)
        if given:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
        )
        return response

    def found(file_id: int) -> ReviewFile:
        try:
            return session.get(file_id)
        except KeyError:
            raise HTTPException(404, f"no file {file_id}") from None

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("efface.review").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/static/boxes.js")
    def boxes_script() -> Response:
        return Response(box_editor_script(), media_type="text/javascript")

    @app.get("/api/files")
    def files() -> dict[str, Any]:
        return {
            "reviewer": session.reviewer,
            "detecting": session.detecting,
            "files": [review.as_dict() for review in session.listed()],
            "refused": session.refused,
        }

    @app.get("/api/files/{file_id}")
    def one(file_id: FileId) -> dict[str, Any]:
        return found(file_id).as_dict()

    def picture(file_id: int) -> ReviewFile:
        review = found(file_id)
        if review.is_video:
            raise HTTPException(409, f"{review.path.name} is a video: its frames are /api/files/{file_id}/frames/N")
        return review

    @app.get("/api/files/{file_id}/original")
    def original(file_id: FileId) -> Response:
        picture(file_id)
        return Response(session.original(file_id), media_type="image/jpeg")

    @app.post("/api/files/{file_id}/preview")
    def preview(file_id: FileId, body: BoxesIn) -> Response:
        picture(file_id)
        return Response(session.preview(file_id, [box.record() for box in body.boxes]), media_type="image/jpeg")

    @app.put("/api/files/{file_id}")
    def update(file_id: FileId, body: FileUpdate) -> dict[str, Any]:
        picture(file_id)
        try:
            review = session.update(file_id, [box.record() for box in body.boxes], is_accepted=body.is_accepted)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        except AuditError as exc:
            raise HTTPException(503, f"the review cannot be saved: {exc.message}") from exc
        return review.as_dict()

    def of_frame(file_id: int, index: int, make: Callable[[int, int], _T]) -> _T:
        """What ``make`` gives for a video's frame; no such frame is a 404, a file that is no video ready a 409."""
        found(file_id)
        try:
            return make(file_id, index)
        except IndexError:
            raise HTTPException(404, f"no frame {index}") from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/api/files/{file_id}/frames/{index}")
    def frame(file_id: FileId, index: FrameIndex) -> Response:
        return Response(of_frame(file_id, index, session.frame), media_type="image/jpeg")

    @app.get("/api/files/{file_id}/frames/{index}/boxes")
    def frame_boxes(file_id: FileId, index: FrameIndex) -> list[dict[str, Any]]:
        return of_frame(file_id, index, session.frame_boxes)

    @app.get("/api/files/{file_id}/frames/{index}/preview")
    def frame_preview(file_id: FileId, index: FrameIndex) -> Response:
        return Response(of_frame(file_id, index, session.frame_preview), media_type="image/jpeg")

    @app.put("/api/files/{file_id}/tracks")
    def update_tracks(file_id: FileId, body: TracksUpdate) -> dict[str, Any]:
        found(file_id)
        state = {"applied": body.applied, "manual": [track.model_dump() for track in body.manual]}
        try:
            review = session.update_video(file_id, state, is_accepted=body.is_accepted)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        except AuditError as exc:
            raise HTTPException(503, f"the review cannot be saved: {exc.message}") from exc
        return review.as_dict()

    @app.post("/api/apply")
    def apply() -> dict[str, Any]:
        try:
            done = session.apply()
        except AuditError as exc:
            raise HTTPException(503, f"the audit log failed, nothing more was replaced: {exc.message}") from exc
        return {
            "applied": [
                {"path": str(result.path), "outcome": result.outcome.value, "error": result.error_message}
                for result in done
            ]
        }

    return app
