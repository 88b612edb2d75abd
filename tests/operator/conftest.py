"""The operator tier's parts: the real control plane with our manifests applied, the operator as a real
process under its own ServiceAccount, a real HTTP server for voice sources, and predictor replicas.

Pods never run on this control plane, so EndpointSlices that the tests create stand in for the endpoint
controller, and they point at HTTP servers on this machine.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.controlplane import free_port, unique_name
from tests.support.manifests import OPERATOR_NS, OPERATOR_SA, apply_manifests
from tests.support.processes import terminate

API_KEY = "operator-test-key"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def host_ip() -> str:
    """This machine's own non-loopback IPv4 address: the API server refuses loopback addresses in
    EndpointSlices (and FQDN ones need a dotted name that resolves), so replicas listen here."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # a UDP "connect" sends nothing; it only picks the outgoing address
        address = s.getsockname()[0]
    assert not address.startswith("127."), f"no non-loopback IPv4 address here ({address})"
    return address


def serve(handler_class, port: int = 0, host: str = "127.0.0.1") -> _Server:
    server = _Server((host, port), handler_class)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Stall:
    """A download that sends its first `head` bytes, says so (`sent`), and sends the rest only once
    `release` is set: a slow source, with the moment that the first bytes are out made observable."""

    head: int
    sent: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class Sources:
    """Voice files over real HTTP on loopback. `files[path]` is served; `statuses[path]` answers an
    error instead; `failures_left[path]` answers 503 that many times first; `stalls[path]` sends the
    body as its Stall says. `requests` lists every path asked for, in order."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.statuses: dict[str, int] = {}
        self.failures_left: dict[str, int] = {}
        self.stalls: dict[str, Stall] = {}
        self.requests: list[str] = []
        sources = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                sources.requests.append(self.path)
                if self.path in sources.statuses:
                    self.send_error(sources.statuses[self.path])
                    return
                if sources.failures_left.get(self.path, 0) > 0:
                    sources.failures_left[self.path] -= 1
                    self.send_error(503)
                    return
                body = sources.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                stall = sources.stalls.get(self.path)
                try:
                    if stall is not None:
                        self.wfile.write(body[:stall.head])
                        self.wfile.flush()
                        stall.sent.set()
                        stall.release.wait(120)
                        body = body[stall.head:]
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the reader went away mid-body (a killed operator): what a real server sees too

            def log_message(self, *args):
                pass

        self.server = serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def add(self, raw: bytes, name: str | None = None) -> str:
        path = f"/{name or unique_name('voice')}.pth"
        self.files[path] = raw
        return self.url + path

    def add_file(self, raw: bytes, filename: str) -> str:
        """Any file (a recording) under its own name."""
        self.files[f"/{filename}"] = raw
        return f"{self.url}/{filename}"

    def add_stalled(self, raw: bytes, tail: int = 1024) -> tuple[str, Stall]:
        """A URL whose body stalls before its last `tail` bytes, and the Stall that says when and
        releases it. All but a tail: a reader takes the body in blocks (the operator's are 64 KiB) and
        sees none of a block until it is whole, so a short head would reach only its socket buffer."""
        assert len(raw) > 2 * tail
        url = self.add(raw)
        stall = self.stalls[url.removeprefix(self.url)] = Stall(head=len(raw) - tail)
        return url, stall

    def count(self, url: str) -> int:
        """How many times `url` was asked for."""
        return self.requests.count(url.removeprefix(self.url))


class FakeReplica:
    """Stands in for a predictor replica where a real one would cost a model load: it answers
    POST /voices/reload as the predictor does (the .pth files it sees in the voice directory) and
    insists on the API key. One test in test_operator.py runs the real predictor instead."""

    def __init__(self, voices_dir: Path):
        self.reloads = 0
        replica = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                if self.path != "/voices/reload":
                    self.send_error(404)
                    return
                if self.headers.get("X-API-Key") != API_KEY:
                    self.send_error(401)
                    return
                replica.reloads += 1
                body = json.dumps({"voices": sorted(p.name for p in voices_dir.glob("*.pth"))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = serve(Handler, host=host_ip())
        self.port = self.server.server_port

    def close(self) -> None:
        close(self.server)


def close(server: _Server) -> None:
    server.shutdown()
    server.server_close()


def endpoint_slice(namespace: str, isvc: str, ports_ready: list[tuple[int, bool]]) -> str:
    """EndpointSlices of `<isvc>-predictor`, one per port (a slice has one port list for all endpoints),
    each listing this machine's address (see host_ip), as the endpoint controller would list pods."""
    docs = []
    for port, ready in ports_ready:
        docs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": unique_name(f"{isvc}-predictor"), "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": f"{isvc}-predictor"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [host_ip()], "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "name": f"{isvc}-predictor-{port}"}}],
        })
    return yaml.safe_dump_all(docs)


class OperatorProcess:
    """`python -m voice_operator` with the ServiceAccount's token: exactly the rights RBAC grants."""

    def __init__(self, kubeconfig: Path, voices_dir: Path, workdir: Path):
        self.kubeconfig, self.voices_dir, self.workdir = kubeconfig, voices_dir, workdir
        self.liveness_port = free_port()
        key_file = workdir / "api-key"
        key_file.write_text(API_KEY + "\n")
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig),
                    "VOICE_OPERATOR_VOICES_DIR": str(voices_dir),
                    "VOICE_OPERATOR_LIVENESS_PORT": str(self.liveness_port),
                    "VOICE_OPERATOR_API_KEY_FILE": str(key_file),
                    # Short enough that drift repair and retries happen within a test.
                    "VOICE_OPERATOR_DRIFT_INTERVAL": "1",
                    "VOICE_OPERATOR_RETRY_MAX_DELAY": "2",
                    "VOICE_OPERATOR_FETCH_TIMEOUT": "10"}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "voice_operator"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.proc.returncode}:\n{self.log()[-6000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the operator's liveness endpoint never answered:\n{self.log()[-6000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as when a node dies mid-sync."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc:
            terminate(self.proc)

    def log(self) -> str:
        """This start's whole log (error messages show its tail)."""
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def cluster(control_plane):
    """The control plane with manifests/ applied as a user would: CRDs, RBAC, the operator's namespace."""
    return apply_manifests(control_plane)


@pytest.fixture(scope="session")
def voices_dir(tmp_path_factory) -> Path:
    """The voice volume (a PVC in a cluster) shared by the operator and the predictor replicas."""
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="session")
def operator(cluster, voices_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("operator")
    kubeconfig = cluster.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA)
    proc = OperatorProcess(kubeconfig, voices_dir, workdir)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def sources():
    s = Sources()
    yield s
    for stall in s.stalls.values():
        stall.release.set()
    close(s.server)


@pytest.fixture
def replica(voices_dir):
    """`replica()` starts a FakeReplica on the voice directory; all are closed after the test."""
    started: list[FakeReplica] = []

    def start() -> FakeReplica:
        started.append(FakeReplica(voices_dir))
        return started[-1]

    yield start
    for r in started:
        r.close()


@pytest.fixture
def namespace(cluster) -> str:
    name = unique_name("voices")
    cluster.kubectl("create", "namespace", name)
    return name
