"""The cluster tier: the chart installed with Helm on a control plane with a real node, as a user would
(tests/support/node.py). Pods run: the images are imported into the node's containerd, probes decide
readiness, the claim is provisioned by local-path-provisioner, and the operator's reload calls reach
the predictor pods through their EndpointSlices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.helm import CHART, Helm

NAMESPACE = "chatterbox"
RELEASE = "tts"
API_KEY = "cluster-tier-key"
VALUES = Path(__file__).parent / "values-node.yaml"


@dataclass
class Release:
    helm: Helm
    namespace: str
    name: str
    image_args: list[str]

    def install_args(self) -> list[str]:
        return [self.name, str(CHART), "--namespace", self.namespace, "--values", str(VALUES),
                "--set", f"apiKey.value={API_KEY}", *self.image_args]


@pytest.fixture(scope="session")
def node_images(cluster, images):
    """Both images, moved from Docker into the node's containerd (seconds for the operator, about a
    minute for the predictor's 7 GB)."""
    started = time.monotonic()
    for image in (images.predictor, images.operator):
        cluster.import_image(image)
    print(f"images imported into the node in {time.monotonic() - started:.0f} s")
    return images


@pytest.fixture(scope="session")
def node_helm(cluster, node_images, tmp_path_factory) -> Helm:
    """Helm as the cluster's admin."""
    return Helm(tmp_path_factory.mktemp("helm-home"), cluster.admin_kubeconfig)


@pytest.fixture(scope="session")
def image_args(node_images) -> list[str]:
    """The --set flags that point the chart at the images the tiers built (never pulled)."""
    args = []
    for component, image in (("predictor", node_images.predictor), ("operator", node_images.operator)):
        repository, tag = image.rsplit(":", 1)
        args += ["--set", f"{component}.image.repository={repository}",
                 "--set", f"{component}.image.tag={tag}"]
    return args


@pytest.fixture(scope="module")
def release(node_helm, image_args):
    """The chart, `helm install`ed into its namespace with the predictor as a plain Deployment on the
    CPU (random small weights); uninstalled at the end if a test did not."""
    rel = Release(node_helm, NAMESPACE, RELEASE, image_args)
    node_helm.run("install", *rel.install_args(), "--create-namespace")
    try:
        yield rel
    finally:
        if node_helm.run("status", RELEASE, "-n", NAMESPACE, check=False).returncode == 0:
            node_helm.run("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=120s", check=False,
                          timeout=180)
