"""The kopf handlers: thin wrappers over reconcile.py, registered on a registry built by `build_registry`.

Nothing registers at import time. kopf's own bookkeeping (handler progress, the last handled spec) goes
to annotations under our API group, never to `status`: the CRD's schema preserves no unknown fields.
"""

from __future__ import annotations

import logging

import kopf

from . import reconcile as voices
from .failures import PermanentFailure, SyncFailure, TemporaryFailure
from .settings import OperatorSettings
from .status import FAILED, GROUP, PENDING, PLURAL, READY, SYNCED, VERSION

log = logging.getLogger(__name__)

DELETE_RETRIES = 3  # telling predictors about a deletion is a courtesy: their own scan notices it too


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    resource = dict(group=GROUP, version=VERSION, plural=PLURAL, registry=registry)

    def delay(retry: int) -> float:
        return min(settings.retry_max_delay, 2.0 ** retry)

    def run(ctx: voices.Context, body, retry: int, cause: str = "sync") -> None:
        try:
            voices.reconcile(ctx, body, cause=cause)
        except TemporaryFailure as exc:
            raise kopf.TemporaryError(str(exc), delay=delay(retry)) from exc
        except PermanentFailure as exc:
            raise kopf.PermanentError(str(exc)) from exc

    @kopf.on.login(registry=registry)
    def login(**kwargs):
        """The same credentials as our own API client: the pod's ServiceAccount, else $KUBECONFIG."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_):
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
        settings.persistence.finalizer = f"{GROUP}/voice-file"
        # The Voice CRD is installed with the operator; watching all CRDs and namespaces for changes
        # would need cluster-wide read access to both, for nothing.
        settings.scanning.disabled = True
        # Our handlers post their own events for each step; kopf's log lines need not repeat them.
        settings.posting.level = logging.ERROR
        settings.posting.reporting_component = "chatterbox-voice-operator"

    @kopf.on.create(**resource, id="sync")
    @kopf.on.update(**resource, field="spec", id="sync")
    def sync(body, retry, memo, **_):
        run(memo.ctx, body, retry)

    @kopf.on.resume(**resource, id="resume")
    def resume(body, meta, status, retry, memo, **_):
        """After a restart: a voice already synced for this generation is only checked, not fetched again."""
        ctx = memo.ctx
        if status.get("phase") == READY and status.get("observedGeneration") == meta.get("generation"):
            try:
                if voices.drifted(ctx, body) is None:
                    return
            except SyncFailure:
                pass  # the source cannot be read now: a full sync reports why and retries
        run(ctx, body, retry)

    @kopf.on.delete(**resource, id="delete")
    def delete(body, retry, memo, **_):
        ctx = memo.ctx
        try:
            voices.remove(ctx, body)
        except TemporaryFailure as exc:
            if retry + 1 >= DELETE_RETRIES:  # never hold a deletion hostage to an unreachable replica
                ctx.events(body, "Warning", exc.reason, f"{exc}; giving up: replicas notice the removal "
                           "on their next scan of /voices")
                return
            raise kopf.TemporaryError(str(exc), delay=delay(retry)) from exc

    @kopf.timer(**resource, interval=settings.drift_interval, initial_delay=settings.drift_interval,
                id="drift")
    def drift(body, meta, status, memo, **_):
        """Repairs a voice changed or removed on disk behind the operator's back; retries a taken id."""
        if meta.get("deletionTimestamp") or status.get("observedGeneration") != meta.get("generation"):
            return  # being deleted, or a spec change is being handled right now
        ctx = memo.ctx
        try:
            if status.get("phase") == READY:
                why = voices.drifted(ctx, body)
                if why is None:
                    return
                ctx.events(body, "Warning", "Drift", why)
                voices.reconcile(ctx, body, cause="drift")
            elif status.get("phase") == FAILED and _reason(status, SYNCED) == "VoiceIdTaken":
                voices.reconcile(ctx, body)  # the other Voice may be gone by now
            elif status.get("phase") == PENDING:
                voices.reconcile(ctx, body)  # a repair that failed for now; kopf retries only its handlers
        except SyncFailure as exc:
            log.info("drift check of %s/%s: %s", meta["namespace"], meta["name"], exc)

    return registry


def _reason(status, kind: str) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == kind), None)
