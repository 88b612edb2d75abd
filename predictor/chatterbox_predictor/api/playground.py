"""The playground: a page to try voices, served from the package's `playground/` folder.

The page is static (HTML, CSS, JavaScript modules; nothing fetched from elsewhere) and holds no data: it
answers without a key, like the API's documentation, and asks the user for one before it calls the API
(`auth.PLAYGROUND`). What it needs to know about this server that the OpenAPI document does not say
(the variant and its options, languages, whether a key is needed) comes from `/playground/config`.

`/` stays KServe's liveness probe for programs; a browser asking for HTML there is sent on to
`/playground` (`PlaygroundRedirect`).
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from .service import TTSService

# The files the page is made of, and what each is served as: an allow-list, so no request names a path.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "audio.js": "text/javascript; charset=utf-8",
    "player-worklet.js": "text/javascript; charset=utf-8",
}
# Everything comes from this server: scripts and styles from its files, API calls and the WebSocket to its
# own origin (CSP 3's 'self' covers ws: and wss: on the same host), the download link from a blob: URL.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


@cache
def _read(name: str) -> bytes:
    return resources.files("chatterbox_predictor").joinpath("playground", name).read_bytes()


class PlaygroundConfig(BaseModel):
    """What the page shows for this server; the options' ranges come from the OpenAPI document."""

    variant: str = Field(..., description="turbo, english or multilingual.")
    sample_rate: int
    auth: bool = Field(..., description="Whether the API wants a key.")
    options: list[str] = Field(..., description="The generation options this variant uses, in the order "
                               "the page shows them.")
    defaults: dict[str, float | int] = Field(..., description="The variant's value for each option left out.")
    languages: dict[str, str] | None = Field(..., description="Language id -> name, where every request "
                                             "names one (multilingual); null elsewhere.")


def _languages(variant) -> dict[str, str] | None:
    if not variant.needs_language:
        return None
    module = importlib.import_module(variant.class_path.partition(":")[0])
    return dict(module.SUPPORTED_LANGUAGES)


def playground_router(service: TTSService, auth_enabled: bool) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def page() -> Response:
        return Response(_read("index.html"), media_type=FILES["index.html"], headers=HEADERS)

    router.add_api_route("/playground", page, methods=["GET"])

    @router.get("/playground/config")
    async def config() -> PlaygroundConfig:
        variant = service.engine.variant
        # Turbo's T3 takes neither guidance nor exaggeration (the library ignores both there).
        options = (["temperature", "exaggeration", "cfg_weight"] if variant.guided else ["temperature"])
        options += ["seed", "speed"]
        defaults = {name: getattr(variant.sampling_defaults, name) for name in options
                    if hasattr(variant.sampling_defaults, name)}
        return PlaygroundConfig(variant=variant.name, sample_rate=service.sample_rate, auth=auth_enabled,
                                options=options, defaults={**defaults, "speed": 1.0},
                                languages=_languages(variant))

    @router.get("/playground/{name}")
    async def asset(name: str = Path(..., max_length=40)) -> Response:
        if name not in FILES or name == "index.html":
            raise HTTPException(404, f"no playground file {name!r}")
        return Response(_read(name), media_type=FILES[name], headers=HEADERS)

    return router


class PlaygroundRedirect:
    """A browser asking `/` for HTML goes to the playground (307); anything else (probes send `*/*` or
    nothing) reaches KServe's liveness route unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"] == "/":
            accept = dict(scope.get("headers") or []).get(b"accept", b"")
            if b"text/html" in accept:
                # Relative, so that it holds behind a path prefix (an ingress serving us under /tts/).
                await send({"type": "http.response.start", "status": 307,
                            "headers": [(b"location", b"playground"), (b"content-length", b"0")]})
                return await send({"type": "http.response.body", "body": b""})
        await self.app(scope, receive, send)
