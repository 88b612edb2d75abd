"""The chart on a real node, in the order a user lives it: install; the pods turn Ready through their own
probes; a Voice from a ConfigMap lands on the claim and the predictor speaks with it; a replaced
predictor pod serves it again from the claim; an upgrade to two replicas reloads both; uninstall leaves
nothing but what the chart keeps. Each test starts from where the one before it left the release.
"""

from __future__ import annotations

import io
import json
import time
import wave
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import API_KEY

pytestmark = pytest.mark.cluster

ROLLOUT_TIMEOUT = "600s"  # a predictor pod builds its random checkpoint and loads it: about a minute
PREDICTOR = "app.kubernetes.io/component=predictor"
OPERATOR = "app.kubernetes.io/component=operator"
GONE_TIMEOUT_S = 120  # the provisioner removes the directory through a helper pod: seconds


def _get(cluster, namespace: str, *what: str) -> dict:
    """`kubectl get WHAT -o json`, parsed."""
    return json.loads(cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)


def _pods(cluster, namespace: str, selector: str) -> list[dict]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _rollout(cluster, namespace: str, selector: str) -> None:
    name = cluster.kubectl("get", "deployment", "-n", namespace, "-l", selector, "-o", "name").stdout.strip()
    cluster.kubectl("rollout", "status", "-n", namespace, name, f"--timeout={ROLLOUT_TIMEOUT}", timeout=660)


def _show(cluster) -> None:
    """What a user would look at: printed into the test's output (the note quotes it)."""
    print(cluster.kubectl("get", "pods,voices,pvc", "-A", "-o", "wide").stdout)


def _apply_voice(cluster, namespace: str, name: str, voice_id: str, voice: bytes, tmp_path) -> dict:
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
    return _get(cluster, namespace, f"voice/{name}")


def _reloaded(voice: dict) -> str:
    condition = next(c for c in voice["status"]["conditions"] if c["type"] == "PredictorsReloaded")
    assert condition["status"] == "True", condition
    return condition["message"]


