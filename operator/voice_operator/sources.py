"""Where a voice file comes from: an HTTP(S) URL, a key of a ConfigMap or Secret in the Voice's namespace,
or reference recordings (HTTP(S) URLs) that a predictor clones (predictors.clone_on).

Each failure is typed by what should happen next (failures.py): unreachable, 5xx, 429 or a ConfigMap not
created yet is a `TemporaryFailure`; a 404 or a file over the size limit is a `PermanentFailure`.
"""

from __future__ import annotations

import base64
import posixpath
import re
import urllib.error
import urllib.parse
import urllib.request

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .failures import PermanentFailure, TemporaryFailure

# 408 (timeout), 425 (too early) and 429 (rate limited) say "later", like every 5xx.
_RETRYABLE_HTTP = {408, 425, 429}
_CHUNK = 64 * 1024


def describe(source: dict) -> str:
    if "http" in source:
        return source["http"]["url"]
    for kind in ("configMap", "secret"):
        if kind in source:
            return f"{kind} {source[kind]['name']}/{source[kind]['key']}"
    return f"{len(source['clone']['audioUrls'])} recordings cloned by a predictor"


def recording_name(url: str, index: int) -> str:
    """A recording's file name for the predictor's report: the URL path's last part, made plain."""
    base = posixpath.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)[:100].lstrip(".")
    return base or f"recording-{index + 1}"


def fetch_recordings(urls: list[str], *, limit: int, total_limit: int, timeout: float,
                     ) -> list[tuple[str, bytes]]:
    """(name, bytes) of each reference recording, in order, at most `limit` bytes each and `total_limit`
    in all (what one clone request to a predictor may carry); names are made unique."""
    recordings, seen, total = [], set(), 0
    for index, url in enumerate(urls):
        name = base = recording_name(url, index)
        n = 1
        while name in seen:
            n += 1
            name = f"{n}-{base}"
        seen.add(name)
        raw = fetch_http(url, limit=min(limit, total_limit - total), timeout=timeout)
        total += len(raw)
        recordings.append((name, raw))
    return recordings


def fetch_http(url: str, *, limit: int, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "chatterbox-voice-operator"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise PermanentFailure("TooLarge", f"{url} is {declared} bytes; the limit is {limit}")
            body = bytearray()
            while chunk := response.read(_CHUNK):
                body += chunk
                if len(body) > limit:  # stop reading: a lying or absent Content-Length changes nothing
                    raise PermanentFailure("TooLarge", f"{url} is larger than the limit of {limit} bytes")
            if declared is not None and declared.isdigit() and len(body) != int(declared):
                raise TemporaryFailure("SourceUnavailable", f"{url}: the download stopped after "
                                       f"{len(body)} of {declared} bytes")
            return bytes(body)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code in _RETRYABLE_HTTP:
            raise TemporaryFailure("SourceUnavailable", f"{url} answered HTTP {exc.code}") from exc
        raise PermanentFailure("SourceRefused", f"{url} answered HTTP {exc.code}: fix the URL") from exc
    except (urllib.error.URLError, OSError) as exc:  # refused, DNS, TLS, timeout, reset mid-body
        reason = getattr(exc, "reason", exc)
        raise TemporaryFailure("SourceUnavailable", f"{url} is unreachable: {reason}") from exc


def fetch_object_key(api: client.CoreV1Api, kind: str, namespace: str, name: str, key: str,
                     *, limit: int) -> bytes:
    """The bytes under `key` of a ConfigMap (binaryData) or a Secret (data) in `namespace`."""
    try:
        if kind == "configMap":
            obj = api.read_namespaced_config_map(name, namespace)
            encoded = (obj.binary_data or {}).get(key)
            if encoded is None and key in (obj.data or {}):
                raise PermanentFailure("NotBinary", f"ConfigMap {name} has {key!r} under data; a voice "
                                       "file is binary, so put it under binaryData (kubectl create "
                                       "configmap --from-file does)")
        else:
            obj = api.read_namespaced_secret(name, namespace)
            encoded = (obj.data or {}).get(key)
    except ApiException as exc:
        if exc.status == 404:  # applied together with the Voice, it may simply not exist yet
            raise TemporaryFailure("SourceNotFound", f"{kind} {namespace}/{name} does not exist "
                                   "(yet)") from exc
        if exc.status == 403:
            raise TemporaryFailure("SourceForbidden", f"the operator may not read {kind} "
                                   f"{namespace}/{name}: {exc.reason}") from exc
        raise TemporaryFailure("SourceUnavailable", f"reading {kind} {namespace}/{name}: "
                               f"HTTP {exc.status} {exc.reason}") from exc
    if encoded is None:
        raise TemporaryFailure("SourceNotFound", f"{kind} {namespace}/{name} has no key {key!r} (yet)")
    raw = base64.b64decode(encoded)
    if len(raw) > limit:
        raise PermanentFailure("TooLarge", f"{kind} {name}/{key} is {len(raw)} bytes; the limit is {limit}")
    return raw
