"""A Voice's status: phase, conditions, what is on disk. Built here, written by `VoiceStatus.publish`.

Conditions follow the Kubernetes convention (`type`, `status`, `reason`, `message`,
`lastTransitionTime`, `observedGeneration`): a condition keeps its transition time while its status
does not change, so `kubectl describe` shows since when a voice has been failing, not the last retry.
"""

from __future__ import annotations

import datetime

from kubernetes import client

GROUP, VERSION, PLURAL = "tts.chatterbox-k8s.io", "v1alpha1", "voices"

PENDING, SYNCING, READY, FAILED = "Pending", "Syncing", "Ready", "Failed"
SYNCED, RELOADED = "Synced", "PredictorsReloaded"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class VoiceStatus:
    """One Voice's status as this handler run sees it; `publish()` writes it to the status subresource."""

    def __init__(self, api: client.CustomObjectsApi, body: dict):
        self._api = api
        self.namespace = body["metadata"]["namespace"]
        self.name = body["metadata"]["name"]
        self.generation = body["metadata"].get("generation")
        self.status = dict(body.get("status") or {})
        self.status["conditions"] = [dict(c) for c in self.status.get("conditions") or []]

    def condition(self, kind: str) -> dict | None:
        return next((c for c in self.status["conditions"] if c["type"] == kind), None)

    def set_condition(self, kind: str, ok: bool | None, reason: str, message: str) -> None:
        value = "Unknown" if ok is None else str(ok)
        current = self.condition(kind)
        if current is None:
            current = {"type": kind}
            self.status["conditions"].append(current)
        if current.get("status") != value:
            current["lastTransitionTime"] = now()
        current.update(status=value, reason=reason, message=message[:1000],
                       observedGeneration=self.generation)
        self._derive_ready()

    def _derive_ready(self) -> None:
        """Ready summarises the others: False with Synced's reason until the file is there, then whatever
        the predictors said."""
        synced, reloaded = self.condition(SYNCED), self.condition(RELOADED)
        if synced is None:
            return
        if synced["status"] != "True":
            cause = synced
        else:
            cause = reloaded or {"status": "False", "reason": "ReloadPending",
                                 "message": "the file is in place; the predictors are being told"}
        ok = cause is reloaded and reloaded["status"] == "True"
        ready = self.condition("Ready")
        if ready is None:
            ready = {"type": "Ready"}
            self.status["conditions"].insert(0, ready)
        if ready.get("status") != str(ok):
            ready["lastTransitionTime"] = now()
        ready.update(status=str(ok), reason="Ready" if ok else cause["reason"],
                     message="the voice is on the volume and every ready predictor was told" if ok
                     else cause["message"], observedGeneration=self.generation)

    def update(self, **fields) -> None:
        self.status.update(fields)

    def publish(self) -> None:
        self._api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": self.status})