def _claim_dir(cluster, namespace: str):
    """The claim's directory on the node, as local-path-provisioner made it (the PV's hostPath)."""
    (claim,) = _get(cluster, namespace, "pvc")["items"]
    volume = json.loads(cluster.kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
    return Path(volume["spec"]["hostPath"]["path"])


def _speak(url: str, voice_id: str) -> float:
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


def _service_port(cluster, namespace: str) -> int:
    """The predictor Service's port (80, as KServe's own Service has it; the pods listen on 8080)."""
    return _get(cluster, namespace, "service/chatterbox-predictor")["spec"]["ports"][0]["port"]


def _listed(cluster, namespace: str, pod: str) -> list[str]:
    with cluster.port_forward(namespace, f"pod/{pod}", 8080) as url:
        resp = httpx.get(f"{url}/voices", headers={"X-API-Key": API_KEY}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()


def test_the_operator_and_predictor_pods_become_ready_through_their_own_probes(cluster, release):
    started = time.monotonic()
    _rollout(cluster, release.namespace, OPERATOR)
    _rollout(cluster, release.namespace, PREDICTOR)
    print(f"both Deployments rolled out {time.monotonic() - started:.0f} s after helm install returned")
    (predictor,) = _pods(cluster, release.namespace, PREDICTOR)
    (operator,) = _pods(cluster, release.namespace, OPERATOR)
    for pod in (predictor, operator):
        assert _ready(pod) and pod["spec"]["nodeName"] == "chatterbox-node"
        (status,) = pod["status"]["containerStatuses"]
        assert status["restartCount"] == 0, status
    container = predictor["spec"]["containers"][0]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= container.keys()
    # The claim was bound by the default StorageClass, on this node.
    (claim,) = _get(cluster, release.namespace, "pvc")["items"]
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == "local-path"
    # Without the key the predictor refuses, through the pod's own port.
    with cluster.port_forward(release.namespace, f"pod/{predictor['metadata']['name']}", 8080) as url:
        assert httpx.get(f"{url}/voices", timeout=30).status_code == 401


def test_a_configmap_voice_lands_on_the_claim_and_the_predictor_speaks_with_it(
        cluster, release, voice_bytes, tmp_path):
    voice = _apply_voice(cluster, release.namespace, "alpha", "cloned_voice_alpha", voice_bytes, tmp_path)
    assert "1 ready replicas reloaded" in _reloaded(voice)
    written = _claim_dir(cluster, release.namespace) / "cloned_voice_alpha.pth"
    assert written.read_bytes() == voice_bytes
    assert written.stat().st_uid == 1000  # the operator's user wrote it
    _show(cluster)
    (predictor,) = _pods(cluster, release.namespace, PREDICTOR)
    assert "cloned_voice_alpha.pth" in _listed(cluster, release.namespace, predictor["metadata"]["name"])
    port = _service_port(cluster, release.namespace)
    with cluster.port_forward(release.namespace, "service/chatterbox-predictor", port) as url:
        assert _speak(url, "cloned_voice_alpha") > 0


def test_a_replaced_predictor_pod_serves_the_voice_again_from_the_claim(cluster, release):
    (old,) = _pods(cluster, release.namespace, PREDICTOR)
    cluster.kubectl("delete", "pod", "-n", release.namespace, old["metadata"]["name"], "--timeout=120s",
                    timeout=150)
    _rollout(cluster, release.namespace, PREDICTOR)
    (new,) = _pods(cluster, release.namespace, PREDICTOR)
    assert new["metadata"]["name"] != old["metadata"]["name"] and _ready(new)
    assert "cloned_voice_alpha.pth" in _listed(cluster, release.namespace, new["metadata"]["name"])
    with cluster.port_forward(release.namespace, f"pod/{new['metadata']['name']}", 8080) as url:
        assert _speak(url, "cloned_voice_alpha") > 0


def test_an_upgrade_to_two_replicas_tells_both_to_reload(cluster, release, voice_bytes, tmp_path):
    release.helm.run("upgrade", *release.install_args(), "--set", "predictor.replicas=2")
    _rollout(cluster, release.namespace, PREDICTOR)
    pods = _pods(cluster, release.namespace, PREDICTOR)
    assert len(pods) == 2 and all(_ready(p) for p in pods)
    # The EndpointSlice lists both before the operator is asked to reload them.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        slices = _get(cluster, release.namespace, "endpointslices", "-l",
                      "kubernetes.io/service-name=chatterbox-predictor")["items"]
        ready = [e for s in slices for e in s.get("endpoints") or [] if e["conditions"].get("ready")]
        if len(ready) == 2:
            break
        time.sleep(1)
    voice = _apply_voice(cluster, release.namespace, "beta", "voice_beta", voice_bytes, tmp_path)
    assert "2 ready replicas reloaded" in _reloaded(voice)
    _show(cluster)
    for pod in pods:
        assert {"cloned_voice_alpha.pth", "voice_beta.pth"} <= set(
            _listed(cluster, release.namespace, pod["metadata"]["name"]))


def test_uninstall_leaves_nothing_of_the_release_but_what_the_chart_keeps(cluster, release):
    claim_dir = _claim_dir(cluster, release.namespace)
    # The README's order: Voices first, while the operator runs to remove their files and finalizers.
    cluster.kubectl("delete", "voices", "--all", "-n", release.namespace, "--timeout=120s", timeout=150)
    assert not (claim_dir / "voice_beta.pth").exists()
    manifest = release.helm.run("get", "manifest", release.name, "-n", release.namespace).stdout
    objects = [(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
               for d in yaml.safe_load_all(manifest) if d]
    release.helm.run("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout=180s",
                     timeout=240)
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline:
        left = _leftovers(cluster, release, objects)
        # The claim's volume goes too (reclaim policy Delete): its directory is removed by the
        # provisioner's helper pod.
        if not left and not claim_dir.exists():
            break
        time.sleep(2)
    assert not left, f"left behind by helm uninstall: {left}"
    assert not claim_dir.exists(), "the claim's directory is still on the node"
    assert not _pods(cluster, release.namespace, "app.kubernetes.io/instance=" + release.name)


def _leftovers(cluster, release, objects) -> list[str]:
    left = []
    for kind, name, namespace in objects:
        where = ["-n", namespace] if namespace else []
        if cluster.kubectl("get", kind, name, *where, check=False).returncode == 0:
            left.append(f"{kind} {namespace or ''}/{name}")
    # What controllers made from the release's objects (EndpointSlices carry their Service's labels).
    for kind in ("pods", "replicasets", "endpointslices"):
        found = cluster.kubectl("get", kind, "--all-namespaces", "-l",
                                f"app.kubernetes.io/instance={release.name}", "-o", "name", check=False)
        left += found.stdout.split()
    return left
