"""The chart on a real node, in the order a user lives it: install; the pods turn Ready through their own
probes; a Voice from a ConfigMap lands on the claim and the predictor speaks with it; a replaced
predictor pod serves it again from the claim; an upgrade to two replicas reloads both; uninstall leaves
nothing but what the chart keeps. Each test starts from where the one before it left the release.
"""

from __future__ import annotations

import time

import httpx
import pytest
import yaml

from . import workloads as w
from .workloads import OPERATOR, PREDICTOR

pytestmark = pytest.mark.cluster

GONE_TIMEOUT_S = 120  # the provisioner removes the directory through a helper pod: seconds


# The first test pays for its fixtures: on a cold machine the images build (~6 min), the node starts
# (~1 min) and the predictor image moves into it (~2 min) before the release installs.
@pytest.mark.timeout(1800)
def test_the_operator_and_predictor_pods_become_ready_through_their_own_probes(cluster, release):
    started = time.monotonic()
    w.rollout(cluster, release.namespace, OPERATOR)
    w.rollout(cluster, release.namespace, PREDICTOR)
    print(f"both Deployments rolled out {time.monotonic() - started:.0f} s after helm install returned")
    (predictor,) = w.pods(cluster, release.namespace, PREDICTOR)
    (operator,) = w.pods(cluster, release.namespace, OPERATOR)
    for pod in (predictor, operator):
        assert w.ready(pod) and pod["spec"]["nodeName"] == "chatterbox-node"
        (status,) = pod["status"]["containerStatuses"]
        assert status["restartCount"] == 0, status
    container = predictor["spec"]["containers"][0]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= container.keys()
    # The claim was bound by the default StorageClass, on this node.
    (claim,) = w.get(cluster, release.namespace, "pvc")["items"]
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == "local-path"
    # Without the key the predictor refuses, through the pod's own port.
    with cluster.port_forward(release.namespace, f"pod/{predictor['metadata']['name']}", 8080) as url:
        assert httpx.get(f"{url}/voices", timeout=30).status_code == 401


def test_a_configmap_voice_lands_on_the_claim_and_the_predictor_speaks_with_it(
        cluster, release, voice_bytes, tmp_path):
    voice = w.apply_voice(cluster, release.namespace, "alpha", "cloned_voice_alpha", voice_bytes, tmp_path)
    assert "1 ready replicas reloaded" in w.reloaded(voice)
    written = w.claim_dir(cluster, release.namespace) / "cloned_voice_alpha.pth"
    assert written.read_bytes() == voice_bytes
    assert written.stat().st_uid == 1000  # the operator's user wrote it
    w.show(cluster)
    (predictor,) = w.pods(cluster, release.namespace, PREDICTOR)
    assert "cloned_voice_alpha.pth" in w.listed(cluster, release.namespace, predictor["metadata"]["name"])
    port = w.service_port(cluster, release.namespace)
    with cluster.port_forward(release.namespace, "service/chatterbox-predictor", port) as url:
        assert w.speak(url, "cloned_voice_alpha") > 0


def test_a_replaced_predictor_pod_serves_the_voice_again_from_the_claim(cluster, release):
    (old,) = w.pods(cluster, release.namespace, PREDICTOR)
    cluster.kubectl("delete", "pod", "-n", release.namespace, old["metadata"]["name"], "--timeout=120s",
                    timeout=150)
    w.rollout(cluster, release.namespace, PREDICTOR)
    (new,) = w.pods(cluster, release.namespace, PREDICTOR)
    assert new["metadata"]["name"] != old["metadata"]["name"] and w.ready(new)
    assert "cloned_voice_alpha.pth" in w.listed(cluster, release.namespace, new["metadata"]["name"])
    with cluster.port_forward(release.namespace, f"pod/{new['metadata']['name']}", 8080) as url:
        assert w.speak(url, "cloned_voice_alpha") > 0


def test_an_upgrade_to_two_replicas_tells_both_to_reload(cluster, release, voice_bytes, tmp_path):
    release.helm.run("upgrade", *release.install_args(), "--set", "predictor.replicas=2")
    w.rollout(cluster, release.namespace, PREDICTOR)
    pods = w.pods(cluster, release.namespace, PREDICTOR)
    assert len(pods) == 2 and all(w.ready(p) for p in pods)
    # The EndpointSlice lists both before the operator is asked to reload them.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        slices = w.get(cluster, release.namespace, "endpointslices", "-l",
                      "kubernetes.io/service-name=chatterbox-predictor")["items"]
        ready = [e for s in slices for e in s.get("endpoints") or [] if e["conditions"].get("ready")]
        if len(ready) == 2:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the predictor's EndpointSlices never listed both ready pods: {slices}")
    voice = w.apply_voice(cluster, release.namespace, "beta", "voice_beta", voice_bytes, tmp_path)
    assert "2 ready replicas reloaded" in w.reloaded(voice)
    w.show(cluster)
    for pod in pods:
        assert {"cloned_voice_alpha.pth", "voice_beta.pth"} <= set(
            w.listed(cluster, release.namespace, pod["metadata"]["name"]))


def test_uninstall_leaves_nothing_of_the_release_but_what_the_chart_keeps(cluster, release):
    claim_dir = w.claim_dir(cluster, release.namespace)
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
    assert not w.pods(cluster, release.namespace, "app.kubernetes.io/instance=" + release.name)


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
