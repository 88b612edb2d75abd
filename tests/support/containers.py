"""Docker for the image tier: run a command, a container this tier started, Docker's health status,
ffprobe's view of audio, and a kubeconfig a container can read."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from .controlplane import unique_name

API_KEY = "image-tier-key"
APPUSER = 1000  # the images' non-root user (Dockerfile.predictor, Dockerfile.operator)
# First start of the predictor container builds its random checkpoint and loads it: about 2-3 minutes
# here; the limit leaves room for a busy machine.
HEALTHY_TIMEOUT_S = 600


class DockerError(RuntimeError):
    pass


def docker(*args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> str:
    """`docker ARGS`, its stdout; a failure raises with stderr."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} exited with {result.returncode}:\n"
                          f"{result.stderr[-4000:]}")
    return result.stdout


class Container:
    """A container this tier started; `remove()` takes it away with its logs printed first."""

    def __init__(self, name: str):
        self.name = name

    def inspect(self, template: str) -> str:
        return docker("inspect", "-f", template, self.name).strip()

    @property
    def ip(self) -> str:
        """Its address on Docker's default bridge (reachable from this machine and from host-network
        containers)."""
        return self.inspect("{{.NetworkSettings.IPAddress}}")

    def logs(self) -> str:
        result = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=60)
        return result.stdout + result.stderr

    def exec(self, *argv: str) -> str:
        return docker("exec", self.name, *argv)

    def remove(self) -> None:
        print(f"--- logs of {self.name} ---\n{self.logs()[-8000:]}")
        docker("rm", "-f", "-v", self.name, check=False)


def run_container(image: str, *args: str, docker_args: tuple[str, ...] = ()) -> Container:
    name = unique_name("image-tier")
    docker("run", "-d", "--name", name, *docker_args, image, *args)
    return Container(name)


def wait_healthy(container: Container, timeout: float = HEALTHY_TIMEOUT_S) -> float:
    """Seconds until Docker's own health check (the image's HEALTHCHECK) reports healthy."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        state = json.loads(container.inspect("{{json .State}}"))
        if not state["Running"]:
            raise DockerError(f"{container.name} exited with {state['ExitCode']}:\n"
                              f"{container.logs()[-6000:]}")
        if state.get("Health", {}).get("Status") == "healthy":
            return time.monotonic() - start
        time.sleep(2)
    raise TimeoutError(f"{container.name} not healthy after {timeout} s:\n{container.logs()[-6000:]}")


def ffprobe(path: Path) -> dict:
    """ffprobe's view of an audio file: it decodes the whole stream (-count_frames)."""
    result = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format",
                             "-of", "json", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"ffprobe could not decode {path}: {result.stderr}"
    return json.loads(result.stdout)


def container_kubeconfig(kubeconfig: Path, directory: Path) -> Path:
    """A copy of `kubeconfig` that a container can read: the CA inlined (its file is not mounted), and
    readable by the container's user."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        ca_file = cluster["cluster"].pop("certificate-authority", None)
        if ca_file:
            cluster["cluster"]["certificate-authority-data"] = base64.b64encode(
                Path(ca_file).read_bytes()).decode()
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} never answered 200")
