"""Authentication: one rule for the whole app, applied in one place (an ASGI middleware).

Every HTTP route and WebSocket wants an API key (`X-API-Key: K` or `Authorization: Bearer K`), except
the routes in `open_routes()`: liveness and readiness probes, which the kubelet and load balancers call
without a key, the API's own documentation and the playground's static page. `/metrics` is open only
with `--open_metrics`. A browser cannot set a WebSocket's headers, so a WebSocket may carry the key in
the query (`?api_key=K`) or, keeping it out of every URL (what the playground does), as a subprotocol
`chatterbox.key.<K in unpadded base64url>` offered beside `chatterbox.tts`, the one the server accepts
(Kubernetes' API server takes bearer tokens from browsers the same way).

The middleware matches a request against the app's route table and looks the matched route's path
template up in `open_routes()`, so a route added later (ours or KServe's, whenever it is registered)
wants the key unless it is listed here, and a request that matches no route wants it too.
With no key configured at all (neither keys nor a key file) the API is open, and the server says so at
start-up. A configured key file that is missing or empty opens nothing: every request is refused until
the file holds a key (a Secret not mounted yet must not turn into an open API).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from chatterbox_common import read_key_file
from fastapi.routing import iter_route_contexts
from starlette.routing import Match

from ..errors import Unauthorized
from .errors import error_response

log = logging.getLogger(__name__)

# (method, path template) pairs that answer without a key; method None: every method.
PROBES = frozenset({
    (None, "/health"),                                                  # the container's HEALTHCHECK
    ("GET", "/"),                                                       # KServe's root liveness
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{model_name}/ready"),
    ("GET", "/v2/models/{model_name}/versions/{model_version}/ready"),
    ("GET", "/v1/models/{model_name}"),                                 # KServe V1 readiness
})
# The documentation describes the public API and nothing of the data behind it; Swagger UI loads it
# before the user can type a key into its "Authorize" dialog.
DOCS = frozenset({(None, "/docs"), (None, "/docs/oauth2-redirect"), (None, "/openapi.json")})
# The playground's page, files and configuration: static, no data; the page asks for the key itself.
PLAYGROUND = frozenset({("GET", "/playground"), ("GET", "/playground/config"),
                        ("GET", "/playground/{name}")})
METRICS = ("GET", "/metrics")
SUBPROTOCOL = "chatterbox.tts"
KEY_SUBPROTOCOL = "chatterbox.key."

UNAUTHORIZED_DETAIL = "missing or invalid API key (send X-API-Key or Authorization: Bearer)"


def open_routes(open_metrics: bool) -> frozenset:
    return PROBES | DOCS | PLAYGROUND | ({METRICS} if open_metrics else frozenset())


def is_open(method: str, path: str, routes: frozenset) -> bool:
    return (method, path) in routes or (None, path) in routes


class ApiKeys:
    """Keys from a setting and from a file (a mounted Secret, re-read when it changes)."""

    def __init__(self, keys: str, keys_file: Path | None):
        self._static = [k.strip() for k in keys.split(",") if k.strip()]
        self._file = keys_file
        self._file_stamp = None
        self._file_keys: list[str] = []
        self._lock = threading.Lock()

    def keys(self) -> list[str]:
        if self._file is not None:
            try:
                stat = self._file.stat()
                stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except FileNotFoundError:
                stamp = None
            with self._lock:
                if stamp != self._file_stamp:
                    try:
                        self._file_keys = read_key_file(self._file) if stamp else []
                    except OSError:  # unreadable (a Secret being swapped): no key works until it reads
                        self._file_keys = []
                    self._file_stamp = stamp
                    if not self._file_keys and not self._static:  # said once per change, not per request
                        log.warning("the API key file %s is missing or holds no key: refusing every "
                                    "request", self._file)
        return self._static + self._file_keys

    @property
    def enabled(self) -> bool:
        """Whether keys are configured at all (a key file counts, even while it is missing or empty)."""
        return bool(self._static) or self._file is not None

    def check(self, presented: str | None) -> bool:
        if not self.enabled:
            return True
        keys = self.keys()
        if not keys or not presented:
            return False
        given = presented.encode()
        # Compare with every key, without stopping early, in constant time per key.
        return any([hmac.compare_digest(given, key.encode()) for key in keys])


def presented_key(scope) -> str | None:
    """The key of a request: X-API-Key, else a bearer token, else (a WebSocket only) a key subprotocol or
    `?api_key=`, which are then taken out of the scope so that nothing later (access logs, the accepted
    subprotocol) shows the key."""
    headers = dict(scope.get("headers") or [])
    if key := headers.get(b"x-api-key"):
        return key.decode("latin-1")
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if scope["type"] == "websocket":
        offered = scope.get("subprotocols") or []
        carried = [p for p in offered if p.startswith(KEY_SUBPROTOCOL)]
        if carried:
            scope["subprotocols"] = [p for p in offered if not p.startswith(KEY_SUBPROTOCOL)]
            encoded = carried[0][len(KEY_SUBPROTOCOL):]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None  # not a key this server could have issued: refused like a wrong one
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        keys = [v for k, v in query if k == "api_key"]
        scope["query_string"] = urlencode([(k, v) for k, v in query if k != "api_key"]).encode("latin-1")
        return keys[0] if keys else None
    return None


class AuthMiddleware:
    """Refuses a request without a valid key (401 JSON with `WWW-Authenticate`; a WebSocket is closed
    with 1008 before the handshake completes, which clients see as HTTP 403) unless its route is open."""

    def __init__(self, app, *, keys: ApiKeys, routes: frozenset, router_app):
        self.app = app
        self.keys = keys
        self.routes = routes
        self.router_app = router_app  # the FastAPI app whose route table decides what a request is

    def _route_template(self, scope) -> str | None:
        """The path template of the route that will serve `scope` (FastAPI keeps included routers as
        groups: `iter_route_contexts` is how FastAPI itself flattens them for the OpenAPI document)."""
        for route in iter_route_contexts(self.router_app.router.routes):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        websocket = scope["type"] == "websocket"
        method = "GET" if websocket else scope["method"]
        template = self._route_template(scope)
        if template is not None and is_open(method, template, self.routes):
            return await self.app(scope, receive, send)
        if self.keys.check(presented_key(scope)):
            return await self.app(scope, receive, send)
        if websocket:
            return await send({"type": "websocket.close", "code": 1008,
                               "reason": "missing or invalid API key"})
        await error_response(Unauthorized(UNAUTHORIZED_DETAIL))(scope, receive, send)
