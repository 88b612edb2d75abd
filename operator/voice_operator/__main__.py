"""`python -m voice_operator`: the Voice operator, configured from VOICE_OPERATOR_* variables.

Credentials: in a pod, its ServiceAccount; elsewhere, $KUBECONFIG (or ~/.kube/config). kopf logs in
the same way (through the kubernetes client it finds installed).
"""

from __future__ import annotations

import logging
import random
import time

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .handlers import build_registry
from .reconcile import Context
from .settings import OperatorSettings
from .store import VoiceStore


def _post_event(body, type: str, reason: str, message: str) -> None:
    kopf.event(body, type=type, reason=reason, message=message[:1024])  # events cap messages at 1 KiB


def start_priority() -> int:
    """A peering priority that grows with the start time, plus random digits to break ties.

    Replicas of one Deployment share their settings, and kopf pauses every operator that sees a peer of
    higher or equal priority, so each needs its own. The newest wins: a replica restarted after a crash
    outranks the dead one's record at once instead of waiting for it to expire (60 s), and a rolling
    update hands over to the new version. Milliseconds x 1000 stays under 2**53 (a JSON number).
    """
    return int(time.time() * 1000) * 1000 + random.SystemRandom().randrange(1000)


def ensure_peering(api: client.ApiClient, settings: OperatorSettings) -> None:
    """Creates the peering object(s) if missing: kopf's mandatory peering refuses to start without them,
    and shipping them in manifests/ would fail a first `kubectl apply` (their CRD is not known yet)."""
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": settings.peering}}
    try:
        if not settings.namespaces:
            custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                                {**body, "kind": "ClusterKopfPeering"})
        for namespace in settings.namespaces:
            if not any(c in namespace for c in "*?[!"):  # a glob names no namespace to create it in
                custom.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings",
                                                       {**body, "kind": "KopfPeering"})
    except ApiException as exc:
        if exc.status != 409:  # 409: it exists, which is all we need
            raise


def main() -> None:
    settings = OperatorSettings.from_env()
    # kopf's formatter prefixes each line about a Voice with its namespace/name (a field in JSON).
    kopf.configure(log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
                   log_prefix=True)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.ApiClient()
    if not settings.standalone:
        ensure_peering(api, settings)
    ctx = Context(settings, VoiceStore(settings.voices_dir), api, _post_event)
    priority = settings.priority or start_priority()
    logging.getLogger(__name__).info(
        "serving Voices in %s, files in %s, %s", ", ".join(settings.namespaces) or "all namespaces",
        settings.voices_dir, "standalone" if settings.standalone else
        f"peering {settings.peering!r} with priority {priority}")
    kopf.run(
        registry=build_registry(settings),
        memo=kopf.Memo(ctx=ctx),
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port
        else None,
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering,
        priority=priority,
    )


if __name__ == "__main__":
    main()
