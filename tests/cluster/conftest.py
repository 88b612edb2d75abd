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
from tests.support.node import PROVISIONER_IMAGE, Cluster, build_node_images, require_root

NAMESPACE = "chatterbox"
RELEASE = "tts"
API_KEY = "cluster-tier-key"
VALUES = Path(__file__).parent / "values-node.yaml"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed cluster test (or fixture) carries the node's state with its report: a timed-out `kubectl
    wait` says only that it timed out, and CI's log is all the next person has (a run whose pods never
    started, with no word on why, cost CI an hour)."""
    report = yield
    cluster = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(cluster, Cluster):
        try:
            state = cluster.diagnose()
        except Exception as exc:  # noqa: BLE001 - the failure itself is what the report is about
            state = f"diagnose() failed too: {exc!r}"
        report.sections.append(("the node at this failure", state))
    return report


@dataclass
class Release:
    helm: Helm
    namespace: str
    name: str
    image_args: list[str]

    def install_args(self) -> list[str]:
        return [self.name, str(CHART), "--namespace", self.namespace, "--values", str(VALUES),
                "--set", f"apiKey.value={API_KEY}", *self.image_args]


# Package scope: the node (containerd holding the imported images, the kubelet, KServe) is gone before
# the other tiers run, instead of lasting until the session ends.
@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """A control plane with one node that runs pods, and a default StorageClass as on k3s (see
    tests/support/node.py). Root only: it starts containerd and a kubelet, and makes a bridge.

    Teardown removes every container, mount, network namespace, firewall rule and kernel setting it
    made or changed, and fails if any is left."""
    require_root()
    build_node_images()
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    with cluster:
        cluster.install_storage(cluster.import_image(PROVISIONER_IMAGE))
        yield cluster
    left = cluster.leftovers()
    assert not left, f"the cluster left these behind: {left}"


@pytest.fixture(scope="package")
def node_images(cluster, images):
    """Both images, moved from Docker into the node's containerd (seconds for the operator, about a
    minute for the predictor's 7 GB)."""
    started = time.monotonic()
    for image in (images.predictor, images.operator):
        cluster.import_image(image)
    print(f"images imported into the node in {time.monotonic() - started:.0f} s")
    return images


@pytest.fixture(scope="package")
def node_helm(cluster, node_images, tmp_path_factory) -> Helm:
    """Helm as the cluster's admin."""
    return Helm(tmp_path_factory.mktemp("helm-home"), cluster.admin_kubeconfig)


@pytest.fixture(scope="package")
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
        uninstall(node_helm, rel)


def uninstall(helm: Helm, release: Release) -> None:
    """`helm uninstall --wait` if a test did not; loudly, since a release left behind (its CRDs, its
    ClusterRoles) would make the next module's install fail for a reason far from its cause."""
    if helm.run("status", release.name, "-n", release.namespace, check=False).returncode == 0:
        helm.run("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout=180s", timeout=240)
