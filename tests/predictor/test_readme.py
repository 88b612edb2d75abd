"""The README's API examples, run as written against a live server, so that the README cannot drift."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import av
import pytest

from tests.support.processes import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"


def api_examples() -> str:
    """The bash blocks of the README's "The API" section."""
    section = README.read_text().split("\n## The API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks, "the README's API section has no bash block"
    return "\n".join(blocks)


@pytest.fixture
def server(random_checkpoint, tmp_path):
    # The README's key and model name; a token cap, because random weights never stop speaking.
    proc = ServerProcess(["--checkpoint_dir", str(random_checkpoint("turbo")), "--voices_dir",
                          str(tmp_path / "voices"), "--api_keys", "mykey", "--token_cap", "20"],
                         tmp_path / "server.log")
    try:
        proc.wait_ready("/v2/health/ready")
        yield proc
    finally:
        proc.stop()


def test_the_readme_api_examples_run_as_written(server, random_checkpoint, recordings, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(random_checkpoint("turbo") / "conds.pt", work / "new_voice_name.pth")  # a real voice file
    for n, speech in enumerate(recordings.speakers[:2], 1):  # espeak-ng speech, for the cloning example
        shutil.copy(speech, work / f"sample{n}.wav")
    script = api_examples().replace("http://localhost:8080", server.url)
    assert script.count("curl ") >= 8
    # Every curl must succeed (an HTTP error fails it), and the script stops at the first that does not.
    prelude = ("set -euo pipefail\n"
               'curl() { command curl --fail-with-body --silent --show-error "$@"; echo; }\n')
    run = subprocess.run(["bash", "-c", prelude + script], cwd=work, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    for name in ("demo_output.wav", "cloned.wav"):
        assert (work / name).read_bytes()[:4] == b"RIFF", name
    with av.open(io.BytesIO((work / "hello.mp3").read_bytes())) as container:
        assert sum(f.samples for f in container.decode(container.streams.audio[0])) > 0
    answers = [json.loads(line) for line in run.stdout.splitlines() if line.startswith(("{", "["))]
    assert {"voice_id": "new_voice_name.pth", "message": "Voice uploaded successfully."} in answers
    assert ["new_voice_name.pth"] in answers
    cloned = next(a for a in answers if isinstance(a, dict) and a.get("voice_id") == "my_clone.pth")
    assert [s["file"] for s in cloned["report"]["segments"]] == ["sample1.wav", "sample2.wav"]
    assert {"message": "Voice 'new_voice_name.pth' deleted successfully."} in answers
    metadata = next(a for a in answers if isinstance(a, dict) and "inputs" in a)
    assert {"name": "text", "datatype": "BYTES", "shape": [1]} in metadata["inputs"]
    infer = next(a for a in answers if isinstance(a, dict) and "outputs" in a)
    assert infer["outputs"][0]["name"] == "audio" and infer["outputs"][0]["datatype"] == "FP32"
