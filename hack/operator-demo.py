"""A kubectl session against a throwaway control plane with the Voice operator running: the transcript
the operator issue asks for, and a way to try the operator without a cluster.

    make tools install && .venv/bin/python hack/operator-demo.py

It starts etcd + kube-apiserver (tests/support/controlplane.py), applies manifests/, runs the operator
as its ServiceAccount with a temporary voice directory, serves a random-weight voice file over HTTP on
loopback, then runs and prints each kubectl command.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatterbox_predictor.random_checkpoint import build_random_checkpoint  # noqa: E402
from tests.operator.conftest import OPERATOR_NS, OPERATOR_SA, OperatorProcess, Sources  # noqa: E402
from tests.support.controlplane import ControlPlane  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="operator-demo-"))
    voice = (build_random_checkpoint(work / "checkpoint", "turbo", "small") / "conds.pt").read_bytes()
    sources = Sources()
    url = sources.add(voice, "narrator")
    with ControlPlane(work / "controlplane") as cp:
        def kubectl(*args: str, input: str | None = None) -> None:
            print(f"$ kubectl {shlex.join(args)}")
            result = cp.kubectl(*args, input=input, check=False, timeout=120)
            print((result.stdout + result.stderr).rstrip() + "\n")

        cp.kubectl("apply", "-f", str(REPO / "manifests"))
        voices = work / "voices"
        voices.mkdir()
        operator = OperatorProcess(cp.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA), voices, work)
        operator.start()
        try:
            sample = (REPO / "manifests/samples/voice-http.yaml").read_text()
            sample = sample.replace("https://voices.example.com/narrator.pth", url)
            sample = "\n".join(line for line in sample.splitlines()
                               if not line.lstrip().startswith(("sha256:", "inferenceService:")))
            (work / "narrator.yaml").write_text(sample)
            print(f"# manifests/samples/voice-http.yaml with the URL of a local file server ({url}),")
            print("# no checksum and no InferenceService (no predictor runs here)\n")
            kubectl("apply", "-f", str(work / "narrator.yaml"))
            kubectl("wait", "--for=condition=Ready", "voice/narrator", "--timeout=60s")
            kubectl("get", "voices")
            kubectl("get", "voice", "narrator", "-o", "jsonpath={.status.conditions}")
            print(f"$ ls {voices}\n" + "\n".join(sorted(p.name for p in voices.iterdir())) + "\n")
            kubectl("apply", "-f", "-", input=sample.replace("name: narrator", "name: broken").replace(
                "spec:", "spec:\n  sha256: '" + "0" * 64 + "'"))
            kubectl("wait", "--for=jsonpath={.status.phase}=Failed", "voice/broken", "--timeout=60s")
            kubectl("get", "voices")
            kubectl("describe", "voice", "broken")
            kubectl("delete", "voice", "narrator", "broken")
            kubectl("get", "voices")
            print(f"$ ls {voices}\n" + "\n".join(sorted(p.name for p in voices.glob("*.pth"))) + "\n")
        finally:
            operator.stop()
    sources.server.shutdown()


if __name__ == "__main__":
    main()
