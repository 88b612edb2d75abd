"""The chart's default mode on the node: the predictor as a KServe InferenceService, reconciled by
KServe's own controller in RawDeployment mode (tests/support/kserve.py) into a Deployment and Service,
with KServe's webhooks admitting the InferenceService and its pods. A ConfigMap Voice reaches the pod
KServe made, and the predictor speaks with it through KServe's Service.

Runs after test_chart_on_node.py (file order): KServe's pod webhook watches every pod with the
serving.kserve.io/inferenceservice label, which the Deployment mode's pods carry too.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support import kserve

from .conftest import API_KEY, Release
from .test_chart_on_node import _apply_voice, _get, _pods, _ready, _reloaded, _service_port, _show, _speak

pytestmark = pytest.mark.cluster

NAMESPACE = "chatterbox-isvc"


@pytest.fixture(scope="module")
def kserve_controller(cluster):
    kserve.install(cluster)
    return cluster


@pytest.fixture(scope="module")
def isvc_release(kserve_controller, node_helm, image_args):
    """The chart as `helm install` gives it by default, an InferenceService, on the CPU profile."""
    rel = Release(node_helm, NAMESPACE, "tts-isvc", image_args)
    node_helm.run("install", *rel.install_args(), "--set", "predictor.mode=InferenceService",
                  "--create-namespace")
    try:
        yield rel
    finally:
        node_helm.run("uninstall", rel.name, "-n", NAMESPACE, "--wait", "--timeout=180s", check=False,
                      timeout=240)


def test_kserve_reconciles_the_inference_service_into_a_ready_predictor(cluster, isvc_release, voice_bytes,
                                                                        tmp_path):
    cluster.kubectl("wait", "-n", NAMESPACE, "inferenceservice/chatterbox", "--for=condition=Ready",
                    "--timeout=600s", timeout=660)
    isvc = _get(cluster, NAMESPACE, "inferenceservice/chatterbox")
    # KServe's defaulting webhook ran, and its controller made the Deployment and Service itself.
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode in ("RawDeployment", "Standard")
    deployment = _get(cluster, NAMESPACE, "deployment/chatterbox-predictor")
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"
    (pod,) = _pods(cluster, NAMESPACE, "serving.kserve.io/inferenceservice=chatterbox")
    assert _ready(pod)

    voice = _apply_voice(cluster, NAMESPACE, "gamma", "voice_gamma", voice_bytes, tmp_path)
    assert "1 ready replicas reloaded" in _reloaded(voice)
    _show(cluster)
    port = _service_port(cluster, NAMESPACE)
    with cluster.port_forward(NAMESPACE, "service/chatterbox-predictor", port) as url:
        listed = httpx.get(f"{url}/voices", headers={"X-API-Key": API_KEY}, timeout=30).json()
        assert "voice_gamma.pth" in listed
        assert _speak(url, "voice_gamma") > 0
    cluster.kubectl("delete", "voices", "--all", "-n", NAMESPACE, "--timeout=120s", timeout=150)
