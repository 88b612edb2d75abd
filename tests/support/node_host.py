"""What the test node (tests/support/node.py) changes on this machine outside its own directory, and how
each change is taken back: the bridge and its firewall chains, the iptables rules that the kubelet and
kube-proxy leave behind, the kernel settings the kubelet changes, pods' cgroups and processes, and
mounts. `leftovers()` lists whatever is still there.

A run that was killed (CI's limit, a Ctrl-C twice) tears nothing down; the state file says what it
started, and the next node removes that first (`recover_killed_run`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .controlplane import REPO_ROOT

# The pod network: a /24 on a bridge of our own; nothing on this machine uses 10.244/16 (its own
# network is 192.0.2.0/24, Docker's 172.17/16). The bridge's address is the node's address.
BRIDGE = "chatterbox0"
POD_CIDR = "10.244.0.0/24"
NODE_ADDRESS = "10.244.0.1"
FIREWALL_CHAIN = "CHATTERBOX-NODE"  # filter FORWARD: what pods may send
INBOUND_CHAIN = "CHATTERBOX-NODE-IN"  # raw PREROUTING: what may reach the node from outside
STATE = Path("/run/chatterbox-test-node.json")
# Set by the kubelet at start (its "kernel defaults") and left so; stop() puts back what was there.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")


class NodeError(RuntimeError):
    pass


def run(*argv: str, check: bool = True, timeout: float = 60, input: bytes | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(argv)} exited with {result.returncode}:\n"
                        f"{result.stderr.decode(errors='replace')[-3000:]}")
    return result.stdout.decode(errors="replace")


def system_deps() -> None:
    """Debian's packages the node runs on, installed when missing (hack/system-deps.sh, root)."""
    run("bash", str(REPO_ROOT / "hack/system-deps.sh"), "containerd", "runc", "cni-bridge", "iptables",
        "conntrack", "ip", timeout=900)


def network_up(node_dir: Path) -> None:
    """The bridge with the node's address, the firewall chain, and the CNI config (in node_dir/cni)
    that puts each pod on the bridge."""
    network_down()  # a bridge or rule left by a run that was killed
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{NODE_ADDRESS}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    # Docker sets the FORWARD policy to DROP: pods on the bridge may talk to each other (bridged
    # frames pass iptables where br_netfilter is on, as kube-proxy needs), and nowhere else.
    run("iptables", "-N", FIREWALL_CHAIN)
    run("iptables", "-A", FIREWALL_CHAIN, "-s", POD_CIDR, "-d", POD_CIDR, "-j", "ACCEPT")
    run("iptables", "-A", FIREWALL_CHAIN, "-s", POD_CIDR, "-j", "DROP")
    run("iptables", "-A", FIREWALL_CHAIN, "-d", POD_CIDR, "-j", "DROP")
    run("iptables", "-I", "FORWARD", "1", "-j", FIREWALL_CHAIN)
    # The API server and the kubelet listen on the bridge's address, which Linux would accept on any
    # interface: only this machine (lo) and the pods (the bridge) may reach it, or any pod or NodePort.
    run("iptables", "-t", "raw", "-N", INBOUND_CHAIN)
    run("iptables", "-t", "raw", "-A", INBOUND_CHAIN, "-i", "lo", "-j", "RETURN")
    run("iptables", "-t", "raw", "-A", INBOUND_CHAIN, "-i", BRIDGE, "-j", "RETURN")
    run("iptables", "-t", "raw", "-A", INBOUND_CHAIN, "-d", POD_CIDR, "-j", "DROP")
    run("iptables", "-t", "raw", "-I", "PREROUTING", "1", "-j", INBOUND_CHAIN)
    cni = node_dir / "cni"
    cni.mkdir(exist_ok=True)
    (cni / "10-chatterbox.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "chatterbox-pods",
        "plugins": [
            # No ipMasq: pod traffic is never translated for the outside, where it may not go.
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_ADDRESS}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(node_dir / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2))


def network_down() -> None:
    jumps = (("filter", "FORWARD", FIREWALL_CHAIN), ("raw", "PREROUTING", INBOUND_CHAIN))
    for table, builtin, chain in jumps:
        for _ in range(5):  # one jump normally; more only if earlier runs were killed half-way
            if f"-j {chain}" not in run("iptables", "-t", table, "-S", builtin, check=False):
                break
            run("iptables", "-t", table, "-D", builtin, "-j", chain, check=False)
        run("iptables", "-t", table, "-F", chain, check=False)
        run("iptables", "-t", table, "-X", chain, check=False)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run("ip", "link", "delete", BRIDGE, check=False)


