"""The predictor image, run the plan's way: `docker run` with a volume at /voices, the port published,
random weights and a key from a mounted file. Upload, list, generate, delete, as a user of a single
RunPod GPU pod would."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.containers import API_KEY, APPUSER, docker, ffprobe
from tests.support.controlplane import REPO_ROOT, unique_name

BASE_IMAGE = "python:3.11-slim-bookworm"  # the Dockerfiles' FROM
TEXT = {"text": "Hello from the container.", "seed": 3, "max_new_tokens": 20}


pytestmark = pytest.mark.images


def test_the_image_declares_its_user_port_health_check_and_entry_point(images):
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", images.predictor))
    assert config["User"] == f"{APPUSER}:{APPUSER}"
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] == "CMD" and "/health" in " ".join(config["Healthcheck"]["Test"])
    assert config["Entrypoint"] == ["python", "-m", "chatterbox_predictor"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HF_HOME"].startswith("/home/appuser/") and env["CHATTERBOX_VOICES_DIR"] == "/voices"


@pytest.mark.parametrize("image", ["predictor", "operator"])
def test_the_certificates_given_to_the_build_stage_stay_out_of_the_image(images, image):
    """hack/build-images.sh hands this machine's added CAs (a TLS-intercepting proxy's) to pip in the
    build stages; the runtime image trusts exactly its base's bundle, whatever this machine adds."""
    def bundle(ref: str) -> str:
        return docker("run", "--rm", "--entrypoint", "cat", ref, "/etc/ssl/certs/ca-certificates.crt")

    assert "BEGIN CERTIFICATE" in bundle(getattr(images, image))
    assert bundle(getattr(images, image)) == bundle(BASE_IMAGE)
    for added in Path("/usr/local/share/ca-certificates").glob("*.crt"):  # the build saw these
        body = "".join(added.read_text().strip().splitlines()[1:-1])
        assert body[:200] not in "".join(bundle(getattr(images, image)).splitlines())


def test_the_container_runs_as_a_non_root_user_and_docker_reports_it_healthy(predictor):
    status = predictor.container.exec("cat", "/proc/1/status")
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {str(APPUSER)}  # real, effective, saved and file-system uid
    assert predictor.container.inspect("{{.State.Health.Status}}") == "healthy"
    # Its caches are its own to write, with no volume over them.
    predictor.container.exec("touch", "/home/appuser/.cache/huggingface/probe",
                             "/home/appuser/.cache/chatterbox-predictor/probe")


