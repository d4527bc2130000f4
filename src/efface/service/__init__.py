"""The HTTP service: ``create_app(settings)`` gives the FastAPI application that ``efface serve`` runs on uvicorn.

Layers: ``app`` (routes, error answers) → ``runtime`` (``Service``: auth, admission, audit, the worker pool) →
``pipeline.core.anonymize_bytes``, the one path every entry point takes.
"""

from efface.service.app import create_app
from efface.service.limits import ServiceLimits

__all__ = ["ServiceLimits", "create_app"]
