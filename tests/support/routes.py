"""The predictor app's route table, assembled in this process exactly as `chatterbox_predictor.__main__`
assembles it (our `install`, then KServe's own `RESTServer.create_application`), without a model.

Tests walk it to send every route a request; nothing here serves traffic.
"""

from __future__ import annotations

import functools
import sys
from unittest import mock

# What must answer without a key: the liveness and readiness probes the issue lists, the API's
# documentation, and the playground's static page (which asks for the key itself). Written out here, not
# imported from `auth`, so that a route wrongly opened there fails.
OPEN = frozenset({
    ("GET", "/health"),
    ("GET", "/"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{model_name}/ready"),
    ("GET", "/v2/models/{model_name}/versions/{model_version}/ready"),
    ("GET", "/v1/models/{model_name}"),
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
    ("GET", "/playground"),
    ("GET", "/playground/config"),
    ("GET", "/playground/{name}"),
})


@functools.cache
def route_table() -> frozenset[tuple[str, str]]:
    """(method, path template) of every HTTP route, and ("WEBSOCKET", path) of every WebSocket."""
    # kserve.model_server parses sys.argv when imported: give it a clean one, not pytest's.
    with mock.patch.object(sys, "argv", ["chatterbox-predictor"]):
        from kserve import model_server
    from fastapi.routing import iter_route_contexts
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    from chatterbox_predictor.api.app import install
    from chatterbox_predictor.api.auth import ApiKeys

    app = model_server.app
    install(app, service=None, keys=ApiKeys("key", None))  # the routes need no service to be listed
    repository = ModelRepository()
    RESTServer("kserve.model_server:app", DataPlane(repository), ModelRepositoryExtension(repository),
               http_port=0).create_application()
    table = set()
    for route in iter_route_contexts(app.router.routes):
        for method in route.methods or ("WEBSOCKET",):
            table.add((method, route.path))
    return frozenset(table)
