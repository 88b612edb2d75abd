"""KServe's V1 and V2 (Open Inference Protocol) requests, as the model declares and checks them.

V2 metadata (`GET /v2/models/{name}`) lists `V2_INPUTS` and `V2_OUTPUTS`, and `parse_v2` holds every
request to them: an unknown tensor, a wrong datatype or a shape that is not one element is a 400 whose
detail names the tensor. The options (voice, seed, sampling) are optional one-element tensors; as
before, they may also come as request parameters (a tensor wins over a parameter of the same name).

V1 (`POST /v1/models/{name}:predict`) takes `{"instances": [{"text": ..., "voice_id": ..., <options>}]}`
(or bare strings); `parse_v1` checks each instance with the same protocol models as the REST API.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from ..engine import SynthesisRequest
from ..errors import InvalidInput
from .protocol import GenerationOptions


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    description: str
    also: tuple[str, ...] = ()
    """Other datatypes accepted for it (JSON clients often send FP64 floats and INT32 or INT64 ints)."""

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


_FLOAT = ("FP64",)
_INT = ("INT32", "UINT32", "UINT64")
V2_INPUTS = (
    Tensor("text", "BYTES", (1,), "Text to speak (UTF-8); the one input that is required."),
    Tensor("voice_id", "BYTES", (1,), "Voice id; empty or absent for the built-in voice."),
    Tensor("language", "BYTES", (1,), "Language id (multilingual variant)."),
    Tensor("seed", "INT64", (1,), "Same seed, same speech.", also=_INT),
    Tensor("temperature", "FP32", (1,), "Sampling temperature.", also=_FLOAT),
    Tensor("top_p", "FP32", (1,), "Nucleus sampling mass.", also=_FLOAT),
    Tensor("top_k", "INT64", (1,), "Top-k (Turbo only).", also=_INT),
    Tensor("min_p", "FP32", (1,), "Min-p (English and Multilingual only).", also=_FLOAT),
    Tensor("repetition_penalty", "FP32", (1,), "Repetition penalty.", also=_FLOAT),
    Tensor("cfg_weight", "FP32", (1,), "Guidance weight (English and Multilingual only).", also=_FLOAT),
    Tensor("exaggeration", "FP32", (1,), "Emotion exaggeration (English and Multilingual only).",
           also=_FLOAT),
    Tensor("max_new_tokens", "INT64", (1,), "Cap on speech tokens per sentence group.", also=_INT),
)
V2_OUTPUTS = (
    Tensor("audio", "FP32", (-1,), "Mono samples in [-1, 1] at 24 kHz (parameter sample_rate)."),
    Tensor("wav", "BYTES", (1,), "The same audio as one WAV file (ask with binary_data: true for raw "
           "bytes)."),
)
_INPUTS = {t.name: t for t in V2_INPUTS}
_OUTPUTS = {t.name for t in V2_OUTPUTS}
# KServe's binary-extension parameters, which are about transport, not generation.
_TRANSPORT = {"binary_data_output", "binary_data", "binary_data_size", "content_type"}


@dataclass(frozen=True)
class V2Request:
    synthesis: SynthesisRequest
    outputs: frozenset[str]


def _options(values: dict, where: str) -> GenerationOptions:
    try:
        return GenerationOptions(**values)
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = ".".join(str(p) for p in problem["loc"])
        raise InvalidInput(f"{where} '{name}': {problem['msg']}") from None


def _scalar(tensor) -> object:
    spec = _INPUTS.get(tensor.name)
    if spec is None:
        raise InvalidInput(f"unknown input tensor '{tensor.name}': this model takes "
                           f"{', '.join(_INPUTS)} (see GET /v2/models/<name>)")
    if tensor.datatype not in (spec.datatype, *spec.also):
        raise InvalidInput(f"input tensor '{tensor.name}' must be {spec.datatype}, not {tensor.datatype}")
    if int(np.prod(tensor.shape or [0])) != 1:
        raise InvalidInput(f"input tensor '{tensor.name}' must hold exactly one element (shape [1]), "
                           f"not shape {list(tensor.shape)}")
    try:
        value = tensor.as_numpy().reshape(-1)[0]
    except Exception as exc:  # KServe's decoder raises its own and numpy's errors for bad data
        raise InvalidInput(f"input tensor '{tensor.name}': its data does not match its datatype and "
                           f"shape ({exc})") from None
    if spec.datatype == "BYTES":
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"input tensor '{tensor.name}' is not UTF-8 text") from None
        return str(value)
    return value.item() if isinstance(value, np.generic) else value


def parse_v2(request) -> V2Request:
    """The engine's request from a KServe `InferRequest`, checked against `V2_INPUTS`."""
    values = {k: v for k, v in (request.parameters or {}).items() if k not in _TRANSPORT}
    names = [t.name for t in request.inputs]
    if duplicate := {n for n in names if names.count(n) > 1}:
        raise InvalidInput(f"input tensor '{sorted(duplicate)[0]}' is given more than once")
    for tensor in request.inputs:
        values[tensor.name] = _scalar(tensor)
    if "text" not in values or not isinstance(values["text"], str):
        raise InvalidInput("input tensor 'text' (BYTES, shape [1]) is required")
    wanted = frozenset(o.name for o in request.request_outputs or []) or frozenset({"audio"})
    if unknown := wanted - _OUTPUTS:
        raise InvalidInput(f"unknown output tensor '{sorted(unknown)[0]}': this model has "
                           f"{', '.join(sorted(_OUTPUTS))}")
    text = values.pop("text")
    voice = values.pop("voice_id", None)
    options = _options(values, "input tensor or parameter")
    return V2Request(options.synthesis_request(text, _voice(voice, "parameter")), wanted)


def _voice(voice, where: str) -> str | None:
    """The voice id as given (the engine refuses one that is not a name, like every protocol's)."""
    if voice is not None and not isinstance(voice, str):
        raise InvalidInput(f"{where} 'voice_id' must be a string")
    return voice


def parse_v1(payload) -> list[SynthesisRequest]:
    """The engine's requests from a V1 `{"instances": [...]}` body, one per instance."""
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise InvalidInput('expected {"instances": [{"text": ..., "voice_id": ...}]}')
    requests = []
    for i, instance in enumerate(instances):
        if isinstance(instance, str):
            instance = {"text": instance}
        if not isinstance(instance, dict) or not isinstance(instance.get("text"), str):
            raise InvalidInput(f"instance {i}: must be a string or an object with a string 'text'")
        values = dict(instance)
        text, voice = values.pop("text"), values.pop("voice_id", None)
        options = _options(values, f"instance {i}: field")
        requests.append(options.synthesis_request(text, _voice(voice, f"instance {i}: field")))
    return requests
