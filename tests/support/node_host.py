"""What the test node (tests/support/node.py) changes on this machine outside its own directory, and how
each change is taken back: the bridge and its firewall chain, the iptables rules that the kubelet and
kube-proxy leave behind, pods' cgroups, and mounts. `leftovers()` lists whatever is still there.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from pathlib import Path

from .controlplane import REPO_ROOT

# The pod network: a /24 on a bridge of our own; nothing on this machine uses 10.244/16 (its own
# network is 192.0.2.0/24, Docker's 172.17/16). The bridge's address is the node's address.
BRIDGE = "chatterbox0"
POD_CIDR = "10.244.0.0/24"
NODE_ADDRESS = "10.244.0.1"
FIREWALL_CHAIN = "CHATTERBOX-NODE"


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
    for _ in range(5):  # one jump normally; more only if earlier runs were killed half-way
        if f"-j {FIREWALL_CHAIN}" not in run("iptables", "-S", "FORWARD", check=False):
            break
        run("iptables", "-D", "FORWARD", "-j", FIREWALL_CHAIN, check=False)
    run("iptables", "-F", FIREWALL_CHAIN, check=False)
    run("iptables", "-X", FIREWALL_CHAIN, check=False)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run("ip", "link", "delete", BRIDGE, check=False)


def remove_kube_iptables() -> None:
    """Every KUBE-* chain and the jumps to them: the kubelet's KUBE-FIREWALL and canaries, which
    nothing removes, and whatever of kube-proxy's its own --cleanup left."""
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
    runc removes each container's, and the empty parents are removed here."""
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


def leftovers(node_dir: Path) -> list[str]:
    """What of a stopped node is still on this machine: should be nothing."""
    left = _mounts_under(node_dir)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        left.append(f"the bridge {BRIDGE}")
    if FIREWALL_CHAIN in run("iptables", "-S", check=False):
        left.append(f"the iptables chain {FIREWALL_CHAIN}")
    for table in ("filter", "nat", "mangle"):
        if "KUBE-" in run("iptables", "-t", table, "-S", check=False):
            left.append(f"kube-proxy's or the kubelet's rules in iptables' {table} table")
    return left + [str(p) for p in Path("/sys/fs/cgroup").glob("*/k8s.io")]
