"""`helm` (the binary `make tools` builds into bin/) against a test control plane.

Helm keeps caches, repository lists and plugins under $HOME and the XDG directories; each Helm here
gets its own in a temporary directory, so that tests never read or write the user's.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from .controlplane import REPO_ROOT, KubectlError, tool

CHART = REPO_ROOT / "charts" / "chatterbox-tts"


class Helm:
    def __init__(self, home: Path, kubeconfig: Path | None = None):
        home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
                    "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data")}
        self.env.pop("KUBECONFIG", None)
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([str(tool("helm")), *args], capture_output=True, text=True, env=self.env,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, ["helm", *args], result.stdout, result.stderr)
        return result

    def template(self, *args: str, release: str = "tts", namespace: str = "tts") -> str:
        """`helm template` of the chart; `args` adds --values / --set flags."""
        return self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout

    def render(self, *args: str, release: str = "tts", namespace: str = "tts") -> list[dict]:
        """The rendered objects, parsed (empty documents dropped)."""
        rendered = self.template(*args, release=release, namespace=namespace)
        return [d for d in yaml.safe_load_all(rendered) if d]


def values_args(*files: Path) -> list[str]:
    return [arg for f in files for arg in ("--values", str(f))]
