"""The operator image against the test control plane, sharing /voices with the predictor container: a
Voice with a ConfigMap source becomes Ready, its file appears, and the predictor lists it and speaks
with it. The operator runs as the chart's pod spec says (manifests/operator-deployment.yaml), with its
ServiceAccount's token and so the chart's RBAC, as uid 1000, on a read-only root file system with every
capability dropped."""

from __future__ import annotations

import json
import os

import httpx
import pytest
import yaml

from tests.support.containers import (
    API_KEY,
    APPUSER,
    docker,
    ffprobe,
    pod_docker_args,
    run_container,
    service_account_mount,
    wait_http,
)
from tests.support.controlplane import REPO_ROOT, free_port, unique_name
from tests.support.manifests import OPERATOR_NS, OPERATOR_SA, apply_manifests

MAX_IMAGE_BYTES = 300 * 1024 * 1024  # the bound: slim, no torch

pytestmark = pytest.mark.images


@pytest.fixture(scope="module")
def cluster(control_plane):
    """The control plane with manifests/ applied as a user would (the CRDs, the operator's RBAC)."""
    return apply_manifests(control_plane)


@pytest.fixture(scope="module")
def operator(images, cluster, predictor, tmp_path_factory):
    """The operator container as manifests/operator-deployment.yaml (the chart's render) describes its
    pod: that environment, user, read-only root and dropped capabilities; its ServiceAccount's token
    where a kubelet puts it; the predictor container's /voices directory as its claim. It shares the
    host's network, where the control plane listens on loopback."""
    scratch = tmp_path_factory.mktemp("operator")
    deployment = yaml.safe_load((REPO_ROOT / "manifests/operator-deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == OPERATOR_SA
    os.chown(predictor.voices, APPUSER, APPUSER)  # the claim, as the chart's fsGroup makes it
    liveness = free_port()
    args = pod_docker_args(
        pod, scratch, binds={"voices": predictor.voices},
        secret_files={"chatterbox-api-key": {"api-key": API_KEY.encode()}},
        # Host network: another port than the pod's own 8080, and a peering object of this tier's own
        # (the operator tier's process may use the default one).
        env={"VOICE_OPERATOR_LIVENESS_PORT": str(liveness), "VOICE_OPERATOR_PEERING": "image-tier"})
    args += service_account_mount(cluster.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA), scratch,
                                  cluster.port)
    container = run_container(images.operator, docker_args=("--network", "host", *args))
    try:
        wait_http(f"http://127.0.0.1:{liveness}/healthz")
        yield container
    finally:
        container.remove()


def test_the_operator_image_is_slim_non_root_and_has_no_torch(images):
    size = int(docker("image", "inspect", "-f", "{{.Size}}", images.operator))
    assert size < MAX_IMAGE_BYTES, f"{size / 2**20:.0f} MiB"
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", images.operator))
    assert config["User"] == f"{APPUSER}:{APPUSER}"
    assert config["Entrypoint"] == ["python", "-m", "voice_operator"]
    found = docker("run", "--rm", "--entrypoint", "python", images.operator, "-c",
                   "import importlib.util as u; "
                   "print(u.find_spec('torch'), u.find_spec('voice_operator').name)")
    assert found.split() == ["None", "voice_operator"]


def test_a_configmap_voice_becomes_ready_and_the_predictor_container_speaks_with_it(
        cluster, operator, predictor, voice_bytes, tmp_path):
    namespace = unique_name("images")
    cluster.kubectl("create", "namespace", namespace)
    source = tmp_path / "voice.pth"
    source.write_bytes(voice_bytes)
    cluster.kubectl("create", "configmap", "studio-voice", "-n", namespace, f"--from-file=voice.pth={source}")
    # The predictor container, as the endpoint controller would list its pod behind the Service.
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "chatterbox-predictor-1", "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": "chatterbox-predictor"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [predictor.container.ip], "conditions": {"ready": True}}]}))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "tts.chatterbox-k8s.io/v1alpha1", "kind": "Voice", "metadata": {"name": "studio"},
        "spec": {"voiceId": "studio_voice", "inferenceService": "chatterbox",
                 "source": {"configMap": {"name": "studio-voice", "key": "voice.pth"}}}}))
    try:
        cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "voice/studio", "--timeout=120s")
        _check_synced_and_spoken(cluster, namespace, predictor, voice_bytes, tmp_path)
    finally:
        # While the operator still runs to lift its finalizer: a Voice left behind would hold the CRD in
        # Terminating when a later tier uninstalls the chart.
        cluster.kubectl("delete", "-n", namespace, "voice/studio", "--timeout=60s")
    assert not (predictor.voices / "studio_voice.pth").exists()  # deleting the Voice removed its file


def _check_synced_and_spoken(cluster, namespace, predictor, voice_bytes, tmp_path):
    """The Voice's file is on the shared volume, the predictor was told, and it speaks with the voice."""
    voice = json.loads(cluster.kubectl("get", "-n", namespace, "voice/studio", "-o", "json").stdout)
    reloaded = next(c for c in voice["status"]["conditions"] if c["type"] == "PredictorsReloaded")
    assert reloaded["status"] == "True" and "1 ready replicas reloaded" in reloaded["message"]
    written = predictor.voices / "studio_voice.pth"
    assert written.read_bytes() == voice_bytes and written.stat().st_uid == APPUSER

    headers = predictor.headers
    assert "studio_voice.pth" in httpx.get(f"{predictor.url}/voices", headers=headers).json()
    resp = httpx.post(f"{predictor.url}/tts/generate", headers=headers, timeout=300,
                      json={"text": "Synced by the operator.", "voice_id": "studio_voice", "seed": 5,
                            "max_new_tokens": 20})
    assert resp.status_code == 200, resp.text
    (tmp_path / "studio.wav").write_bytes(resp.content)
    assert int(ffprobe(tmp_path / "studio.wav")["streams"][0]["nb_read_frames"]) > 0
