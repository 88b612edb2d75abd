"""manifests/ applied to a test control plane as a user would, and the names it gives the operator."""

from __future__ import annotations

from .controlplane import REPO_ROOT

OPERATOR_NS, OPERATOR_SA = "chatterbox", "voice-operator"  # hack/manifests-values.yaml names them so


def apply_manifests(control_plane):
    """`kubectl apply -f manifests/` (CRDs, namespace, RBAC, claim, operator), then waits until the CRDs
    serve; returns the control plane."""
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "manifests"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          "crd/voices.tts.chatterbox-k8s.io", "crd/clusterkopfpeerings.kopf.dev")
    return control_plane