def test_without_the_key_from_the_mounted_file_only_the_probes_answer(predictor):
    assert httpx.get(f"{predictor.url}/voices").status_code == 401
    assert httpx.get(f"{predictor.url}/voices", headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(f"{predictor.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{predictor.url}/voices", headers=predictor.headers).status_code == 200


def test_the_playground_page_and_its_files_are_in_the_installed_package(predictor):
    """The image installs the package (not editable): the page's static files must travel with it."""
    page = httpx.get(f"{predictor.url}/", headers={"Accept": "text/html"}, follow_redirects=True)
    assert page.status_code == 200 and page.url.path == "/playground"
    assert "<h1>Chatterbox playground</h1>" in page.text
    for name in ("app.js", "api.js", "audio.js", "player-worklet.js", "style.css"):
        assert httpx.get(f"{predictor.url}/playground/{name}").status_code == 200, name
    assert httpx.get(f"{predictor.url}/playground/config").json()["auth"] is True


def test_the_plans_flow_upload_list_generate_delete(predictor, voice_bytes, tmp_path):
    url, headers = predictor.url, predictor.headers
    # A fresh host directory belongs to root: the server says what is wrong instead of failing blind.
    os.chown(predictor.voices, 0, 0)
    refused = httpx.post(f"{url}/voices", headers=headers, files={"file": ("narrator.pth", voice_bytes)})
    assert refused.status_code == 500, refused.text
    assert f"must be writable by uid {APPUSER}" in refused.json()["detail"]
    assert "is not writable by uid 1000" in predictor.container.logs()  # said at start, before any upload
    os.chown(predictor.voices, APPUSER, APPUSER)  # what the README tells a RunPod user to do

    created = httpx.post(f"{url}/voices", headers=headers, files={"file": ("narrator.pth", voice_bytes)})
    assert created.status_code in (200, 201), created.text
    assert "narrator.pth" in httpx.get(f"{url}/voices", headers=headers).json()
    assert (predictor.voices / "narrator.pth").stat().st_uid == APPUSER

    resp = httpx.post(f"{url}/tts/generate", headers=headers, json={**TEXT, "voice_id": "narrator"},
                      timeout=300)
    assert resp.status_code == 200, resp.text
    wav = tmp_path / "narrator.wav"
    wav.write_bytes(resp.content)
    probe = ffprobe(wav)
    stream = probe["streams"][0]
    assert stream["codec_type"] == "audio" and stream["codec_name"] == "pcm_s16le"
    assert int(stream["sample_rate"]) == 24000 and int(stream["nb_read_frames"]) > 0

    assert httpx.delete(f"{url}/voices/narrator", headers=headers).status_code in (200, 204)
    assert "narrator.pth" not in httpx.get(f"{url}/voices", headers=headers).json()
    assert not (predictor.voices / "narrator.pth").exists()


def test_the_cloning_tool_in_the_image_clones_recordings_and_uploads_the_voice(predictor, recordings):
    """The tool as a user of the image runs it: in the predictor's container, on recordings copied in,
    uploading to the server beside it."""
    os.chown(predictor.voices, APPUSER, APPUSER)  # the volume handed to the container's user (README)
    samples = recordings.directory("image-samples", [*recordings.speakers[:2], recordings.silent])
    name = predictor.container.name
    docker("cp", str(samples), f"{name}:/tmp/samples")
    output = docker("exec", name, "sh", "-c", "chatterbox-clone-voice --input_dir /tmp/samples "
                    "--output_voice_id imaged --output_dir /tmp/out --random_weights small --device cpu "
                    f"--upload http://127.0.0.1:8080 --api-key {API_KEY} 2>&1; echo exit=$?", timeout=600)
    print(output)
    assert "exit=0" in output and "silent.wav: rejected: silent" in output
    assert "uploaded to http://127.0.0.1:8080" in output
    assert "imaged.pth" in httpx.get(f"{predictor.url}/voices", headers=predictor.headers).json()
    sidecar = json.loads(docker("exec", name, "cat", "/tmp/out/imaged.json"))
    assert (predictor.voices / "imaged.pth").read_bytes() == docker_bytes(name, "/tmp/out/imaged.pth")
    assert sidecar["sha256"] == hashlib.sha256((predictor.voices / "imaged.pth").read_bytes()).hexdigest()
    assert httpx.delete(f"{predictor.url}/voices/imaged", headers=predictor.headers).status_code == 200


def docker_bytes(container: str, path: str) -> bytes:
    return subprocess.run(["docker", "exec", container, "cat", path], capture_output=True, check=True,
                          timeout=60).stdout


def test_a_voice_dropped_into_the_volume_from_outside_is_served_after_reload(predictor, voice_bytes):
    url, headers = predictor.url, predictor.headers
    # Written by another machine sharing the network volume (here: this host, as root).
    (predictor.voices / "dropped.pth").write_bytes(voice_bytes)
    (predictor.voices / "dropped.pth").chmod(0o644)
    reload = httpx.post(f"{url}/voices/reload", headers=headers)
    assert reload.status_code == 200 and "dropped.pth" in reload.json()["voices"]
    resp = httpx.post(f"{url}/tts/generate", headers=headers, json={**TEXT, "voice_id": "dropped"},
                      timeout=300)
    assert resp.status_code == 200 and resp.content[:4] == b"RIFF", resp.text


def test_a_build_argument_bakes_a_checkpoint_directory_in_and_the_server_picks_it(images):
    """CHECKPOINT_DIR names a directory of the build context; its files land in the image and are
    served when nothing else is given. The files here are empty stand-ins with the variant's names (the
    choice looks at names; loading real files is the unit tiers' business), and the build reuses every
    layer above the checkpoint's, so it takes seconds."""
    from chatterbox_predictor.variants import get_variant

    baked = REPO_ROOT / "checkpoint" / unique_name(".image-tier")  # checkpoint/ is in the build context
    baked.mkdir()
    tag = f"{images.predictor}-baked"
    try:
        for name in get_variant("turbo").required_files:
            (baked / name).write_bytes(b"")
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "hack/build-images.sh"), "predictor"],
            env={**os.environ, "PREDICTOR_IMAGE": tag,
                 "BUILD_ARGS": f"--build-arg CHECKPOINT_DIR={baked.relative_to(REPO_ROOT)}"},
            capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-4000:]
        chosen = docker("run", "--rm", "--entrypoint", "python", tag, "-c",
                        "from chatterbox_predictor.checkpoints import resolve_checkpoint; "
                        "from chatterbox_predictor.settings import PredictorSettings; "
                        "print(resolve_checkpoint(PredictorSettings.load(environ={})))")
        assert chosen.strip() == "/opt/chatterbox/checkpoint"
        # The default build bakes checkpoint/ as it is in git: its README, which makes no checkpoint.
        readme = docker("run", "--rm", "--entrypoint", "ls", images.predictor, "/opt/chatterbox/checkpoint")
        assert readme.split() == ["README.md"]
    finally:
        shutil.rmtree(baked, ignore_errors=True)
        docker("rmi", tag, check=False)