def remove_kube_iptables() -> None:
    """Every KUBE-* chain and the jumps to them: the kubelet's KUBE-FIREWALL and canaries, which
    nothing removes, and whatever of kube-proxy's its own --cleanup left. All of this machine's: no
    other Kubernetes node runs here (the tier's own precondition)."""
    for command in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = run(command, "-t", table, "-S", check=False).splitlines()
            for rule in rules:  # jumps from the built-in chains first, then the chains themselves
                words = shlex.split(rule)  # kube-proxy's comments are quoted
                if words[0] == "-A" and not words[1].startswith("KUBE-") and " -j KUBE-" in rule:
                    run(command, "-t", table, "-D", *words[1:], check=False)
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for chain in chains:
                run(command, "-t", table, "-F", chain, check=False)
            for chain in chains:
                run(command, "-t", table, "-X", chain, check=False)


def remove_cgroups() -> None:
    """containerd puts pods' cgroups under k8s.io/ in each hierarchy (cgroup v1, no QoS classes);
    runc removes each container's, and the empty parents are removed here. A process still in one
    (a container whose runtime was killed) is killed first."""
    deadline = time.monotonic() + 10
    while pids := {int(pid) for procs in Path("/sys/fs/cgroup").glob("*/k8s.io/**/cgroup.procs")
                   for pid in procs.read_text().split()}:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            break  # leftovers() reports what stayed
        time.sleep(0.2)  # a killed process leaves its cgroup only when it has exited
    for parent in Path("/sys/fs/cgroup").glob("*/k8s.io"):
        for directory in sorted(parent.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    directory.rmdir()
        with contextlib.suppress(OSError):
            parent.rmdir()


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory) + "/"
    mounts = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    return sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True)


def unmount_under(directory: Path) -> None:
    """Unmounts everything mounted under `directory` (volumes, rootfs overlays, shm, network
    namespaces), deepest first."""
    for _ in range(3):  # a lazy unmount can leave a parent busy for a moment
        ours = _mounts_under(directory)
        if not ours:
            return
        for mount in ours:
            run("umount", "--lazy", mount, check=False)
        time.sleep(0.5)


def read_sysctls() -> dict[str, str]:
    return {key: (Path("/proc/sys") / key).read_text().strip() for key in KUBELET_SYSCTLS}


def write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)


def save_state(node_dir: Path, pids: list[int], sysctls: dict[str, str]) -> None:
    """What a killed run would leave for the next one to remove (see recover_killed_run)."""
    STATE.write_text(json.dumps({"node_dir": str(node_dir), "pids": pids, "sysctls": sysctls}))


def recover_killed_run() -> None:
    """Removes what a node whose run was killed left: its processes, its containers (by their cgroups:
    their shims name its containerd socket), mounts, cgroups, rules, bridge, directory and the
    kernel settings it changed."""
    if not STATE.exists():
        return
    state = json.loads(STATE.read_text())
    node_dir = Path(state["node_dir"])
    for pid in state["pids"]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    socket = str(node_dir / "containerd" / "containerd.sock")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if socket in cmdline.read_bytes().decode(errors="replace"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
    time.sleep(1)
    remove_cgroups()
    unmount_under(node_dir)
    remove_kube_iptables()
    network_down()
    write_sysctls(state["sysctls"])
    shutil.rmtree(node_dir, ignore_errors=True)
    STATE.unlink()


def leftovers(node_dir: Path, sysctls: dict[str, str]) -> list[str]:
    """What of a stopped node is still on this machine: should be nothing."""
    left = _mounts_under(node_dir)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        left.append(f"the bridge {BRIDGE}")
    if FIREWALL_CHAIN in run("iptables", "-S", check=False):
        left.append(f"the iptables chain {FIREWALL_CHAIN}")
    if INBOUND_CHAIN in run("iptables", "-t", "raw", "-S", check=False):
        left.append(f"the iptables chain {INBOUND_CHAIN}")
    for command in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            if "KUBE-" in run(command, "-t", table, "-S", check=False):
                left.append(f"kube-proxy's or the kubelet's rules in {command}' {table} table")
    changed = {k: v for k, v in read_sysctls().items() if sysctls.get(k) != v}
    if changed:
        left.append(f"kernel settings the kubelet changed: {changed}")
    if STATE.exists():
        left.append(str(STATE))
    return left + [str(p) for p in Path("/sys/fs/cgroup").glob("*/k8s.io")]
