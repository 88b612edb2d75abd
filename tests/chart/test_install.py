"""Every value set against the real API server: server-side dry-run, then install, upgrade and uninstall,
after which nothing of the release may be left. Also that the generated InferenceService CRD really
validates (a wrong field type is refused), so the InferenceServices accepted here would be on KServe.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import yaml

from tests.support.controlplane import KubectlError, unique_name
from tests.support.helm import CHART

from .conftest import VALUE_SETS, set_args

GONE_TIMEOUT = 60  # CRDs take a few seconds to go: the API server first deletes their objects (see
# UNCACHED_CRDS in tests/support/controlplane.py for when it took minutes)


def _objects(docs: list[dict], namespace: str) -> list[tuple[str, str, str | None]]:
    """(kind, name, namespace) of each rendered object; cluster-scoped ones have no namespace."""
    out = []
    for doc in docs:
        meta = doc["metadata"]
        out.append((doc["kind"], meta["name"], meta.get("namespace")))
    return out


def _release_ns(kube) -> str:
    namespace = unique_name("chart")
    kube.kubectl("create", "namespace", namespace)
    return namespace


def _stand_in_for_the_pvc_protection_controller(kube, namespace: str, names: list[str]) -> None:
    """A deleted claim keeps its kubernetes.io/pvc-protection finalizer until the controller-manager sees
    that no pod uses it; none runs here (and no pod ever ran), so the test removes it as it would."""
    for name in names:
        kube.kubectl("patch", "pvc", name, "-n", namespace, "--type=merge", "-p",
                     '{"metadata":{"finalizers":null}}', check=False)


def _leftovers(kube, release: str, objects) -> list[str]:
    left = []
    for kind, name, namespace in objects:
        where = ["-n", namespace] if namespace else []
        if kube.kubectl("get", kind, name, *where, check=False).returncode == 0:
            left.append(f"{kind} {namespace or ''}/{name}")
    for kind in sorted({kind for kind, _, _ in objects} - {"CustomResourceDefinition"}):
        found = kube.kubectl("get", kind, "--all-namespaces", "-l", f"app.kubernetes.io/instance={release}",
                             "-o", "name", check=False)
        left += found.stdout.split()
    crds = kube.kubectl("get", "crd", "-l", f"app.kubernetes.io/instance={release}", "-o", "name")
    return left + crds.stdout.split()


def _why_crds_stay(kube, release: str) -> str:
    """The Terminating condition of the release's CRDs that are still there: the API server's reason."""
    found = kube.kubectl("get", "crd", "-l", f"app.kubernetes.io/instance={release}", "-o", "json",
                         check=False)
    if found.returncode != 0:
        return ""
    reasons = [f"{crd['metadata']['name']}: {c.get('reason')}: {c.get('message')}"
               for crd in json.loads(found.stdout)["items"]
               for c in crd.get("status", {}).get("conditions", []) if c["type"] == "Terminating"]
    return "\n" + "\n".join(reasons) if reasons else ""


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_value_set_passes_a_server_side_dry_run(kube, helm, name):
    namespace = _release_ns(kube)
    rendered = helm.template(*set_args(name), "--set", "huggingface.existingSecret=hf",
                             release=unique_name("dry"), namespace=namespace)
    kube.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=rendered)


def test_the_api_server_refuses_an_inference_service_with_a_wrong_field_type(kube, helm):
    namespace = _release_ns(kube)
    docs = helm.render(release=unique_name("bad"), namespace=namespace)
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    kube.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(isvc))
    isvc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "eighty-eighty"
    with pytest.raises(KubectlError) as refused:
        kube.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(isvc))
    assert "spec.predictor.containers[0].ports[0].containerPort" in refused.value.stderr
    assert "expected numeric" in refused.value.stderr  # server-side apply's typed patch, from the schema


@pytest.mark.parametrize("name", VALUE_SETS)
def test_install_upgrade_and_uninstall_leave_nothing_of_the_release(kube, cluster_helm, helm, name):
    namespace, release = _release_ns(kube), unique_name("tts")
    values = [*set_args(name), "--namespace", namespace]
    # --take-ownership: the CRDs may already be on the API server from `kubectl apply -f manifests/`
    # (the operator tier, in the same session); a cluster has one copy of each, and this release adopts it.
    installed = cluster_helm.run("install", release, str(CHART), *values, "--take-ownership").stdout
    secret_name = f"{release}-chatterbox-tts-api-key"
    key_before = _api_key(kube, namespace, secret_name, name)
    # NOTES.txt says how to read the key, never the key itself.
    assert f"get secret {secret_name} -o jsonpath" in installed and "/tts/generate" in installed
    assert key_before is None or key_before not in installed
    # Its first Voice goes to a namespace the operator watches, and names the predictor only from its own.
    if name == "namespaced-watch":
        assert "kubectl -n voices-a apply" in installed and "inferenceService:" not in installed
    elif name != "operator-off":
        assert f"kubectl -n {namespace} apply" in installed and "inferenceService: chatterbox" in installed

    cluster_helm.run("upgrade", release, str(CHART), *values, "--set", "predictor.settings.queueSize=32",
                     "--set", "voices.annotations.changed=yes")
    assert _queue_size(kube, namespace, name) == "32"
    assert _api_key(kube, namespace, secret_name, name) == key_before, "the generated key changed on upgrade"
    if VALUE_SETS[name] is None or "existingClaim" not in VALUE_SETS[name].read_text():
        claim = json.loads(kube.kubectl("get", "pvc", f"{release}-chatterbox-tts-voices", "-n", namespace,
                                        "-o", "json").stdout)
        assert claim["metadata"]["annotations"]["changed"] == "yes"

    manifest = cluster_helm.run("get", "manifest", release, "-n", namespace).stdout
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    objects = _objects(docs, namespace)
    # No --wait: it would wait on the claim's finalizer, which only the stand-in below removes.
    cluster_helm.run("uninstall", release, "--namespace", namespace)
    _stand_in_for_the_pvc_protection_controller(
        kube, namespace, [n for kind, n, _ in objects if kind == "PersistentVolumeClaim"])
    deadline = time.monotonic() + GONE_TIMEOUT
    while (left := _leftovers(kube, release, objects)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"left behind by helm uninstall: {left}{_why_crds_stay(kube, release)}"


def _api_key(kube, namespace: str, secret: str, value_set: str) -> str | None:
    found = kube.kubectl("get", "secret", secret, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    key = base64.b64decode(json.loads(found.stdout)["data"]["api-key"]).decode()
    assert len(key) >= 16, f"{value_set}: a short API key"
    return key


def _queue_size(kube, namespace: str, value_set: str) -> str:
    kind = "deployment/chatterbox-predictor" if "deployment" in value_set else "inferenceservice/chatterbox"
    body = json.loads(kube.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)
    pod = body["spec"]["template"]["spec"] if kind.startswith("deployment") else body["spec"]["predictor"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    return env["CHATTERBOX_QUEUE_SIZE"]
