"""The image tier: both images, built as `make images` builds them, run by a real Docker engine.

The engine is Debian's docker.io, started by hack/docker-engine.sh when it is not running (root only);
where no registry can be reached, hack/base-image.sh supplies a stand-in for the base image and says so
in the build log. Containers publish their ports on loopback only; the operator container shares the
host's network to reach the test control plane, and reaches the predictor container at its address on
Docker's bridge (a container this tier started).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.containers import API_KEY, Container, run_container, wait_healthy
from tests.support.controlplane import free_port


@dataclass
class Predictor:
    container: Container
    url: str
    voices: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": API_KEY}


@pytest.fixture(scope="session")
def predictor(images, tmp_path_factory) -> Predictor:
    """The predictor container, started the plan's way: a volume at /voices, the port published, random
    weights, and the API key from a mounted file (a Secret in a cluster, a file on a RunPod pod).

    The voice directory starts as a fresh host directory does: owned by root, so the container's user
    may not write it until a test hands it over (see the README's RunPod guide)."""
    voices = tmp_path_factory.mktemp("voices")
    voices.chmod(0o755)
    secrets = tmp_path_factory.mktemp("secrets")
    secrets.chmod(0o755)
    (secrets / "api-key").write_text(API_KEY + "\n")
    (secrets / "api-key").chmod(0o644)
    port = free_port()
    container = run_container(
        images.predictor, "--random_weights", "small", "--token_cap", "30", "--voice_scan_interval", "3600",
        docker_args=("-p", f"127.0.0.1:{port}:8080", "-v", f"{voices}:/voices",
                     "-v", f"{secrets}:/run/secrets/chatterbox:ro",
                     "-e", "CHATTERBOX_API_KEYS_FILE=/run/secrets/chatterbox/api-key"))
    try:
        seconds = wait_healthy(container)
        print(f"the predictor container turned healthy in {seconds:.0f} s")
        yield Predictor(container, f"http://127.0.0.1:{port}", voices)
    finally:
        container.remove()
