"""The one table from our error types to HTTP: a response with the type's status and `{"detail"}`.

Routes reach it through the app's exception handler; the authentication middleware, which runs before
any route, calls it directly.
"""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from ..errors import EngineError, Unauthorized
from . import metrics

log = logging.getLogger(__name__)


def error_response(exc: EngineError) -> JSONResponse:
    """The one table from our error types to HTTP: the status is the type's, the body `{"detail"}`."""
    metrics.ERRORS.labels(type(exc).__name__).inc()
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status >= 500:
        log.error("%s: %s", type(exc).__name__, exc)
    else:
        log.info("refused with %d: %s", exc.status, exc)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)
