"""The OpenAPI document says what the server does: every status a route can answer, the links between
operations, and which operations want the API key.

Routes declare their own error statuses with `errors(...)`. `finish_openapi` then adds, for the whole
document, what no single route knows: the security schemes and, on every operation `auth` does not
leave open, the key requirement and its 401; and the statuses of KServe's own routes, which KServe's
document leaves out (its error bodies are `{"error": ...}` rather than `{"detail": ...}`).
"""

from __future__ import annotations

from typing import Any

from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from .auth import is_open
from .protocol import ErrorDetail

DESCRIPTIONS = {
    400: "The request is wrong in a way its schema cannot say (an upload's file name that is not "
         "<voice_id>.pth, a V1/V2 tensor or option the model does not take).",
    401: "No API key, or not a configured one (send X-API-Key or Authorization: Bearer).",
    404: "Unknown voice (or model).",
    409: "The voice exists (upload with overwrite=true), or a Voice resource manages it.",
    413: "The upload is larger than the voice file limit.",
    422: "The body does not match the schema (a list of problems), or the voice file is not a voice this "
         "model can load (one sentence).",
    501: "Not supported here (a language whose text processing could not be loaded, model versions).",
    503: "Not ready yet, or the queue is full: retry after the Retry-After seconds.",
}


class ValidationProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationOrDetail(BaseModel):
    """422: FastAPI's list of schema problems, or our one sentence about the file's content."""

    detail: list[ValidationProblem] | str


class KServeError(BaseModel):
    """The error body of KServe's own routes."""

    error: str


def errors(*statuses: int) -> dict[int, dict[str, Any]]:
    """The `responses=` entries of a route's error statuses (all JSON with a `detail`)."""
    return {s: {"model": ValidationOrDetail if s == 422 else ErrorDetail, "description": DESCRIPTIONS[s]}
            for s in statuses}


class links:  # noqa: N801 - a namespace of OpenAPI link objects, named as the operations they start from
    """Links from an uploaded voice to what a client does next with it (schema-driven clients and
    schemathesis' stateful phase follow them)."""

    UPLOADED = {
        "GenerateWithVoice": {
            "operationId": "generate",
            "requestBody": {"text": "Spoken with the voice just uploaded.",
                            "voice_id": "$response.body#/voice_id", "max_new_tokens": 8},
            "description": "Speak with the uploaded voice.",
        },
        "DeleteVoice": {
            "operationId": "deleteVoice",
            "parameters": {"voice_id": "$response.body#/voice_id"},
            "description": "Delete the uploaded voice.",
        },
    }


# KServe's routes: what each can answer besides its 200, per path template. Inference errors from our
# model are ours (`detail`); KServe's own (unknown model, not ready, versions) are `error` bodies.
_KSERVE_ERRORS: dict[str, tuple[int, ...]] = {
    "/v1/models/{model_name}": (404, 503),
    "/v1/models/{model_name}:predict": (400, 404, 501, 503),
    "/v1/models/{model_name}:explain": (400, 404, 501, 503),
    # KServe's V2 routes also take an optional model_version query, and answer 501 to it ("Model
    # versioning not supported yet").
    "/v2/models/{model_name}": (404, 501),
    "/v2/models/{model_name}/versions/{model_version}": (404, 501),
    "/v2/models/{model_name}/ready": (404, 501, 503),
    "/v2/models/{model_name}/versions/{model_version}/ready": (404, 501, 503),
    "/v2/models/{model_name}/infer": (400, 404, 501, 503),
    "/v2/models/{model_name}/versions/{model_version}/infer": (400, 404, 501, 503),
    # KServe's repository can load nothing into a custom predictor: load always answers 503.
    "/v2/repository/models/{model_name}/load": (503,),
    "/v2/repository/models/{model_name}/unload": (404,),
    "/v2/health/ready": (503,),
}


def _schema_ref(document: dict, model: type[BaseModel]) -> dict:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if model.__name__ not in schemas:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def finish_openapi(app, open_routes: frozenset) -> dict:
    """The app's OpenAPI document with security, 401s and KServe's statuses; built once, then cached."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes)
    document.setdefault("components", {})["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer"},
    }
    detail = _schema_ref(document, ErrorDetail)
    either = {"anyOf": [detail, _schema_ref(document, KServeError)]}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in _KSERVE_ERRORS.get(path, ()):
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status],
                                                   "content": {"application/json": {"schema": either}}})
            if path == "/metrics":  # KServe's document says JSON; it is Prometheus' text format
                responses["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
            if is_open(method.upper(), path, open_routes):
                operation["security"] = []
                continue
            operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
            responses["401"] = {"description": DESCRIPTIONS[401],
                                "content": {"application/json": {"schema": detail}}}
    app.openapi_schema = document
    return document
