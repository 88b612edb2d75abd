"""The node itself: it registers Ready under its own certificate, and a pod on it gets a ServiceAccount
token, the cluster's CA and the `kubernetes` Service (kube-proxy's rules to the API server on the
bridge), which is what the operator's pod depends on."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.controlplane import unique_name
from tests.support.node import NODE_ADDRESS, NODE_NAME

pytestmark = pytest.mark.cluster

IN_CLUSTER_CHECK = """
from kubernetes import client, config
config.load_incluster_config()  # the token, ca.crt and KUBERNETES_SERVICE_HOST a kubelet provides
print(client.VersionApi().get_code().git_version)
"""


def test_the_node_is_ready_with_its_own_address_and_node_identity(cluster):
    node = json.loads(cluster.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert {"type": "InternalIP", "address": NODE_ADDRESS} in node["status"]["addresses"]
    # The Node authorizer: a kubelet may read a Secret only when a pod bound to its node uses it.
    cluster.kubectl("create", "secret", "generic", "unused", "-n", "default", "--from-literal=k=v")
    can = cluster.kubectl("auth", "can-i", "get", "secret/unused", "-n", "default",
                          "--as", f"system:node:{NODE_NAME}", "--as-group", "system:nodes", check=False)
    assert can.stdout.startswith("no - node: no relationship found between node"), can.stdout
    cluster.kubectl("delete", "secret", "unused", "-n", "default")


@pytest.mark.timeout(1800)  # alone, it builds and imports the images first (see test_chart_on_node.py)
def test_a_pod_reaches_the_api_server_with_its_service_account(cluster, node_images):
    namespace = unique_name("node")
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "in-cluster"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "check", "image": node_images.operator, "imagePullPolicy": "Never",
            "command": ["python", "-c", IN_CLUSTER_CHECK]}]}}))
    cluster.kubectl("wait", "-n", namespace, "pod/in-cluster", "--for=jsonpath={.status.phase}=Succeeded",
                    "--timeout=120s", timeout=150)
    version = cluster.kubectl("logs", "-n", namespace, "pod/in-cluster").stdout.strip()
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    assert version == server
    cluster.kubectl("delete", "namespace", namespace, "--timeout=120s", timeout=150)
