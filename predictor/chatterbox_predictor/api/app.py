"""Wiring: our routes, errors, authentication, request ids and OpenAPI document on KServe's FastAPI app.

`install` adds everything to the app KServe's model server serves (`kserve.model_server.app`), beside
KServe's own V1/V2, health and metrics routes, which KServe registers later, when it starts serving:
the authentication middleware and the OpenAPI document cover those too, because both look at the
app's route table when a request (or the document) is asked for, not when `install` runs.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from ..errors import EngineError
from .auth import ApiKeys, AuthMiddleware, open_routes
from .errors import error_response
from .observability import RequestIdMiddleware
from .openai import openai_router
from .playground import PlaygroundRedirect, playground_router
from .protocol import (
    DEFAULT_MAX_TEXT_CHARS,
    DEFAULT_MAX_TUNE_STEPS,
    GenerateRequest,
    SpeechRequest,
    with_text_limit,
)
from .routes import rest_router
from .service import TTSService
from .spec import finish_openapi
from .websocket import websocket_handler

log = logging.getLogger(__name__)


def install(app: FastAPI, service: TTSService, keys: ApiKeys, *, open_metrics: bool = False,
            max_text_chars: int | None = None, max_tune_steps: int | None = None) -> None:
    """Adds the API to `app`. `max_text_chars` and `max_tune_steps` (None: the protocol's defaults) go
    into the schema."""

    async def engine_error(request, exc: EngineError):
        return error_response(exc)

    if not keys.enabled:
        log.warning("no API key configured (CHATTERBOX_API_KEYS / CHATTERBOX_API_KEYS_FILE): "
                    "the API is open to anyone who can reach it")
    routes = open_routes(open_metrics)
    app.add_exception_handler(EngineError, engine_error)
    app.add_middleware(AuthMiddleware, keys=keys, routes=routes, router_app=app)
    app.add_middleware(PlaygroundRedirect)
    # Added after the auth middleware, so it wraps it: a 401 carries a request id too.
    app.add_middleware(RequestIdMiddleware)
    generate, speech = GenerateRequest, SpeechRequest
    if max_text_chars is not None:
        generate = with_text_limit(GenerateRequest, "text", max_text_chars)
        speech = with_text_limit(SpeechRequest, "input", max_text_chars)
    app.include_router(rest_router(service, generate, DEFAULT_MAX_TUNE_STEPS if max_tune_steps is None
                                   else max_tune_steps))
    app.include_router(openai_router(service, speech))
    app.include_router(playground_router(service, keys.enabled))
    limit = max_text_chars if max_text_chars is not None else DEFAULT_MAX_TEXT_CHARS
    app.add_api_websocket_route("/tts/stream", websocket_handler(service, limit))
    app.openapi = lambda: finish_openapi(app, routes)
