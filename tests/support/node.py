"""A single-node Kubernetes cluster on this machine, for the cluster tier: pods that really run.

`Cluster` is the test control plane (tests/support/controlplane.py) in its node mode, plus what a node
needs: kube-controller-manager and kube-scheduler, a kubelet with a node certificate
(`system:node:NAME` in `system:nodes`, checked by the Node authorizer), Debian's containerd as its
container runtime, a pod network on a CNI bridge (Debian's containernetworking-plugins) and kube-proxy
for Services. The Kubernetes binaries are those `make tools` builds from their Go modules.

Where it sits on this machine, and why:
- Everything listens on loopback or on the bridge that node_host.py makes (`NODE_ADDRESS`): the API
  server and the kubelet on the bridge's address, which pods reach through the `kubernetes` Service.
- Pods may talk to each other and to this node's own addresses, and nowhere else: a rule in the FORWARD
  chain drops whatever they send off the pod network (no pod here has anything to fetch from outside).
- containerd runs with its own root, state directory and socket, apart from Docker's, and its network
  namespaces live under its state directory, so `stop()` finds and removes everything it made.
- This machine grants no CAP_SYS_RESOURCE: containerd must not raise a container's OOM score
  (`restrict_oom_score_adj`), or runc fails with "can't get final child's PID from pipe".
- cgroup v1 (the kubelet refuses it unless `failCgroupV1` is off), the cgroupfs driver (no systemd
  here), and no QoS hierarchy or node-allocatable enforcement, which this machine's cgroups cannot
  carry.
- No registry can be reached: images come from the local Docker engine (`import_image`), pods use
  `imagePullPolicy: Never`, and the sandbox image is a static pause program (hack/node-images.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from . import node_host as host
from .controlplane import (
    REPO_ROOT,
    SERVICE_CIDR,
    ControlPlane,
    free_port,
    terminate,
    tool,
    tools_env,
    unique_name,
)
from .node_host import NODE_ADDRESS, POD_CIDR, NodeError, run

NODE_NAME = "chatterbox-node"
# hack/node-images.sh builds both into Docker; these names are its defaults.
PAUSE_IMAGE = "chatterbox-test/pause:1"
PROVISIONER_IMAGE = f"chatterbox-test/local-path-provisioner:{tools_env('LOCAL_PATH_PROVISIONER_VERSION')}"
NODE_READY_TIMEOUT_S = 120  # the node turned Ready within 20 s on these machines
POD_TERMINATION_TIMEOUT_S = 90
# The free disk under which the kubelet taints the node and evicts pods (see _start_kubelet).
EVICTION_FLOOR = "512Mi"
# Room left after an import for what the pods write (the predictor's model cache, logs, the claim's
# voices) and the kubelet's eviction floor.
IMPORT_HEADROOM_BYTES = 3 * 10**9


def require_root() -> None:
    if os.geteuid() != 0:
        raise NodeError("the cluster tier needs root (it starts containerd and a kubelet, and makes a "
                        "bridge and iptables rules); run it as root, or skip it with -m 'not cluster'")


def build_node_images() -> None:
    """The sandbox and provisioner images, into Docker (hack/node-images.sh; seconds, once a machine)."""
    run("bash", str(REPO_ROOT / "hack/node-images.sh"), timeout=600)


class Cluster(ControlPlane):
    """The control plane with one node; `start()`, use, `stop()` (removes every container, mount,
    network namespace, firewall rule, log link and directory it made, and puts back the kernel
    settings the kubelet changed; `leftovers()` checks)."""

    def __init__(self, workdir: Path):
        super().__init__(workdir, node_address=NODE_ADDRESS)
        self.node_dir = self.dir / "node"
        self.containerd_socket = self.node_dir / "containerd" / "containerd.sock"
        self.containerd_root = self.node_dir / "containerd" / "root"
        self.containerd_state = self.node_dir / "containerd" / "state"
        self.kubelet_dir = self.node_dir / "kubelet"
        self.pod_logs_dir = self.node_dir / "pod-logs"
        self.sysctls: dict[str, str] = {}
        # Where the local-path provisioner puts the claims' directories (local-path-provisioner.yaml).
        self.storage_dir = self.node_dir / "storage"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Cluster:
        require_root()
        host.system_deps()
        host.recover_killed_run()
        self.sysctls = host.read_sysctls()
        self.node_dir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        try:
            host.network_up(self.node_dir)
            super().start()  # etcd and kube-apiserver on the bridge's address
            self._start_containerd()
            self.import_image(PAUSE_IMAGE)
            self._start_controllers()
            self._start_kubelet()
            self._start_kube_proxy()
            self._wait_node_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Every step runs even when one before it failed (a hung ctr must not leave the bridge and
        the API server behind); the first failure is raised at the end."""
        errors = []
        steps = [self._drain, *(lambda n=n: self._terminate(n) for n in
                                ("kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager")),
                 self._kube_proxy_cleanup, self._remove_leftover_containers,
                 lambda: self._terminate("containerd"), host.remove_cgroups,
                 lambda: host.unmount_under(self.node_dir), self._remove_store, self._remove_log_links,
                 host.network_down,
                 lambda: host.write_sysctls(self.sysctls), super().stop,
                 lambda: host.STATE.unlink(missing_ok=True)]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - collected, raised below
                errors.append(exc)
        if errors:
            raise errors[0]

    def _spawn(self, name: str, argv: list[str]) -> None:
        super()._spawn(name, argv)
        # What the next run removes first if this one is killed before its teardown.
        host.save_state(self.node_dir, [p.pid for _, p in self._procs], self.sysctls)

    # -- containerd --------------------------------------------------------------------------------
    def _start_containerd(self) -> None:
        for d in (self.containerd_root, self.containerd_state):
            d.mkdir(parents=True, exist_ok=True)
        config = self.node_dir / "containerd" / "config.toml"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config.write_text("\n".join([
            "version = 2",
            f'root = "{self.containerd_root}"',
            f'state = "{self.containerd_state}"',
            # Snapshotters this machine cannot run would only log errors.
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",'
            ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
            "[grpc]",
            f'  address = "{self.containerd_socket}"',
            "[ttrpc]",
            f'  address = "{self.containerd_socket}.ttrpc"',
            "[debug]",
            f'  address = "{self.containerd_socket}.debug"',
            "[metrics]",
            '  address = ""',
            # Where containerd would otherwise install plugins' files: /opt/containerd.
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{self.node_dir / "containerd" / "opt"}"',
            f"[{cri}]",
            f'  sandbox_image = "docker.io/{PAUSE_IMAGE}"',
            "  restrict_oom_score_adj = true",  # no CAP_SYS_RESOURCE here (see the module docstring)
            "  netns_mounts_under_state_dir = true",  # so that stop() finds every namespace it made
            '  stream_server_address = "127.0.0.1"',  # kubectl port-forward and exec, loopback only
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f"[{cri}.cni]",
            '  bin_dir = "/usr/lib/cni"',
            f'  conf_dir = "{self.node_dir / "cni"}"',
            "",
        ]))
        self._spawn("containerd", ["containerd", "--config", str(config), "--log-level", "warn"])
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False) is None:
            self._check_alive("containerd")
            if time.monotonic() > deadline:
                raise NodeError(f"containerd did not answer:\n{self.log_tail('containerd')}")
            time.sleep(0.2)

    def ctr(self, *args: str, check: bool = True, timeout: float = 60, input: bytes | None = None):
        """`ctr` in containerd's Kubernetes namespace; its stdout, or None when it failed and
        check is False."""
        argv = ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args]
        result = subprocess.run(argv, capture_output=True, timeout=timeout, input=input)
        if result.returncode != 0:
            if check:
                raise NodeError(f"ctr {' '.join(args)} exited with {result.returncode}:\n"
                                f"{result.stderr.decode(errors='replace')[-3000:]}")
            return None
        return result.stdout.decode(errors="replace")

    def import_image(self, image: str) -> str:
        """Copies `image` from the Docker engine into the node (`docker save` | `ctr images import`);
        returns the name a pod asks for (Docker's short names are docker.io/library/... to both)."""
        self._check_room_for(image)
        with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as save:
            result = subprocess.run(
                ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", "images",
                 "import", "--snapshotter", "overlayfs", "-"],
                stdin=save.stdout, capture_output=True, timeout=1200)
            save.stdout.close()
        if save.returncode != 0 or result.returncode != 0:
            raise NodeError(f"importing {image} failed (docker save {save.returncode}, ctr "
                            f"{result.returncode}):\n{result.stderr.decode(errors='replace')[-3000:]}")
        return image

    def _check_room_for(self, image: str) -> None:
        """Fails at once, saying why, when the disk cannot hold `image` twice over (containerd keeps
        its layers and unpacks them) with room to spare: short of that, the import or the pods after
        it fail much later, on a timeout that names neither the disk nor the image."""
        size = int(run("docker", "image", "inspect", "--format", "{{.Size}}", image).strip())
        needed = 2 * size + IMPORT_HEADROOM_BYTES
        free = shutil.disk_usage(self.node_dir).free
        if free < needed:
            raise NodeError(
                f"importing {image} into the node needs about {needed / 1e9:.1f} GB free under "
                f"{self.node_dir} (its {size / 1e9:.1f} GB of layers, stored and unpacked, and "
                f"{IMPORT_HEADROOM_BYTES / 1e9:.0f} GB for the pods), and only {free / 1e9:.1f} GB are: "
                "free some (`docker system prune`, old venvs and pytest directories) and run again")

    # -- control-plane controllers and the kubelet ------------------------------------------------
    def _component_kubeconfig(self, name: str, user: str, *groups: str) -> Path:
        cert, key = self.ca.client_cert(user, *groups).write(self.dir / "pki", name)
        return self._write_kubeconfig(self.dir / f"{name}.kubeconfig", user, {
            "client-certificate": str(cert), "client-key": str(key)})

    def _start_controllers(self) -> None:
        pki = self.dir / "pki"
        # The users RBAC's bootstrap policy binds to these components' roles.
        cm = self._component_kubeconfig("controller-manager", "system:kube-controller-manager")
        scheduler = self._component_kubeconfig("scheduler", "system:kube-scheduler")
        self._spawn("kube-controller-manager", [
            str(tool("kube-controller-manager")), f"--kubeconfig={cm}",
            f"--authentication-kubeconfig={cm}", f"--authorization-kubeconfig={cm}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            # Each controller acts as its own ServiceAccount, with its own RBAC role, as in a real
            # cluster; the token controller signs with the API server's key.
            "--use-service-account-credentials",
            f"--service-account-private-key-file={pki / 'service-account.key'}",
            f"--root-ca-file={self.ca_path}",  # published to every namespace as kube-root-ca.crt
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
        ])
        self._spawn("kube-scheduler", [
            str(tool("kube-scheduler")), f"--kubeconfig={scheduler}",
            f"--authentication-kubeconfig={scheduler}", f"--authorization-kubeconfig={scheduler}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
        ])

    def _start_kubelet(self) -> None:
        pki = self.dir / "pki"
        kubeconfig = self._component_kubeconfig("kubelet", f"system:node:{NODE_NAME}", "system:nodes")
        serving_cert, serving_key = self.ca.server_cert(NODE_ADDRESS, NODE_NAME).write(pki, "kubelet-serving")
        config = self.node_dir / "kubelet-config.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_ADDRESS, "port": free_port(), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "tlsCertFile": str(serving_cert), "tlsPrivateKeyFile": str(serving_key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.ca_path)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            # This machine: cgroup v1 without systemd (see the module docstring).
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [], "failSwapOn": False,
            # The imported images are all there is (no registry): never collect them, and never evict
            # pods, or taint the node, for a disk the rest of this machine fills. The floors are
            # absolute: 1% of this 252 GB disk was 2.7 GB, and a run here with the disk that
            # low after the predictor's import had its pods evicted and new ones left Pending on the
            # disk-pressure taint, as all of one CI run's pods were. A taint that does come lifts
            # 30 s after the disk recovers (the default is 5 min).
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": EVICTION_FLOOR,
                             "imagefs.available": EVICTION_FLOOR},
            "evictionPressureTransitionPeriod": "30s",
            "serializeImagePulls": False,
            "registerNode": True,
            # Pods' logs under the node's directory (the default is /var/log/pods); the kubelet still
            # links each container's log from /var/log/containers, which stop() removes.
            "podLogsDir": str(self.pod_logs_dir),
            "maxPods": 30,
            # Pod deletions end quickly in tests; the default 1 minute sync would slow every change.
            "syncFrequency": "10s", "fileCheckFrequency": "10s",
        }))
        self._spawn("kubelet", [
            str(tool("kubelet")), f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.kubelet_dir}", f"--cert-dir={pki}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_ADDRESS}", "--v=1",
        ])

    def _kube_proxy_config(self) -> Path:
        config = self.node_dir / "kube-proxy-config.yaml"
        if not config.exists():
            kubeconfig = self._component_kubeconfig("kube-proxy", "system:kube-proxy")
            config.write_text(yaml.safe_dump({
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
                "mode": "iptables",
                "clientConnection": {"kubeconfig": str(kubeconfig)},
                "hostnameOverride": NODE_NAME, "clusterCIDR": POD_CIDR,
                "bindAddress": "127.0.0.1",
                "healthzBindAddress": f"127.0.0.1:{free_port()}",
                "metricsBindAddress": f"127.0.0.1:{free_port()}",
                # NodePorts only on the bridge's address, never on this machine's own network.
                "nodePortAddresses": [f"{NODE_ADDRESS}/32"],
                "iptables": {"localhostNodePorts": False},
                # Zeros leave this machine's conntrack settings as they are (kube-proxy would raise them).
                "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                              "tcpCloseWaitTimeout": "0s"},
            }))
        return config

    def _start_kube_proxy(self) -> None:
        self._spawn("kube-proxy", [str(tool("kube-proxy")), f"--config={self._kube_proxy_config()}"])

    def _kube_proxy_cleanup(self) -> None:
        """Removes kube-proxy's iptables rules (its own `--cleanup`) and the kubelet's, all of which
        outlive the processes."""
        if (self.node_dir / "kube-proxy-config.yaml").exists():
            run(str(tool("kube-proxy")), f"--config={self._kube_proxy_config()}", "--cleanup",
                check=False, timeout=60)
        host.remove_kube_iptables()

    def _wait_node_ready(self) -> None:
        deadline = time.monotonic() + NODE_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for name in ("containerd", "kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager"):
                self._check_alive(name)
            status = self.kubectl("get", "node", NODE_NAME, "-o",
                                  "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
            if status.stdout == "True":
                return
            time.sleep(1)
        raise NodeError(f"node {NODE_NAME} not Ready after {NODE_READY_TIMEOUT_S} s:\n"
                        f"{self.log_tail('kubelet')}")

    # -- storage -------------------------------------------------------------------------------------
    def install_storage(self, provisioner_image: str) -> None:
        """The default StorageClass as on k3s: local-path-provisioner in a pod (its image already on the
        node), claims in directories under `storage_dir`."""
        manifest = (Path(__file__).parent / "local-path-provisioner.yaml").read_text()
        manifest = manifest.replace("STORAGE_DIR", str(self.storage_dir)).replace(
            "PROVISIONER_IMAGE", provisioner_image)
        self.kubectl("apply", "-f", "-", input=manifest)
        self.kubectl("-n", "local-path-storage", "rollout", "status", "deployment/local-path-provisioner",
                     "--timeout=120s", timeout=150)

    # -- for tests ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, port: int, timeout: float = 30):
        """`kubectl port-forward TARGET :PORT` (through the API server, the kubelet and containerd's
        stream server); yields the local URL, http://127.0.0.1:LOCAL. Its output goes to a file, so
        that nothing waits on a pipe (it prints a line for every connection)."""
        log = self.dir / f"{unique_name('port-forward')}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(tool("kubectl")), "--kubeconfig", str(self.admin_kubeconfig), "-n", namespace,
                 "port-forward", "--address=127.0.0.1", target, f":{port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while (found := re.search(r"Forwarding from 127\.0\.0\.1:(\d+) ", log.read_text())) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise NodeError(f"kubectl port-forward {target} gave no port:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{found.group(1)}"
        finally:
            terminate(proc, timeout=10)

    def diagnose(self) -> str:
        """What to read when a pod never became ready: the node's pressure conditions and taints, the
        free disk and memory the kubelet judges them by, the pods and their waiting reasons, the latest
        events, and the kubelet's errors. Every part is best effort: this runs after a failure."""
        parts = []
        node = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False, timeout=20)
        if node.returncode == 0:
            status = json.loads(node.stdout)
            conditions = []
            for c in status["status"].get("conditions", []):
                pressure = c["status"] == "True" and c["type"] != "Ready"  # DiskPressure and the like
                why = f" ({c.get('message')})" if pressure else ""
                conditions.append(f"{c['type']}={c['status']}{why}")
            taints = [f"{t['key']}:{t['effect']}" for t in status["spec"].get("taints", [])]
            parts.append(f"node {NODE_NAME}: {', '.join(conditions)}; taints: {taints or 'none'}")
        else:
            parts.append(f"node {NODE_NAME}: kubectl get failed: {node.stderr.strip()[-300:]}")
        disk = shutil.disk_usage(self.node_dir)
        parts.append(f"disk under {self.node_dir}: {disk.free / 1e9:.1f} GB free of "
                     f"{disk.total / 1e9:.0f} GB (the kubelet's eviction floor is {EVICTION_FLOOR})")
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        parts.append(f"memory available: {int(meminfo['MemAvailable'].split()[0]) / 1e6:.1f} GB")
        for what in (["get", "pods", "-A", "-o", "wide"],
                     ["get", "events", "-A", "--sort-by=.lastTimestamp"]):
            result = self.kubectl(*what, check=False, timeout=20)
            lines = (result.stdout or result.stderr).strip().splitlines()
            parts.append(f"$ kubectl {' '.join(what)}\n" + "\n".join(lines[:1] + lines[1:][-25:]))
        parts.append(f"kubelet log:\n{self.log_tail('kubelet', lines=15)}")
        return "\n".join(parts)

    # -- teardown ----------------------------------------------------------------------------------
    def _running(self, name: str) -> bool:
        return any(n == name and p.poll() is None for n, p in self._procs)

    def _check_alive(self, name: str) -> None:
        for n, proc in self._procs:
            if n == name and proc.poll() is not None:
                raise NodeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def _terminate(self, name: str) -> None:
        for n, proc in list(self._procs):
            if n == name:
                terminate(proc)
                self._procs.remove((n, proc))

    def _drain(self) -> None:
        """Deletes every workload and pod, and waits until the kubelet has stopped them: the kubelet
        then tears down each sandbox's network (CNI DEL) and volumes itself."""
        if not self._running("kubelet"):
            return
        self.kubectl("delete", "deployments,replicasets,daemonsets,statefulsets,jobs", "--all",
                     "--all-namespaces", "--wait=false", check=False, timeout=120)
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=5", "--wait=false",
                     check=False, timeout=120)
        deadline = time.monotonic() + POD_TERMINATION_TIMEOUT_S
        while time.monotonic() < deadline:
            left = self.kubectl("get", "pods", "--all-namespaces", "-o", "name", check=False)
            sandboxes = self.ctr("containers", "list", "-q", check=False)
            if left.returncode == 0 and not left.stdout.strip() and not (sandboxes or "").strip():
                return
            time.sleep(1)

    def _remove_leftover_containers(self) -> None:
        """Kills and deletes what the kubelet left behind (after a failure: nothing, normally)."""
        if not self._running("containerd"):
            return
        for task in (self.ctr("tasks", "list", "-q", check=False) or "").split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", "--all", task, check=False)
            time.sleep(0.5)
            self.ctr("tasks", "delete", "--force", task, check=False)
        for container in (self.ctr("containers", "list", "-q", check=False) or "").split():
            self.ctr("containers", "delete", container, check=False)

    def _remove_store(self) -> None:
        """containerd's content store and snapshots: the imported images, unpacked (about 15 GB with
        the predictor's). Kept past the session, a failed run's copy would fill the disk the next
        run imports into."""
        shutil.rmtree(self.node_dir / "containerd", ignore_errors=True)

    def _remove_log_links(self) -> None:
        """The kubelet's links in /var/log/containers to our pods' logs."""
        links = Path("/var/log/containers")
        for link in links.glob("*.log") if links.is_dir() else ():
            if link.is_symlink() and str(self.pod_logs_dir) in os.readlink(link):
                link.unlink()

    def leftovers(self) -> list[str]:
        """What of the node is still on this machine after `stop()`: should be nothing."""
        links = [str(p) for p in Path("/var/log/containers").glob("*.log")
                 if p.is_symlink() and str(self.pod_logs_dir) in os.readlink(p)]
        store = [str(self.node_dir / "containerd")] if (self.node_dir / "containerd").exists() else []
        return host.leftovers(self.node_dir, self.sysctls) + links + store + [
            f"process {name}" for name, proc in self._procs if proc.poll() is None]
