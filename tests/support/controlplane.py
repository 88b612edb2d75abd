"""A real Kubernetes control plane for tests: etcd and kube-apiserver on free loopback ports.

Modelled on controller-runtime's envtest: a throwaway CA, client-certificate authentication, RBAC
authorization, ServiceAccount tokens signed by a key of our own, readiness polled on /readyz. The
binaries are those `make tools` builds into bin/ (or the directory in $KUBE_TOOLS_DIR).

What it is not: no controller-manager, scheduler or kubelet run. Pods never start, namespaces never
finish deleting and nothing is garbage-collected, so tests isolate themselves with unique names
(`unique_name`) instead of deleting namespaces. `ControlPlane(node_address=...)` is the variant that a
node joins (tests/support/node.py): it listens on the node's bridge address instead of loopback, so
that pods reach it through the `kubernetes` Service, and authorizes kubelets with the Node authorizer.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import yaml

from .certs import TinyCA, service_account_key

REPO_ROOT = Path(__file__).resolve().parents[2]
# The chart's CRDs, as `plural.group`.
UNCACHED_CRDS = ("voices.tts.chatterbox-k8s.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev")
READY_TIMEOUT_S = 90  # a cold kube-apiserver on two busy cores takes 5-15 s; leave ample room
# Addresses for Service objects. Without a node nothing routes them; with one, kube-proxy does, on this
# machine only. The first address is the `kubernetes` Service's, which in-cluster clients dial.
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"


def tools_env(name: str) -> str:
    """A version from hack/tools.env, the one place `make tools` reads them from."""
    for line in (REPO_ROOT / "hack/tools.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    raise KeyError(f"{name} is not in hack/tools.env")


def tools_dir() -> Path:
    return Path(os.environ.get("KUBE_TOOLS_DIR", REPO_ROOT / "bin"))


def tool(name: str) -> Path:
    path = tools_dir() / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: run `make tools` (builds {name} from its Go module)")
    return path


def terminate(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if the process has not exited within `timeout` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_name(prefix: str) -> str:
    """A DNS-1123 name no other test uses: the isolation this control plane needs."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _kubeconfig(server: str, ca_pem_path: Path, user: str, credentials: dict) -> dict:
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                   "certificate-authority": str(ca_pem_path)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl run that says what kubectl said (CalledProcessError's message leaves it out)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr.strip()}"


class ControlPlane:
    """etcd + kube-apiserver in a temporary directory; `start()`, use, `stop()` (removes everything)."""

    def __init__(self, workdir: Path | None = None, node_address: str | None = None):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="controlplane-"))
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        # With a node: the address of the node's bridge (on this machine), which pods can reach.
        self.address = node_address or "127.0.0.1"
        self.node_mode = node_address is not None
        self.server = f"https://{self.address}:{self.port}"
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self.ca = TinyCA()
        self.ca_path = self.dir / "ca.crt"
        self.admin_kubeconfig: Path = self.dir / "admin.kubeconfig"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        pki = self.dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.ca_path.write_bytes(self.ca.cert_pem)
        hosts = ["127.0.0.1", "localhost"]
        if self.node_mode:  # pods dial the `kubernetes` Service's address or name and check it
            hosts = [self.address, KUBERNETES_SERVICE_IP, *hosts, "kubernetes", "kubernetes.default",
                     "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
        serving_cert, serving_key = self.ca.server_cert(*hosts).write(pki, "serving")
        sa_key = pki / "service-account.key"
        sa_key.write_bytes(service_account_key())
        # system:masters is the group RBAC's bootstrap policy binds to cluster-admin.
        admin_cert, admin_key = self.ca.client_cert("admin", "system:masters").write(pki, "admin")
        self._write_kubeconfig(self.admin_kubeconfig, "admin", {
            "client-certificate": str(admin_cert), "client-key": str(admin_key)})
        self._admin_ssl = ssl.create_default_context(cafile=str(self.ca_path))
        self._admin_ssl.load_cert_chain(str(admin_cert), str(admin_key))

        try:
            self._spawn("etcd", [
                str(tool("etcd")), "--data-dir", str(self.dir / "etcd"), "--name", "test",
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster", f"test=http://127.0.0.1:{self.etcd_peer_port}",
                # Test data is thrown away: skipping fsync makes every write (and the tests) faster.
                "--unsafe-no-fsync", "--log-level", "warn",
            ])
            self._spawn("kube-apiserver", [
                str(tool("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.address}", f"--advertise-address={self.address}",
                f"--secure-port={self.port}", f"--cert-dir={pki}",
                f"--tls-cert-file={serving_cert}", f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={self.ca_path}",
                f"--service-account-key-file={sa_key}", f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # No watch cache for the chart's own CRDs. The tests install and delete them dozens of
                # times a session, and each deletion rebuilds the group's handlers, which restarts the
                # sibling CRD's cache. The CRD finalizer then fails its list ("storage is
                # (re)initializing") and backs off exponentially: here a deletion took 282 s. Lists of
                # these kinds go to etcd instead, which is always ready.
                f"--watch-cache-sizes={','.join(f'{crd}#0' for crd in UNCACHED_CRDS)}",
                *(self._node_flags(pki) if self.node_mode else [
                    "--authorization-mode=RBAC",
                    # The `kubernetes` Service's endpoints would point at the advertise address,
                    # loopback here; nothing routes to it, so the reconciler is off.
                    "--endpoint-reconciler-type=none",
                    # No controller-manager creates the `default` ServiceAccount that this admission
                    # plugin demands of every pod (envtest turns it off for the same reason).
                    "--disable-admission-plugins=ServiceAccount",
                ]),
            ])
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _node_flags(self, pki: Path) -> list[str]:
        """What a control plane with a kubelet needs: kubelets authorized as nodes, and the API server's
        own certificate for calling them (logs, port-forward), which checks theirs against our CA."""
        kubelet_client, kubelet_key = self.ca.client_cert(
            "kube-apiserver-kubelet-client", "system:masters").write(pki, "kubelet-client")
        return [
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={kubelet_client}", f"--kubelet-client-key={kubelet_key}",
            f"--kubelet-certificate-authority={self.ca_path}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def stop(self) -> None:
        for _name, proc in reversed(self._procs):
            terminate(proc, timeout=20)
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.dir / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            self._procs.append((name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                       stdin=subprocess.DEVNULL)))

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last lines of a process's log, errors first (klog prefixes them with E or F)."""
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()
        errors = [line for line in text if line[:1] in ("E", "F") or '"level":"error"' in line]
        return "\n".join(errors[-10:] + ["..."] + text[-lines:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=self._admin_ssl,
                                            timeout=5) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:  # 500 while post-start hooks are still running
                last = f"HTTP {exc.code}: {exc.read()[-300:]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready after {READY_TIMEOUT_S} s ({last}):\n"
                           f"{self.log_tail('kube-apiserver')}")

    # -- credentials -------------------------------------------------------------------------------
    def _write_kubeconfig(self, path: Path, user: str, credentials: dict) -> Path:
        path.write_text(yaml.safe_dump(_kubeconfig(self.server, self.ca_path, user, credentials)))
        path.chmod(0o600)
        return path

    def user_kubeconfig(self, user: str, *groups: str) -> Path:
        """A kubeconfig authenticating as `user` (in `groups`) by a client certificate."""
        stem = unique_name(user.replace(":", "-"))
        cert, key = self.ca.client_cert(user, *groups).write(self.dir / "pki", stem)
        return self._write_kubeconfig(self.dir / f"{stem}.kubeconfig", user, {
            "client-certificate": str(cert), "client-key": str(key)})

    def service_account_kubeconfig(self, namespace: str, name: str, expiration_s: int = 3600) -> Path:
        """A kubeconfig with a token of ServiceAccount `namespace/name` (created if missing).

        The token comes from the TokenRequest API, as a kubelet would project it into a pod, so the
        requests made with it are authorized exactly as the ServiceAccount's RBAC allows.
        """
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = client.CoreV1Api(self.admin_client())
        try:
            api.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        token = api.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": expiration_s}}).status.token
        user = f"system:serviceaccount:{namespace}:{name}"
        return self._write_kubeconfig(self.dir / f"{unique_name('sa-' + name)}.kubeconfig", user,
                                      {"token": token})

    def client(self, kubeconfig: Path):
        """A kubernetes.client.ApiClient for `kubeconfig`."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig))

    def admin_client(self):
        return self.client(self.admin_kubeconfig)

    def kubectl(self, *args: str, kubeconfig: Path | None = None, check: bool = True,
                input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(tool("kubectl")), "--kubeconfig", str(kubeconfig or self.admin_kubeconfig), *args],
            capture_output=True, text=True, input=input, timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, ["kubectl", *args], result.stdout, result.stderr)
        return result
