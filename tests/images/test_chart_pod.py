"""The predictor container as the chart's pod runs it. No kubelet runs here, so the chart tier shows only
what the API server accepts; this test takes the pod spec the chart renders (plain Deployment mode, CPU)
and gives Docker the same container: its environment, its mounts (each volume a host directory owned
as fsGroup would make it), a read-only root file system, no capabilities, its user. Then it asks the
probes' paths and speaks, as the kubelet and a client would."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.support.containers import API_KEY, ffprobe, pod_docker_args, run_container, wait_http
from tests.support.controlplane import REPO_ROOT, free_port
from tests.support.helm import Helm

pytestmark = pytest.mark.images

CPU_VALUES = REPO_ROOT / "tests/chart/values/deployment-cpu.yaml"


def _pod_spec(tmp_path) -> tuple[dict, dict]:
    rendered = Helm(tmp_path / "helm-home").render(
        "--values", str(CPU_VALUES), "--set", f"apiKey.value={API_KEY}", namespace="pod")
    deployment = next(d for d in rendered
                      if d["kind"] == "Deployment" and d["metadata"]["name"] == "chatterbox-predictor")
    secrets = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Secret"}
    return deployment["spec"]["template"]["spec"], secrets


def test_the_predictor_serves_in_the_container_the_charts_pod_spec_describes(images, voice_bytes, tmp_path):
    pod, secrets = _pod_spec(tmp_path)
    spec, port = pod["containers"][0], free_port()
    secret_files = {name: {key: base64.b64decode(value) for key, value in secret["data"].items()}
                    for name, secret in secrets.items()}
    args = pod_docker_args(pod, tmp_path, secret_files=secret_files)
    assert "--read-only" in args and "--cap-drop=ALL" in args  # what this test is about
    args += ["-p", f"127.0.0.1:{port}:{spec['ports'][0]['containerPort']}"]
    url = f"http://127.0.0.1:{port}"
    container = run_container(images.predictor, *spec.get("args", []), docker_args=tuple(args))
    try:
        # The kubelet's view: the startup probe's path first (the model loads before the server
        # listens), then readiness.
        wait_http(f"{url}{spec['startupProbe']['httpGet']['path']}", timeout=600)
        assert httpx.get(f"{url}{spec['readinessProbe']['httpGet']['path']}").status_code == 200
        headers = {"X-API-Key": API_KEY}
        voices = tmp_path / "volumes" / "voices"
        (voices / "chart_voice.pth").write_bytes(voice_bytes)  # as the operator would put it
        assert "chart_voice.pth" in httpx.post(f"{url}/voices/reload", headers=headers).json()["voices"]
        resp = httpx.post(f"{url}/tts/generate", headers=headers, timeout=300, json={
            "text": "Spoken as the chart runs me.", "voice_id": "chart_voice", "max_new_tokens": 20})
        assert resp.status_code == 200, resp.text
        (tmp_path / "chart.wav").write_bytes(resp.content)
        assert int(ffprobe(tmp_path / "chart.wav")["streams"][0]["nb_read_frames"]) > 0
        # Uploads write to the claim, under the read-only root file system.
        upload = httpx.post(f"{url}/voices", headers=headers, files={"file": ("uploaded.pth", voice_bytes)})
        assert upload.status_code == 201, upload.text
        assert "uploaded.pth" in httpx.get(f"{url}/voices", headers=headers).json()
    finally:
        container.remove()
