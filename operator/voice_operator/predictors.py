"""Telling predictors to reload (every ready replica behind an InferenceService's predictor Service), and
having one of them clone a voice.

Replica addresses come from the Service's EndpointSlices (label `kubernetes.io/service-name`), which the
endpoint controller keeps to the pods that pass their readiness probe. Each gets `POST /voices/reload`,
which rescans /voices at once and answers the list of voices it now serves, so the operator can tell
that a replica really sees the new file (or no longer sees a deleted one). Replicas also rescan on their
own every few seconds: the reload makes a change take effect now and confirms it.

A `clone` source's recordings go to one ready replica's `POST /voices/clone`, which runs the cloning
tool's pipeline on the predictor's device and answers the voice file (not stored there: the operator
verifies and writes it like any other voice) with its report: segments used, recordings rejected and why.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .failures import PermanentFailure, TemporaryFailure


@dataclass(frozen=True)
class Replica:
    address: str
    port: int
    pod: str | None

    def __str__(self) -> str:
        return self.pod or f"{self.address}:{self.port}"


def _pick_port(ports, wanted: str) -> int | None:
    ports = [p for p in ports or [] if p.port]
    if wanted:
        return next((p.port for p in ports if p.name == wanted), None)
    if len(ports) == 1:
        return ports[0].port
    return next((p.port for p in ports if p.name in ("http", "http1")), None)


def ready_replicas(api: client.DiscoveryV1Api, namespace: str, service: str, port_name: str) -> list[Replica]:
    try:
        slices = api.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}").items
    except ApiException as exc:
        raise TemporaryFailure("EndpointsUnavailable", f"listing the EndpointSlices of {namespace}/"
                               f"{service}: HTTP {exc.status} {exc.reason}") from exc
    replicas = []
    for endpoint_slice in slices:
        port = _pick_port(endpoint_slice.ports, port_name)
        if port is None:
            continue
        for endpoint in endpoint_slice.endpoints or []:
            # Unset `ready` means ready (EndpointSlice API); a terminating pod is not told anything.
            conditions = endpoint.conditions
            if conditions is not None and (conditions.ready is False or conditions.terminating):
                continue
            pod = endpoint.target_ref.name if endpoint.target_ref else None
            replicas.extend(Replica(address, port, pod) for address in endpoint.addresses or [])
    return sorted(set(replicas), key=str)


@dataclass(frozen=True)
class ReloadOutcome:
    replica: Replica
    ok: bool
    message: str


def _reload_one(replica: Replica, *, scheme: str, api_key: str | None, timeout: float,
                voice_file: str, present: bool) -> ReloadOutcome:
    host = f"[{replica.address}]" if ":" in replica.address else replica.address
    request = urllib.request.Request(f"{scheme}://{host}:{replica.port}/voices/reload", data=b"",
                                     method="POST", headers={"X-API-Key": api_key} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            voices = json.loads(response.read()).get("voices", [])
    except urllib.error.HTTPError as exc:
        return ReloadOutcome(replica, False, f"{replica}: HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return ReloadOutcome(replica, False, f"{replica}: {getattr(exc, 'reason', exc)}")
    if (voice_file in voices) != present:
        listed = "does not list" if present else "still lists"
        return ReloadOutcome(replica, False, f"{replica} reloaded but {listed} {voice_file} (does it mount "
                             "the same volume?)")
    return ReloadOutcome(replica, True, f"{replica}: ok")


def reload_all(replicas: list[Replica], *, scheme: str, api_key: str | None, timeout: float,
               voice_file: str, present: bool) -> list[ReloadOutcome]:
    """Reloads every replica at once; one slow replica costs one timeout, not one per replica."""
    if not replicas:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(replicas))) as pool:
        return list(pool.map(lambda r: _reload_one(r, scheme=scheme, api_key=api_key, timeout=timeout,
                                                   voice_file=voice_file, present=present), replicas))


@dataclass(frozen=True)
class Clone:
    voice: bytes
    report: dict
    replica: Replica


def _multipart(recordings: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in recordings:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("detail"))[:1500]
    except (ValueError, AttributeError, OSError):
        return exc.reason or ""


def clone_on(replica: Replica, recordings: list[tuple[str, bytes]], *, scheme: str, api_key: str | None,
             timeout: float, exaggeration: float) -> Clone:
    """The voice `replica` clones from `recordings`. 422 (no usable speech, or bad options) is permanent;
    anything else that fails is retried (a replica restarting, a full clone queue, a network blip)."""
    host = f"[{replica.address}]" if ":" in replica.address else replica.address
    query = urllib.parse.urlencode({"exaggeration": exaggeration})
    body, content_type = _multipart(recordings)
    headers = {"Content-Type": content_type, **({"X-API-Key": api_key} if api_key else {})}
    request = urllib.request.Request(f"{scheme}://{host}:{replica.port}/voices/clone?{query}", data=body,
                                     method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 413, 422):
            raise PermanentFailure("CloningRefused", f"{replica} could not clone the recordings: "
                                   f"{_detail(exc)}") from exc
        raise TemporaryFailure("CloneUnavailable", f"{replica} answered HTTP {exc.code} to the clone: "
                               f"{_detail(exc)}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TemporaryFailure("CloneUnavailable", f"{replica}: {getattr(exc, 'reason', exc)}") from exc
    try:
        return Clone(base64.b64decode(answer["voice"], validate=True), answer["report"], replica)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise TemporaryFailure("CloneUnavailable", f"{replica} answered something that is not a cloned "
                               "voice") from exc
