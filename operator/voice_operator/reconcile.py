"""What the operator does for one Voice: sync its file, tell the predictors, remove it, repair drift.

Plain functions over a `Context`; the kopf handlers in handlers.py only call them and translate
`TemporaryFailure`/`PermanentFailure` into kopf's retry semantics. Every step is published in the
Voice's status and as a Kubernetes event, so `kubectl describe voice` tells the story.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from chatterbox_voicefile import InvalidVoiceFile, InvalidVoiceId, Owner, read_voice, voice_file_name
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import predictors, sources
from .failures import PermanentFailure, ReloadPending, SyncFailure, TemporaryFailure
from .settings import OperatorSettings
from .status import (
    FAILED,
    GROUP,
    PENDING,
    PLURAL,
    READY,
    RELOADED,
    SYNCED,
    SYNCING,
    VERSION,
    VoiceStatus,
    now,
)
from .store import VoiceStore, sha256_of

log = logging.getLogger(__name__)

# (body, type "Normal"|"Warning", reason, message): kopf.event in the operator, a list in unit tests.
EventSink = Callable[[dict, str, str, str], None]


@dataclass
class Context:
    settings: OperatorSettings
    store: VoiceStore
    api: client.ApiClient
    events: EventSink

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)


def voice_id_of(body: dict) -> str:
    voice_id = body["spec"].get("voiceId") or body["metadata"]["name"]
    try:
        voice_file_name(voice_id)
    except InvalidVoiceId as exc:  # the CRD's pattern stops most; this is the last word
        raise PermanentFailure("InvalidVoiceId", str(exc)) from exc
    return voice_id


def owner_of(body: dict) -> Owner:
    meta = body["metadata"]
    return Owner(meta["namespace"], meta["name"], meta["uid"])


def _exists(ctx: Context, owner: Owner) -> bool:
    try:
        found = ctx.custom.get_namespaced_custom_object(GROUP, VERSION, owner.namespace, PLURAL, owner.name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        if exc.status == 403:  # a namespace this operator does not serve: asking again will not help
            raise PermanentFailure(
                "VoiceIdTaken", f"the voice id is claimed by Voice {owner}, in a namespace this operator "
                "may not read, so it cannot tell whether that Voice still exists; give this Voice another "
                "spec.voiceId, or delete that Voice (or its claim on the volume, if it is gone)") from exc
        raise TemporaryFailure("ApiUnavailable", f"checking Voice {owner}: HTTP {exc.status}") from exc
    return found["metadata"]["uid"] == owner.uid


def _claim(ctx: Context, voice_id: str, owner: Owner) -> None:
    holder = ctx.store.claim(voice_id, owner)
    if holder != owner and not _exists(ctx, holder):  # its Voice was deleted while we were not looking
        holder = ctx.store.claim(voice_id, owner, replace_stale=holder)
    if holder != owner:
        raise PermanentFailure("VoiceIdTaken", f"voice id {voice_id!r} belongs to Voice {holder}; give "
                               "this Voice another spec.voiceId, or delete the other")


def _fetch(ctx: Context, body: dict) -> bytes:
    source, limit = body["spec"]["source"], ctx.settings.max_voice_bytes
    if "http" in source:
        return sources.fetch_http(source["http"]["url"], limit=limit, timeout=ctx.settings.fetch_timeout)
    for kind in ("configMap", "secret"):
        if kind in source:
            ref = source[kind]
            return sources.fetch_object_key(ctx.core, kind, body["metadata"]["namespace"], ref["name"],
                                            ref["key"], limit=limit)
    raise PermanentFailure("NoSource", "spec.source names none of http, configMap, secret or clone")


def _synced_clone(ctx: Context, body: dict, voice_id: str) -> bytes | None:
    """The file on disk when it is this generation's clone, as synced: a retry after the sync (a replica
    that did not confirm the reload) must not clone again, which takes minutes."""
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    if not status.get("sha256") or (status.get("clone") or {}).get("syncedGeneration") != generation:
        return None
    try:
        raw = ctx.store.path(voice_id).read_bytes()
    except FileNotFoundError:
        return None
    return raw if sha256_of(raw) == status["sha256"] else None


def _clone(ctx: Context, body: dict, status: VoiceStatus) -> bytes:
    """Fetches the clone source's recordings and has a ready predictor replica clone them; the report
    (what was used, what was rejected and why) goes into status.clone and the events."""
    spec = body["spec"]
    clone = spec["source"]["clone"]
    isvc = spec.get("inferenceService")
    if not isvc:
        raise PermanentFailure("CloneNeedsPredictor", "a clone source is cloned by a predictor: set "
                               "spec.inferenceService to the InferenceService whose replicas clone it")
    recordings = sources.fetch_recordings(clone["audioUrls"], limit=ctx.settings.max_recording_bytes,
                                          total_limit=ctx.settings.max_clone_bytes,
                                          timeout=ctx.settings.fetch_timeout)
    namespace = body["metadata"]["namespace"]
    service = ctx.settings.predictor_service.format(name=isvc)
    replicas = predictors.ready_replicas(client.DiscoveryV1Api(ctx.api), namespace, service,
                                         ctx.settings.predictor_port_name)
    if not replicas:
        raise TemporaryFailure("NoReadyReplicas", f"no ready replica behind {namespace}/{service} to clone "
                               "the voice; waiting for one")
    cloned = predictors.clone_on(replicas[0], recordings, scheme=ctx.settings.predictor_scheme,
                                 api_key=ctx.settings.api_key, timeout=ctx.settings.clone_timeout,
                                 exaggeration=float(clone.get("exaggeration", 0.5)))
    report = cloned.report
    rejected = [{"recording": r.get("file", "?"), "reason": r.get("reason", "?")}
                for r in report.get("rejected") or []]
    quality = report.get("quality") or {}
    status.update(clone={
        "replica": str(cloned.replica), "recordings": len(recordings),
        "segments": len(report.get("segments") or []), "speechSeconds": report.get("total_duration_s"),
        "similarityMean": quality.get("speaker_similarity_mean"),
        "similarityMin": quality.get("speaker_similarity_min"), "rejected": rejected})
    if rejected:
        ctx.events(body, "Warning", "RecordingsRejected", f"{len(rejected)} of {len(recordings)} recordings "
                   "rejected: " + "; ".join(f"{r['recording']}: {r['reason']}" for r in rejected))
    ctx.events(body, "Normal", "Cloned", f"{cloned.replica} cloned the voice from {len(recordings)} "
               f"recordings: {len(report.get('segments') or [])} segments, "
               f"{report.get('total_duration_s')} s of speech")
    return cloned.voice


def _verified(ctx: Context, body: dict, raw: bytes) -> str:
    sha = sha256_of(raw)
    expected = (body["spec"].get("sha256") or "").lower()
    if expected and sha != expected:
        raise PermanentFailure("ChecksumMismatch", f"{sources.describe(body['spec']['source'])} has "
                               f"SHA-256 {sha}, the spec expects {expected}")
    try:
        read_voice(raw, ctx.settings.variant)  # the predictor's own check: weights only, structure
    except InvalidVoiceFile as exc:
        raise PermanentFailure("NotAVoice", f"not a {ctx.settings.variant} voice: {exc}") from exc
    return sha


def _tell_predictors(ctx: Context, body: dict, voice_id: str, present: bool) -> tuple[bool, str, str]:
    """(all told, reason, message) for the PredictorsReloaded condition."""
    isvc = body["spec"].get("inferenceService")
    if not isvc:
        return True, "NoInferenceService", "no spec.inferenceService: predictors pick the file up on " \
                                           "their own periodic scan"
    namespace = body["metadata"]["namespace"]
    service = ctx.settings.predictor_service.format(name=isvc)
    replicas = predictors.ready_replicas(client.DiscoveryV1Api(ctx.api), namespace, service,
                                         ctx.settings.predictor_port_name)
    if not replicas:
        return True, "NoReadyReplicas", f"no ready replica behind {namespace}/{service}; replicas read " \
                                        "/voices when they start"
    outcomes = predictors.reload_all(replicas, scheme=ctx.settings.predictor_scheme,
                                     api_key=ctx.settings.api_key, timeout=ctx.settings.fetch_timeout,
                                     voice_file=voice_file_name(voice_id), present=present)
    failed = [o.message for o in outcomes if not o.ok]
    if failed:
        return False, "ReloadFailed", f"{len(failed)} of {len(outcomes)} replicas failed: " + \
            "; ".join(failed)
    return True, "Reloaded", f"{len(outcomes)} ready replicas reloaded: " + ", ".join(map(str, replicas))


def reconcile(ctx: Context, body: dict, *, cause: str = "sync") -> None:
    """Brings the voice file in line with the spec and tells the predictors; publishes every step.

    Raises TemporaryFailure (retry later) or PermanentFailure (stop until the spec changes).
    """
    status = VoiceStatus(ctx.custom, body)
    try:
        voice_id = voice_id_of(body)
        owner = owner_of(body)
        status.update(phase=SYNCING, voiceId=voice_id)
        status.publish()
        with ctx.store.lock(voice_id):
            _claim(ctx, voice_id, owner)
            if "clone" in body["spec"]["source"]:
                raw = _synced_clone(ctx, body, voice_id) or _clone(ctx, body, status)
            else:
                raw = _fetch(ctx, body)
                status.update(clone=None)  # a merge patch's null: drops a former clone source's report
            sha = _verified(ctx, body, raw)
            on_disk = ctx.store.on_disk(voice_id)
            wrote = on_disk is None or on_disk.sha256 != sha
            if wrote:
                ctx.store.write(voice_id, raw)
        where = sources.describe(body["spec"]["source"])
        message = (f"wrote {voice_file_name(voice_id)} ({len(raw)} bytes) from {where}" if wrote
                   else f"{voice_file_name(voice_id)} already holds this file")
        ctx.events(body, "Normal", "Synced" if cause == "sync" else "DriftRepaired", message)
        status.set_condition(SYNCED, True, "Synced", message)
        status.update(sha256=sha, size=len(raw), lastSyncTime=now(), observedGeneration=status.generation)
        if "clone" in body["spec"]["source"]:  # marks the file as this generation's clone (_synced_clone)
            status.update(clone={**(status.status.get("clone") or {}), "syncedGeneration": status.generation})
        try:
            ok, reason, message = _tell_predictors(ctx, body, voice_id, present=True)
        except TemporaryFailure as exc:
            ok, reason, message = False, exc.reason, str(exc)
        status.set_condition(RELOADED, ok, reason, message)
        if not ok:
            raise ReloadPending(reason, message)
        ctx.events(body, "Normal", reason, message)
        status.update(phase=READY)
    except PermanentFailure as exc:
        _failed(ctx, body, status, exc, FAILED)
        raise
    except TemporaryFailure as exc:
        _failed(ctx, body, status, exc, PENDING)
        raise
    finally:
        status.publish()


def _failed(ctx: Context, body: dict, status: VoiceStatus, exc: SyncFailure, phase: str) -> None:
    retrying = " (retrying)" if phase == PENDING else ""
    if not isinstance(exc, ReloadPending):  # the file is synced; only the predictors are behind
        status.set_condition(SYNCED, False, exc.reason, str(exc) + retrying)
    status.update(phase=phase, observedGeneration=status.generation)
    ctx.events(body, "Warning", exc.reason, str(exc) + retrying)


def remove(ctx: Context, body: dict) -> None:
    """Deletes the voice file if this Voice owns its id, and tells the predictors. A missing file is fine."""
    try:
        voice_id = voice_id_of(body)
    except PermanentFailure:
        return  # an invalid id never named a file
    owner = owner_of(body)
    with ctx.store.lock(voice_id):
        if ctx.store.owner(voice_id) != owner:
            log.info("Voice %s never owned voice id %r: nothing to delete", owner, voice_id)
            return
        removed = ctx.store.remove(voice_id)
        ctx.store.release(voice_id, owner)
    ctx.events(body, "Normal", "Deleted", f"removed {voice_file_name(voice_id)}" if removed
               else f"{voice_file_name(voice_id)} was already gone")
    ok, reason, message = _tell_predictors(ctx, body, voice_id, present=False)
    if not ok:
        raise TemporaryFailure(reason, message)


def drifted(ctx: Context, body: dict) -> str | None:
    """Why the voice on disk no longer matches its synced status (None when it does)."""
    status = body.get("status") or {}
    voice_id, expected = status.get("voiceId"), status.get("sha256")
    if not voice_id or not expected:
        return None
    owner = owner_of(body)
    if ctx.store.owner(voice_id) != owner:
        return f"the claim on voice id {voice_id!r} is no longer this Voice's"
    on_disk = ctx.store.on_disk(voice_id)
    if on_disk is None:
        return f"{voice_file_name(voice_id)} was removed"
    if on_disk.sha256 != expected:
        return f"{voice_file_name(voice_id)} was changed (SHA-256 {on_disk.sha256})"
    source = body["spec"]["source"]
    # An in-cluster source is cheap to re-read: an edited ConfigMap or Secret is drift too.
    if ("configMap" in source or "secret" in source) and sha256_of(_fetch(ctx, body)) != expected:
        return f"{sources.describe(source)} changed"
    return None
