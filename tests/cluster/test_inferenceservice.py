"""The chart's default mode on the node: the predictor as a KServe InferenceService, reconciled by
KServe's own controller in RawDeployment mode (tests/support/kserve.py) into a Deployment and Service,
with KServe's webhooks admitting the InferenceService and its pods. A ConfigMap Voice reaches the pod
KServe made, and the predictor speaks with it through KServe's Service.

KServe is removed at the end of the module, webhooks first: its pod webhook judges every pod with the
serving.kserve.io/inferenceservice label, which the Deployment mode's pods carry too.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support import kserve

from . import workloads as w
from .conftest import API_KEY, Release, uninstall

pytestmark = pytest.mark.cluster

NAMESPACE = "chatterbox-isvc"


@pytest.fixture(scope="module")
def kserve_controller(cluster):
    """KServe, removed at the end: its pod webhook would otherwise judge every later pod that carries
    the serving.kserve.io/inferenceservice label, the Deployment mode's included."""
    kserve.install(cluster)
    yield cluster
    kserve.uninstall(cluster)


@pytest.fixture(scope="module")
def isvc_release(kserve_controller, node_helm, image_args):
    """The chart as `helm install` gives it by default, an InferenceService, on the CPU profile."""
    rel = Release(node_helm, NAMESPACE, "tts-isvc", image_args)
    node_helm.run("install", *rel.install_args(), "--set", "predictor.mode=InferenceService",
                  "--create-namespace")
    try:
        yield rel
    finally:
        uninstall(node_helm, rel)


def test_kserve_reconciles_the_inference_service_into_a_ready_predictor(cluster, isvc_release, voice_bytes,
                                                                        tmp_path):
    cluster.kubectl("wait", "-n", NAMESPACE, "inferenceservice/chatterbox", "--for=condition=Ready",
                    "--timeout=600s", timeout=660)
    isvc = w.get(cluster, NAMESPACE, "inferenceservice/chatterbox")
    # KServe's defaulting webhook ran (the chart sets no CPU limit; KServe's defaults add one), its
    # controller recorded the mode, and made the Deployment and Service itself.
    assert "cpu" in isvc["spec"]["predictor"]["containers"][0]["resources"]["limits"]
    assert isvc["status"]["deploymentMode"] == "Standard"
    deployment = w.get(cluster, NAMESPACE, "deployment/chatterbox-predictor")
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"
    (pod,) = w.pods(cluster, NAMESPACE, "serving.kserve.io/inferenceservice=chatterbox")
    assert w.ready(pod)

    voice = w.apply_voice(cluster, NAMESPACE, "gamma", "voice_gamma", voice_bytes, tmp_path)
    assert "1 ready replicas reloaded" in w.reloaded(voice)
    w.show(cluster)
    port = w.service_port(cluster, NAMESPACE)
    with cluster.port_forward(NAMESPACE, "service/chatterbox-predictor", port) as url:
        listed = httpx.get(f"{url}/voices", headers={"X-API-Key": API_KEY}, timeout=30).json()
        assert "voice_gamma.pth" in listed
        assert w.speak(url, "voice_gamma") > 0
    cluster.kubectl("delete", "voices", "--all", "-n", NAMESPACE, "--timeout=120s", timeout=150)


def test_the_inference_service_takes_an_upgrade_and_its_uninstall_finishes(cluster, isvc_release):
    # KServe's validating webhook checks every update against the mode it recorded: with the legacy
    # annotation (RawDeployment) this upgrade, and the finalizer's removal below, were refused.
    isvc_release.helm.run("upgrade", *isvc_release.install_args(), "--set", "predictor.mode=InferenceService",
                          "--set", "predictor.settings.queueSize=8")
    cluster.kubectl("wait", "-n", NAMESPACE, "inferenceservice/chatterbox", "--for=condition=Ready",
                    "--timeout=600s", timeout=660)
    container = w.get(cluster, NAMESPACE, "deployment/chatterbox-predictor")["spec"]["template"]["spec"][
        "containers"][0]
    assert {"name": "CHATTERBOX_QUEUE_SIZE", "value": "8"} in container["env"]
    isvc_release.helm.run("uninstall", isvc_release.name, "-n", NAMESPACE, "--wait", "--timeout=180s",
                          timeout=240)
    # KServe removed its finalizer, and the garbage collector the Deployment KServe owned.
    assert cluster.kubectl("get", "-n", NAMESPACE, "inferenceservice/chatterbox",
                           check=False).returncode != 0
    deadline = time.monotonic() + 120
    while w.pods(cluster, NAMESPACE, "serving.kserve.io/inferenceservice=chatterbox"):
        assert time.monotonic() < deadline, "KServe's predictor pods outlived the InferenceService"
        time.sleep(2)
    gone = cluster.kubectl("get", "-n", NAMESPACE, "deployment/chatterbox-predictor", check=False)
    assert gone.returncode != 0
