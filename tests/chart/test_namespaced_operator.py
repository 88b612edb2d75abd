"""The chart's namespaced RBAC is enough for the operator, and no more: installed with two watched
namespaces, the real operator (under the chart's ServiceAccount's token) syncs a Voice in one of them,
while that ServiceAccount may read nothing in a third namespace nor anything cluster-wide; a voice id
claimed from that third namespace fails once, saying why, instead of being retried for ever.
"""

from __future__ import annotations

import json
import time

from chatterbox_voicefile.claims import Owner, write_claim

from tests.operator.conftest import OperatorProcess
from tests.support.controlplane import unique_name
from tests.support.helm import CHART

READY_TIMEOUT = 60  # a sync from a ConfigMap takes about a second; the rest is headroom for two busy cores


def _can(kube, account: str, *args: str) -> bool:
    result = kube.kubectl("auth", "can-i", "--as", account, *args, check=False)
    return result.stdout.strip() == "yes"


def _phase(kube, namespace: str, name: str) -> str | None:
    body = json.loads(kube.kubectl("get", "voice", name, "-n", namespace, "-o", "json").stdout)
    return (body.get("status") or {}).get("phase")


def test_an_operator_watching_two_namespaces_syncs_a_voice_there_and_reads_nothing_elsewhere(
        kube, cluster_helm, random_checkpoint, tmp_path):
    a, b, c, home = (unique_name(p) for p in ("watched-a", "watched-b", "unwatched", "tts"))
    for namespace in (a, b, c, home):
        kube.kubectl("create", "namespace", namespace)
    release = unique_name("ns")
    # The CRDs may be on the API server already (kubectl apply -f manifests/): the release adopts them.
    cluster_helm.run("install", release, str(CHART), "--namespace", home, "--take-ownership",
                     "--set-json", f"operator.watchNamespaces={json.dumps([a, b])}",
                     "--set", "predictor.enabled=false")
    account_name, peering = f"{release}-chatterbox-tts-operator", f"{release}-chatterbox-tts-operator"
    account = f"system:serviceaccount:{home}:{account_name}"

    assert _can(kube, account, "get", "secrets", "-n", a)
    assert _can(kube, account, "get", "configmaps", "-n", b)
    assert not _can(kube, account, "get", "secrets", "-n", c)
    assert not _can(kube, account, "get", "configmaps", "-n", c)
    assert not _can(kube, account, "list", "voices.tts.chatterbox-k8s.io", "--all-namespaces")
    assert not _can(kube, account, "list", "namespaces")

    operator = OperatorProcess(kube.service_account_kubeconfig(home, account_name), tmp_path / "voices",
                               tmp_path)
    (tmp_path / "voices").mkdir()
    operator.env.update(VOICE_OPERATOR_NAMESPACES=f"{a},{b}", VOICE_OPERATOR_PEERING=peering)
    voice = unique_name("voice")
    operator.start()
    try:
        kube.kubectl("create", "configmap", voice, "-n", a,
                     f"--from-file=voice.pth={random_checkpoint('turbo') / 'conds.pt'}")
        kube.kubectl("apply", "-n", a, "-f", "-", input=json.dumps({
            "apiVersion": "tts.chatterbox-k8s.io/v1alpha1", "kind": "Voice", "metadata": {"name": voice},
            "spec": {"source": {"configMap": {"name": voice, "key": "voice.pth"}}}}))
        deadline = time.monotonic() + READY_TIMEOUT
        while (phase := _phase(kube, a, voice)) != "Ready":
            assert time.monotonic() < deadline, f"the Voice stayed {phase}:\n{operator.log()[-4000:]}"
            time.sleep(0.5)
        assert (tmp_path / "voices" / f"{voice}.pth").read_bytes() == \
            (random_checkpoint("turbo") / "conds.pt").read_bytes()
        log = operator.log()
        assert "Forbidden" not in log and " 403" not in log, log[-4000:]

        # A voice id claimed by a Voice in a namespace it may not read (left from a wider watch): the
        # operator cannot tell whether that Voice is gone, and says so once instead of retrying for ever.
        write_claim(tmp_path / "voices", "held_elsewhere", Owner(c, "older", "0000-uid"), overwrite=False)
        second = unique_name("voice")
        kube.kubectl("apply", "-n", a, "-f", "-", input=json.dumps({
            "apiVersion": "tts.chatterbox-k8s.io/v1alpha1", "kind": "Voice", "metadata": {"name": second},
            "spec": {"voiceId": "held_elsewhere",
                     "source": {"configMap": {"name": voice, "key": "voice.pth"}}}}))
        deadline = time.monotonic() + READY_TIMEOUT
        while (phase := _phase(kube, a, second)) != "Failed":
            assert time.monotonic() < deadline, f"the Voice stayed {phase}:\n{operator.log()[-4000:]}"
            time.sleep(0.5)
        body = json.loads(kube.kubectl("get", "voice", second, "-n", a, "-o", "json").stdout)
        assert "may not read" in json.dumps(body["status"]) and f"{c}/older" in json.dumps(body["status"])
        assert not (tmp_path / "voices" / "held_elsewhere.pth").exists()
        kube.kubectl("delete", "voice", second, "-n", a, "--timeout=60s")
        # Deleted while the operator runs, which removes its finalizer: otherwise the CRD (deleted with
        # the release below) would wait on this Voice for ever.
        kube.kubectl("delete", "voice", voice, "-n", a, "--timeout=60s")
    finally:
        operator.stop()
        cluster_helm.run("uninstall", release, "--namespace", home)
    # The release's claim keeps its protection finalizer (no controller-manager here): release it, as in
    # test_install.py, and wait for the CRDs, so that later tiers can apply them afresh.
    kube.kubectl("patch", "pvc", f"{release}-chatterbox-tts-voices", "-n", home, "--type=merge", "-p",
                 '{"metadata":{"finalizers":null}}', check=False)
    kube.kubectl("wait", "--for=delete", "crd", "-l", f"app.kubernetes.io/instance={release}",
                 "--timeout=60s")
