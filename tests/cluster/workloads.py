"""What the cluster tier does with the chart's workloads, through kubectl as a user would: pods and their
readiness, Voices from ConfigMaps, the claim's directory on the node, and the predictor's API through
`kubectl port-forward`."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import httpx
import yaml

from .conftest import API_KEY

ROLLOUT_TIMEOUT = "600s"  # a predictor pod builds its random checkpoint and loads it: about a minute
PREDICTOR = "app.kubernetes.io/component=predictor"
OPERATOR = "app.kubernetes.io/component=operator"


def get(cluster, namespace: str, *what: str) -> dict:
    """`kubectl get WHAT -o json`, parsed."""
    return json.loads(cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)


def pods(cluster, namespace: str, selector: str) -> list[dict]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def rollout(cluster, namespace: str, selector: str) -> None:
    name = cluster.kubectl("get", "deployment", "-n", namespace, "-l", selector, "-o", "name").stdout.strip()
    cluster.kubectl("rollout", "status", "-n", namespace, name, f"--timeout={ROLLOUT_TIMEOUT}", timeout=660)


def show(cluster) -> None:
    """What a user would look at: printed into the test's output (the note quotes it)."""
    print(cluster.kubectl("get", "pods,voices,pvc", "-A", "-o", "wide").stdout)


def apply_voice(cluster, namespace: str, name: str, voice_id: str, voice: bytes, tmp_path) -> dict:
    """A ConfigMap holding `voice`, a Voice naming it; waits until the Voice is Ready and returns it."""
    source = tmp_path / f"{name}.pth"
    source.write_bytes(voice)
    cluster.kubectl("create", "configmap", f"{name}-voice", "-n", namespace,
                    f"--from-file=voice.pth={source}")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "tts.chatterbox-k8s.io/v1alpha1", "kind": "Voice", "metadata": {"name": name},
        "spec": {"voiceId": voice_id, "inferenceService": "chatterbox",
                 "source": {"configMap": {"name": f"{name}-voice", "key": "voice.pth"}}}}))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"voice/{name}", "--timeout=180s",
                    timeout=200)
    return get(cluster, namespace, f"voice/{name}")


def reloaded(voice: dict) -> str:
    condition = next(c for c in voice["status"]["conditions"] if c["type"] == "PredictorsReloaded")
    assert condition["status"] == "True", condition
    return condition["message"]


def claim_dir(cluster, namespace: str):
    """The claim's directory on the node, as local-path-provisioner made it (the PV's hostPath)."""
    (claim,) = get(cluster, namespace, "pvc")["items"]
    volume = json.loads(cluster.kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
    return Path(volume["spec"]["hostPath"]["path"])


def speak(url: str, voice_id: str) -> float:
    """The plan's /tts/generate with `voice_id`: a WAV that decodes; returns its duration in seconds."""
    resp = httpx.post(f"{url}/tts/generate", headers={"X-API-Key": API_KEY}, timeout=300,
                      json={"text": "Spoken inside a pod.", "voice_id": voice_id, "seed": 3,
                            "max_new_tokens": 20})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("audio/wav")
    with wave.open(io.BytesIO(resp.content)) as wav:
        assert wav.getframerate() == 24000 and wav.getnchannels() == 1
        frames = wav.getnframes()
        assert frames > 0
        return frames / wav.getframerate()


def service_port(cluster, namespace: str) -> int:
    """The predictor Service's port (80, as KServe's own Service has it; the pods listen on 8080)."""
    return get(cluster, namespace, "service/chatterbox-predictor")["spec"]["ports"][0]["port"]


def listed(cluster, namespace: str, pod: str) -> list[str]:
    with cluster.port_forward(namespace, f"pod/{pod}", 8080) as url:
        resp = httpx.get(f"{url}/voices", headers={"X-API-Key": API_KEY}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()
