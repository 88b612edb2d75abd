"""The chart tier: `helm lint` / `helm template` of charts/chatterbox-tts, and installs on the real control
plane (tests/support/controlplane.py) with KServe's InferenceService CRD generated from the kserve
package (tests/support/kserve_crd.py). Pods never run there: these tests check what the API server
accepts and what Helm creates, upgrades and removes, not the workloads themselves.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.helm import Helm
from tests.support.kserve_crd import inferenceservice_crd

VALUES_DIR = Path(__file__).parent / "values"
# Every profile under values/, by name; "default" is the chart's values.yaml alone.
VALUE_SETS = {"default": None, **{p.stem: p for p in sorted(VALUES_DIR.glob("*.yaml"))}}
# The namespaces that values/namespaced-watch.yaml names: Roles go there, so they must exist.
WATCHED = ("voices-a", "voices-b")


def set_args(name: str) -> list[str]:
    """The helm flags for value set `name`."""
    path = VALUE_SETS[name]
    return [] if path is None else ["--values", str(path)]


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> Helm:
    """Helm without a cluster: lint and template."""
    return Helm(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def kube(control_plane):
    """The control plane with the InferenceService CRD established and the watched namespaces created."""
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(inferenceservice_crd()))
    # Polled rather than `kubectl wait`: both fail outright (not "not yet") on a CRD whose status has no
    # conditions yet, so a failed query counts as "not yet" here.
    deadline = time.monotonic() + 60
    while control_plane.kubectl(
            "get", "crd/inferenceservices.serving.kserve.io", "-o",
            "jsonpath={.status.conditions[?(@.type=='Established')].status}", check=False).stdout != "True":
        assert time.monotonic() < deadline, "the InferenceService CRD was never established"
        time.sleep(0.2)
    for namespace in WATCHED:
        if control_plane.kubectl("get", "namespace", namespace, check=False).returncode != 0:
            control_plane.kubectl("create", "namespace", namespace)
    return control_plane


@pytest.fixture(scope="session")
def cluster_helm(kube, tmp_path_factory) -> Helm:
    """Helm as the control plane's admin."""
    return Helm(tmp_path_factory.mktemp("helm-home"), kube.admin_kubeconfig)
