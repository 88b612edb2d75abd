"""manifests/ is generated from the chart (hack/render-manifests.sh): the committed files must be what a
fresh render writes, so that the plain YAML and the chart never drift apart."""

from __future__ import annotations

import subprocess

from tests.support.controlplane import REPO_ROOT, tool

MANIFESTS = REPO_ROOT / "manifests"


def _generated(root):
    """The generated files under `root` (top level and predictor/), by relative path."""
    files = [*root.glob("*.yaml"), *root.glob("predictor/*.yaml")]
    return {str(p.relative_to(root)): p.read_text() for p in files}


def test_the_committed_manifests_equal_a_fresh_render_of_the_chart(tmp_path):
    subprocess.run(["bash", str(REPO_ROOT / "hack" / "render-manifests.sh"), str(tmp_path)], check=True,
                   env={"PATH": "/usr/bin:/bin", "HELM": str(tool("helm"))}, capture_output=True, text=True)
    fresh, committed = _generated(tmp_path), _generated(MANIFESTS)
    assert sorted(fresh) == sorted(committed), "run `make manifests`: the chart renders other files"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `make manifests`: {', '.join(stale)} differ from the chart's render"


def test_the_plain_manifests_hold_no_secret_and_leave_the_predictor_to_its_own_directory():
    committed = _generated(MANIFESTS)
    assert not any("kind: Secret" in text for text in committed.values()), "a rendered key would be public"
    assert "kind: InferenceService" in committed["predictor/predictor-inferenceservice.yaml"]
    assert not any("kind: InferenceService" in text for name, text in committed.items() if "/" not in name)
