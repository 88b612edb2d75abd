"""Docker for the image tier: run a command, a container this tier started, Docker's health status,
ffprobe's view of audio, and a pod spec's container given to Docker as a kubelet would run it."""

from __future__ import annotations

import json
import os
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
# Marks the containers this tier starts, so that a later run finds those a killed run left.
TIER_LABEL = "io.chatterbox-tts.test-tier=images"


class DockerError(RuntimeError):
    pass


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    """`docker ARGS`, its stdout; a failure raises with stderr."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
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
    docker("run", "-d", "--name", name, "--label", TIER_LABEL, *docker_args, image, *args)
    return Container(name)


def remove_leftover_containers() -> None:
    """Removes the containers a killed run of this tier left (its teardown never ran): each keeps the
    checkpoint it built, about 2 GB, until removed."""
    for container in docker("ps", "-a", "-q", "--filter", f"label={TIER_LABEL}").split():
        docker("rm", "-f", "-v", container, check=False)


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


def pod_docker_args(pod: dict, scratch: Path, *, binds: dict[str, Path] | None = None,
                    secret_files: dict[str, dict[str, bytes]] | None = None,
                    env: dict[str, str] | None = None) -> list[str]:
    """`docker run` arguments that give a container what `pod`'s first container gets from a kubelet:
    its user and groups, its securityContext (read-only root, dropped capabilities, no privilege
    escalation), its plain environment (then `env` on top), and its mounts. A volume named in `binds`
    is that host directory; a Secret volume holds `secret_files[secretName]`'s items; any other volume
    (emptyDir, a claim) is a fresh directory under `scratch`, owned by fsGroup as the kubelet makes it.
    Secret-sourced variables (valueFrom) are left out: no kubelet resolves them here."""
    container, pod_security = pod["containers"][0], pod.get("securityContext", {})
    security = container.get("securityContext", {})
    uid, gid = pod_security["runAsUser"], pod_security.get("fsGroup")
    args = ["--user", f"{uid}:{pod_security.get('runAsGroup', 0)}"]
    if gid is not None:
        args += ["--group-add", str(gid)]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    args += [f"--cap-drop={cap}" for cap in security.get("capabilities", {}).get("drop", [])]
    variables = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    for name, value in {**variables, **(env or {})}.items():
        args += ["-e", f"{name}={value}"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        name, volume = mount["name"], volumes[mount["name"]]
        if binds and name in binds:
            host = binds[name]
        elif "secret" in volume:
            host = scratch / "volumes" / name
            host.mkdir(parents=True)
            files = (secret_files or {})[volume["secret"]["secretName"]]
            for item in volume["secret"]["items"]:
                (host / item["path"]).write_bytes(files[item["key"]])
                (host / item["path"]).chmod(0o644)
        else:
            host = scratch / "volumes" / name
            host.mkdir(parents=True)
            os.chown(host, 0, gid or 0)
            host.chmod(0o2775)
        args += ["-v", f"{host}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
    return args


def service_account_mount(kubeconfig: Path, scratch: Path, server_port: int) -> list[str]:
    """What a kubelet gives a pod to reach the API server as its ServiceAccount: the token, the CA and
    the namespace at the standard path, and KUBERNETES_SERVICE_HOST/PORT (here: the test control plane
    on loopback, so the container shares the host's network). The token comes from `kubeconfig`."""
    config = yaml.safe_load(kubeconfig.read_text())
    directory = scratch / "serviceaccount"
    directory.mkdir(parents=True)
    (directory / "token").write_text(config["users"][0]["user"]["token"])
    (directory / "ca.crt").write_bytes(Path(config["clusters"][0]["cluster"]["certificate-authority"])
                                       .read_bytes())
    user = config["users"][0]["name"]  # system:serviceaccount:<namespace>:<name>
    (directory / "namespace").write_text(user.split(":")[2])
    for f in directory.iterdir():
        f.chmod(0o644)
    return ["-v", f"{directory}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
            "-e", "KUBERNETES_SERVICE_HOST=127.0.0.1", "-e", f"KUBERNETES_SERVICE_PORT={server_port}"]
