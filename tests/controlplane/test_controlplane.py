"""The test control plane is a real Kubernetes API server: CRDs, watches, RBAC and ServiceAccounts."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.support.controlplane import REPO_ROOT, unique_name


def _crd(group: str, plural: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "Gadget"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}},
            }],
        },
    }


def _wait_established(ext: client.ApiextensionsV1Api, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} not established")


def test_api_server_reports_the_version_pinned_in_tools_env(control_plane):
    pinned = dict(line.split("=", 1) for line in (REPO_ROOT / "hack" / "tools.env").read_text().splitlines()
                  if line and not line.startswith("#"))["KUBERNETES_VERSION"]
    info = client.VersionApi(control_plane.admin_client()).get_code()
    assert info.git_version == pinned  # not v0.0.0-master: the build's -ldflags took effect
    assert (info.major, info.minor) == ("1", pinned.split(".")[1])


def test_a_custom_resource_can_be_created_and_watched_as_it_changes(control_plane):
    api = control_plane.admin_client()
    namespace = unique_name("crd")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    group = f"{unique_name('g')}.test.chatterbox.dev"
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(_crd(group, "gadgets"))
    _wait_established(ext, f"gadgets.{group}")

    objects = client.CustomObjectsApi(api)
    created = objects.create_namespaced_custom_object(group, "v1", namespace, "gadgets", {
        "apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "one"}, "spec": {"size": 1}})

    events = []
    w = watch.Watch()

    def collect():
        for event in w.stream(objects.list_namespaced_custom_object, group, "v1", namespace, "gadgets",
                              resource_version=created["metadata"]["resourceVersion"],
                              timeout_seconds=20):
            events.append((event["type"], event["object"]["spec"]["size"]))
            if event["type"] == "MODIFIED":
                w.stop()

    watcher = threading.Thread(target=collect)
    watcher.start()
    objects.patch_namespaced_custom_object(group, "v1", namespace, "gadgets", "one", {"spec": {"size": 2}})
    watcher.join(timeout=30)
    assert ("MODIFIED", 2) in events


def test_a_service_account_is_refused_without_a_role_and_allowed_with_one(control_plane):
    admin = control_plane.admin_client()
    namespace = unique_name("rbac")
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    sa_api = client.CoreV1Api(control_plane.client(
        control_plane.service_account_kubeconfig(namespace, "reader")))

    with pytest.raises(ApiException) as refused:
        sa_api.list_namespaced_config_map(namespace)
    assert refused.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in refused.value.body

    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader-reads-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})

    # The authorizer works from an informer cache: a new binding takes effect within moments.
    deadline = time.monotonic() + 15
    while True:
        try:
            assert sa_api.list_namespaced_config_map(namespace).items is not None
            break
        except ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    # The Role grants reading only: writing stays forbidden.
    with pytest.raises(ApiException) as still_refused:
        sa_api.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    assert still_refused.value.status == 403


def test_an_unknown_client_certificate_user_is_authenticated_but_not_authorized(control_plane):
    api = client.CoreV1Api(control_plane.client(control_plane.user_kubeconfig("stranger")))
    with pytest.raises(ApiException) as refused:
        api.list_namespace()
    assert refused.value.status == 403


def test_kubectl_talks_to_the_control_plane_with_the_admin_kubeconfig(control_plane):
    namespace = unique_name("kubectl")
    control_plane.kubectl("create", "namespace", namespace)
    out = control_plane.kubectl("get", "namespace", namespace, "-o", "jsonpath={.status.phase}")
    assert out.stdout == "Active"
    auth = control_plane.kubectl("auth", "can-i", "create", "customresourcedefinitions")
    assert auth.stdout.strip() == "yes"


def test_stopping_a_control_plane_ends_both_processes_and_removes_their_data(tmp_path):
    from tests.support.controlplane import ControlPlane

    plane = ControlPlane(tmp_path / "plane").start()
    procs = [proc for _name, proc in plane._procs]
    assert [p.poll() for p in procs] == [None, None]
    assert (plane.dir / "etcd").is_dir()
    plane.stop()
    assert all(p.poll() is not None for p in procs)
    assert not plane.dir.exists()
