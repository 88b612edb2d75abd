"""`python -m voice_operator`: the Voice operator, configured from VOICE_OPERATOR_* variables.

Credentials: in a pod, its ServiceAccount; elsewhere, $KUBECONFIG (or ~/.kube/config). kopf logs in
the same way (through the kubernetes client it finds installed).
"""

from __future__ import annotations

import logging
import random

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .handlers import build_registry
from .reconcile import Context
from .settings import OperatorSettings
from .store import VoiceStore


def _post_event(body, type: str, reason: str, message: str) -> None:
    kopf.event(body, type=type, reason=reason, message=message[:1024])  # events cap messages at 1 KiB


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = OperatorSettings.from_env()
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.ApiClient()
    if not settings.standalone:
        ensure_peering(api, settings)
    ctx = Context(settings, VoiceStore(settings.voices_dir), api, _post_event)
    # Replicas of one Deployment share their settings; a random priority per process lets peering pick
    # exactly one of them to work (kopf pauses every operator that sees a peer of equal priority).
    priority = settings.priority or random.SystemRandom().randint(1, 2**31 - 1)
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
