"""KServe's own controller on the test node, in RawDeployment (Standard) mode, as its install would put it
there, with two differences that this machine forces:
- the manager is the binary `make tools` builds from the `github.com/kserve/kserve` module, in a
  one-file image (hack/node-images.sh); no registry serves KServe's image here;
- no cert-manager: the webhooks' serving certificate comes from the test's own CA, and their CA bundle
  is filled in here, as cert-manager's CA injector would.
Everything else is KServe's own YAML from that module: its CRDs, the manager's ClusterRole, its webhook
configurations and its `inferenceservice-config`, changed only where the RawDeployment install guide
says (the default deployment mode; no Ingress, since no ingress controller runs).
"""

from __future__ import annotations

import base64
import json
import tarfile
import time
from pathlib import Path

import yaml

from .controlplane import tools_dir, tools_env

NAMESPACE = "kserve"
SERVICE_ACCOUNT = "kserve-controller-manager"
WEBHOOK_SERVICE = "kserve-webhook-server-service"
WEBHOOK_SECRET = "kserve-webhook-server-cert"
# On every cluster-scoped object install() makes, so that uninstall() finds them.
TEST_LABEL = "chatterbox-k8s.io/test-kserve"


VERSION = tools_env("KSERVE_VERSION")
IMAGE = f"chatterbox-test/kserve-manager:{VERSION}"


def config_dir(workdir: Path) -> Path:
    """KServe's YAML from its module, as `make tools` packed it (bin/kserve-config.tar), unpacked."""
    tar = tools_dir() / "kserve-config.tar"
    if not tar.exists():
        raise FileNotFoundError(f"{tar} is missing: run `make tools` (packs KServe's config from its module)")
    with tarfile.open(tar) as archive:
        archive.extractall(workdir, filter="data")
    return workdir


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def install(cluster) -> None:
    """KServe's CRDs, config, RBAC, webhooks and controller in namespace `kserve`; returns when the
    controller is Ready (its readiness waits for the webhook server)."""
    source = config_dir(cluster.dir / "kserve")
    cluster.import_image(IMAGE)
    if cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", NAMESPACE)
    # Server-side: the InferenceService CRD is larger than client-side apply's annotation allows.
    for crd in sorted((source / "config/crd/full").glob("serving.kserve.io_*.yaml")):
        cluster.kubectl("apply", "--server-side", "-f", str(crd), timeout=120)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/inferenceservices.serving.kserve.io", "crd/servingruntimes.serving.kserve.io")

    (config,) = _docs(source / "config/configmap/inferenceservice.yaml")
    config["data"]["deploy"] = json.dumps({"defaultDeploymentMode": "Standard"})
    ingress = json.loads(config["data"]["ingress"])
    ingress["disableIngressCreation"] = True  # no ingress controller on this node
    config["data"]["ingress"] = json.dumps(ingress)
    config["metadata"]["namespace"] = NAMESPACE

    (role,) = _docs(source / "config/rbac/role.yaml")
    webhooks = []
    for doc in _docs(source / "config/webhook/manifests.yaml"):
        for hook in doc["webhooks"]:
            hook["clientConfig"]["service"].update({"name": WEBHOOK_SERVICE, "namespace": NAMESPACE})
            hook["clientConfig"]["caBundle"] = base64.b64encode(cluster.ca.cert_pem).decode()
        doc["metadata"].pop("creationTimestamp", None)
        webhooks.append(doc)

    host = f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc"
    serving = cluster.ca.server_cert(host, f"{WEBHOOK_SERVICE}.{NAMESPACE}", WEBHOOK_SERVICE)
    labels = {"control-plane": "kserve-controller-manager"}
    objects = [
        config,
        role,
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "kserve-manager-rolebinding"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": role["metadata"]["name"]},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": WEBHOOK_SECRET, "namespace": NAMESPACE},
         "data": {"tls.crt": base64.b64encode(serving.cert_pem).decode(),
                  "tls.key": base64.b64encode(serving.key_pem).decode()}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": WEBHOOK_SERVICE, "namespace": NAMESPACE},
         "spec": {"selector": labels, "ports": [{"port": 443, "targetPort": 9443}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "kserve-controller-manager", "namespace": NAMESPACE, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "serviceAccountName": SERVICE_ACCOUNT,
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                      "containers": [{
                          "name": "manager", "image": IMAGE, "imagePullPolicy": "Never",
                          "args": ["--metrics-addr=127.0.0.1:8080", "--health-probe-addr=:8081"],
                          "env": [{"name": "POD_NAMESPACE",
                                   "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                          "ports": [{"name": "webhook", "containerPort": 9443}],
                          "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8081},
                                             "periodSeconds": 2},
                          # Where controller-runtime's webhook server reads its certificate.
                          "volumeMounts": [{"name": "cert", "readOnly": True,
                                            "mountPath": "/tmp/k8s-webhook-server/serving-certs"}],
                      }],
                      "volumes": [{"name": "cert", "secret": {"secretName": WEBHOOK_SECRET}}],
                  }}}},
    ]
    for doc in [*objects, *webhooks]:
        doc["metadata"].setdefault("labels", {})[TEST_LABEL] = "true"
    cluster.kubectl("apply", "--server-side", "-f", "-",
                    input="\n---\n".join(yaml.safe_dump(o) for o in objects))
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/kserve-controller-manager",
                    "--timeout=180s", timeout=200)
    # The webhooks last: with failurePolicy Fail they would refuse pods until the server answers.
    cluster.kubectl("apply", "--server-side", "-f", "-",
                    input="\n---\n".join(yaml.safe_dump(o) for o in webhooks))
    _wait_for_webhooks(cluster)


def _wait_for_webhooks(cluster, timeout: float = 120) -> None:
    """Until the API server reaches the webhook server through its Service. The controller's readiness
    says the server listens, not that kube-proxy has programmed the Service's new endpoint yet: one run
    had `helm install` refused with "failed calling webhook ... connection refused" right after it."""
    probe = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
             "metadata": {"name": "webhook-probe", "namespace": NAMESPACE},
             "spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "probe"}]}}}
    deadline = time.monotonic() + timeout
    while True:
        result = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe),
                                 check=False)
        if result.returncode == 0 or "failed calling webhook" not in result.stderr:
            return  # answered (a refusal of the probe itself is an answer too)
        if time.monotonic() > deadline:
            raise TimeoutError(f"KServe's webhooks did not answer within {timeout:.0f} s: {result.stderr}")
        time.sleep(2)


def uninstall(cluster) -> None:
    """Webhooks first (with failurePolicy Fail they would refuse what they can no longer judge), then the
    controller and its namespace; the CRDs stay, as KServe's own uninstall keeps them."""
    cluster.kubectl("delete", "mutatingwebhookconfigurations,validatingwebhookconfigurations", "-l",
                    f"{TEST_LABEL}=true", timeout=120)
    cluster.kubectl("delete", "clusterrolebindings,clusterroles", "-l", f"{TEST_LABEL}=true", timeout=120)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--timeout=120s", timeout=150)
