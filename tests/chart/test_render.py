"""`helm lint` and `helm template` of every value set, read back as objects; no cluster needed."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.helm import CHART, KubectlError

from .conftest import VALUE_SETS, set_args


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict], kind: str) -> dict:
    found = _by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def _named(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in _by_kind(docs, kind) if d["metadata"]["name"] == name)


def _claims(pod: dict) -> set[str]:
    return {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}


def _env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_value_set_passes_strict_lint(helm, name):
    helm.run("lint", "--strict", str(CHART), *set_args(name))


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_is_named_within_63_characters_and_labelled_with_the_release(helm, name):
    release = ("long-release-name-" * 3)[:53]  # Helm's longest release name: the helpers must truncate
    for doc in helm.render(*set_args(name), release=release):
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == release


def test_the_defaults_render_a_kserve_predictor_an_operator_for_the_release_namespace_and_a_volume(helm):
    docs = helm.render(namespace="speech")
    isvc = _one(docs, "InferenceService")
    assert isvc["metadata"]["name"] == "chatterbox"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    container = isvc["spec"]["predictor"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = _env(container)
    assert env["STORAGE_URI"] == "hf://ResembleAI/chatterbox-turbo"
    assert env["CHATTERBOX_API_KEYS_FILE"] == "/var/run/secrets/chatterbox/api-key"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"

    operator = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert _env(operator["containers"][0])["VOICE_OPERATOR_NAMESPACES"] == "speech"
    assert _env(operator["containers"][0])["VOICE_OPERATOR_VARIANT"] == "turbo"
    assert operator["securityContext"]["runAsUser"] == 1000
    assert operator["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert [r["metadata"]["namespace"] for r in _by_kind(docs, "Role")] == ["speech"]
    assert not _by_kind(docs, "ClusterRole") and not _by_kind(docs, "ClusterRoleBinding")

    claim = _one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert _claims(operator) == {claim["metadata"]["name"]}
    assert len(_by_kind(docs, "CustomResourceDefinition")) == 3
    key = _one(docs, "Secret")["data"]["api-key"]
    assert key and key != _one(helm.render(), "Secret")["data"]["api-key"], "a random key per render"


def test_the_namespaced_set_grants_a_role_in_each_watched_namespace_without_secrets(helm):
    docs = helm.render(*set_args("namespaced-watch"))
    roles = _by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["voices-a", "voices-b"]
    bindings = _by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["voices-a", "voices-b"]
    for role in roles:
        resources = {r for rule in role["rules"] for r in rule["resources"]}
        assert "secrets" not in resources and {"configmaps", "voices", "kopfpeerings"} <= resources
    assert not _by_kind(docs, "ClusterRole")
    env = _env(_one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert env["VOICE_OPERATOR_NAMESPACES"] == "voices-a,voices-b"


def test_all_namespaces_binds_a_cluster_role_with_the_cluster_peering(helm):
    docs = helm.render("--set", "operator.allNamespaces=true")
    role = _one(docs, "ClusterRole")
    assert {"secrets", "clusterkopfpeerings"} <= {r for rule in role["rules"] for r in rule["resources"]}
    assert _one(docs, "ClusterRoleBinding")["roleRef"]["name"] == role["metadata"]["name"]
    assert not _by_kind(docs, "Role")
    assert _env(_one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])[
        "VOICE_OPERATOR_NAMESPACES"] == ""


def test_the_runpod_set_uses_the_existing_claim_and_hands_the_token_to_kserve(helm):
    docs = helm.render(*set_args("runpod-single-gpu"))
    assert not _by_kind(docs, "PersistentVolumeClaim")
    spec = _one(docs, "InferenceService")["spec"]["predictor"]
    assert _claims(spec) == {"runpod-network-volume"}
    account = _named(docs, "ServiceAccount", spec["serviceAccountName"])
    assert account["secrets"] == [{"name": "hf-token"}]  # where KServe's storage initializer finds HF_TOKEN
    token = _env(spec["containers"][0])["HF_TOKEN"]
    assert token == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_deployment_set_renders_a_plain_deployment_service_and_hpa_without_a_gpu(helm):
    docs = helm.render(*set_args("deployment-cpu"))
    assert not _by_kind(docs, "InferenceService")
    predictor = _named(docs, "Deployment", "chatterbox-predictor")
    container = predictor["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert "STORAGE_URI" not in _env(container) and _env(container)["CHATTERBOX_RANDOM_WEIGHTS"] == "small"
    service = _one(docs, "Service")
    assert service["metadata"]["name"] == "chatterbox-predictor"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert _one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["resource"]["name"] == "memory"


def test_operator_off_renders_neither_the_operator_nor_the_crds(helm):
    kinds = {d["kind"] for d in helm.render(*set_args("operator-off"))}
    assert {"CustomResourceDefinition", "Role", "ClusterRole", "Deployment"}.isdisjoint(kinds)
    assert {"InferenceService", "Secret", "PersistentVolumeClaim"} <= kinds


def test_the_service_monitor_renders_only_where_the_cluster_serves_its_api(helm):
    assert not _by_kind(helm.render("--set", "serviceMonitor.enabled=true"), "ServiceMonitor")
    docs = helm.render("--set", "serviceMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1")
    endpoint = _one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and endpoint["authorization"]["type"] == "Bearer"


def test_an_existing_api_key_secret_is_used_and_none_is_created(helm):
    docs = helm.render("--set", "apiKey.existingSecret=keys.mine", "--set", "apiKey.secretKey=token")
    assert not _by_kind(docs, "Secret")
    volumes = _one(docs, "InferenceService")["spec"]["predictor"]["volumes"]
    assert {"secretName": "keys.mine", "items": [{"key": "token", "path": "api-key"}]} in \
        [v.get("secret") for v in volumes]


@pytest.mark.parametrize(("flag", "message"), [
    ("operator.watchNamespace=x", "additional properties 'watchNamespace' not allowed"),
    ("predictor.gpu=one", "at '/predictor/gpu': got string, want integer"),
    ("predictor.variant=standard", "at '/predictor/variant'"),
    ("apiKey.existingSecret=Keys_1", "at '/apiKey/existingSecret'"),
    ("ingress.enabled=true", "ingress.enabled needs at least one entry in ingress.hosts"),
])
def test_the_schema_rejects_unknown_keys_and_wrong_types_with_a_clear_message(helm, flag, message):
    with pytest.raises(KubectlError) as failure:
        helm.template("--set", flag)
    assert message in failure.value.stderr


def test_the_schema_documents_every_key_of_values_yaml_and_nothing_else():
    """values.yaml and values.schema.json list the same keys, so neither drifts from the other."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def keys(node, prefix=""):
        if node.get("type") == "object" and node.get("additionalProperties") is False:
            for key, sub in node["properties"].items():
                yield prefix + key
                yield from keys(sub, f"{prefix}{key}.")

    def value_keys(node, prefix=""):
        for key, sub in node.items():
            yield prefix + key
            if isinstance(sub, dict) and sub and prefix + key not in FREE_FORM:
                yield from value_keys(sub, f"{prefix}{key}.")

    FREE_FORM = {"operator.resources", "predictor.resources"}  # Kubernetes' own shapes
    assert set(value_keys(values)) == set(keys(schema)) - {"global"}
