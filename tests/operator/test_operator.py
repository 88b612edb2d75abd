"""The Voice operator as a real process under its RBAC, against the real API server, with real sources.

Every Voice here is applied with kubectl and read back with kubectl, as a user would.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.support.controlplane import unique_name

from .conftest import API_KEY, close, endpoint_slice, serve

TIMEOUT = 60  # seconds for a Voice to reach a phase; typically 1-3 s


def _voice(name: str, source: dict, **spec) -> str:
    return yaml.safe_dump({"apiVersion": "tts.chatterbox-k8s.io/v1alpha1", "kind": "Voice",
                           "metadata": {"name": name}, "spec": {"source": source, **spec}})


def _get(cluster, namespace: str, name: str) -> dict:
    return json.loads(cluster.kubectl("get", "voice", name, "-n", namespace, "-o", "json").stdout)


def _wait_for(cluster, namespace: str, name: str, predicate, what: str, timeout: float = TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = _get(cluster, namespace, name)
        if predicate(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{namespace}/{name} never became {what}; status: "
                                 f"{json.dumps(body.get('status'), indent=1)}")
        time.sleep(0.25)


def _phase(cluster, namespace: str, name: str, phase: str, timeout: float = TIMEOUT) -> dict:
    return _wait_for(cluster, namespace, name, lambda b: (b.get("status") or {}).get("phase") == phase
                     and b["status"].get("observedGeneration") == b["metadata"]["generation"],
                     phase, timeout)


def _seen(cluster, namespace: str, name: str, phase: str) -> dict:
    """Waits for a phase that does not last (Pending between retries, Syncing during a download)."""
    return _wait_for(cluster, namespace, name, lambda b: (b.get("status") or {}).get("phase") == phase, phase)


def _condition(body: dict, kind: str) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


def _events(cluster, namespace: str, name: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.name={name}", "-o", "json").stdout
    return [e["reason"] for e in json.loads(out)["items"]]


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@pytest.fixture(scope="module")
def other_voice_bytes(voice_bytes) -> bytes:
    data = torch.load(io.BytesIO(voice_bytes), weights_only=True)
    data["t3"]["speaker_emb"] = torch.ones_like(data["t3"]["speaker_emb"])
    buf = io.BytesIO()
    torch.save(data, buf)
    return buf.getvalue()


def test_a_voice_from_a_url_lands_on_the_volume_and_every_ready_replica_reloads(
        cluster, operator, sources, voice_bytes, voices_dir, namespace, replica):
    ready_a, ready_b, unready = replica(), replica(), replica()
    cluster.kubectl("apply", "-f", "-", input=endpoint_slice(
        namespace, "tts", [(ready_a.port, True), (ready_b.port, True), (unready.port, False)]))
    name = unique_name("narrator")
    url = sources.add(voice_bytes)
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_voice(name, {"http": {"url": url}}, sha256=_sha(voice_bytes),
                                 inferenceService="tts"))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"voice/{name}", "--timeout=60s")

    body = _phase(cluster, namespace, name, "Ready")
    assert (voices_dir / f"{name}.pth").read_bytes() == voice_bytes
    assert body["status"]["sha256"] == _sha(voice_bytes) and body["status"]["size"] == len(voice_bytes)
    assert body["status"]["voiceId"] == name and body["status"]["lastSyncTime"]
    assert {c["type"]: c["status"] for c in body["status"]["conditions"]} == {
        "Ready": "True", "Synced": "True", "PredictorsReloaded": "True"}
    assert "2 ready replicas reloaded" in _condition(body, "PredictorsReloaded")["message"]
    assert ready_a.reloads >= 1 and ready_b.reloads >= 1 and unready.reloads == 0
    assert not [p for p in os.listdir(voices_dir) if p.startswith(f".{name}")]  # no temporary files left
    # kubectl get shows the printer columns.
    table = cluster.kubectl("get", "voices", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "VOICE", "ID", "SIZE", "AGE"]
    assert table[1].split()[:4] == [name, "Ready", name, str(len(voice_bytes))]
    assert {"Synced", "Reloaded"} <= set(_events(cluster, namespace, name))


def test_a_new_url_and_checksum_replace_the_file(cluster, operator, sources, voice_bytes, other_voice_bytes,
                                                 voices_dir, namespace):
    name = unique_name("update")
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_voice(name, {"http": {"url": sources.add(voice_bytes)}}, sha256=_sha(voice_bytes)))
    _phase(cluster, namespace, name, "Ready")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(
        name, {"http": {"url": sources.add(other_voice_bytes)}}, sha256=_sha(other_voice_bytes)))
    body = _wait_for(cluster, namespace, name, lambda b: b["status"].get("sha256") == _sha(other_voice_bytes)
                     and b["status"].get("phase") == "Ready", "updated")
    assert body["status"]["observedGeneration"] == 2
    assert (voices_dir / f"{name}.pth").read_bytes() == other_voice_bytes


def test_a_checksum_mismatch_fails_for_good_and_writes_nothing(cluster, operator, sources, voice_bytes,
                                                                voices_dir, namespace):
    name = unique_name("mismatch")
    url = sources.add(voice_bytes)
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_voice(name, {"http": {"url": url}}, sha256="0" * 64))
    body = _phase(cluster, namespace, name, "Failed")
    synced = _condition(body, "Synced")
    assert synced["reason"] == "ChecksumMismatch" and _sha(voice_bytes) in synced["message"]
    assert _condition(body, "Ready")["status"] == "False"
    assert not (voices_dir / f"{name}.pth").exists()
    assert "ChecksumMismatch" in _events(cluster, namespace, name)
    fetched = sources.count(url)
    # The operator looks again, for a later Voice: its source answers 503 twice, so it becomes Ready
    # only after two retry rounds (1 s, then 2 s, the longest backoff here). A retry of the first
    # Voice would have been due within the first of those rounds; its source was not asked again.
    later = unique_name("later")
    later_url = sources.add(voice_bytes)
    sources.failures_left[later_url.removeprefix(sources.url)] = 2
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(later, {"http": {"url": later_url}}))
    _phase(cluster, namespace, later, "Ready")
    assert sources.count(later_url) >= 3
    assert sources.count(url) == fetched
    assert _phase(cluster, namespace, name, "Failed")["status"] == body["status"]


def test_a_pickle_with_a_payload_is_not_a_voice_and_never_runs(cluster, operator, sources, voices_dir,
                                                              namespace, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    buf = io.BytesIO()
    torch.save({"t3": Payload(), "gen": {}}, buf)
    name = unique_name("payload")
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_voice(name, {"http": {"url": sources.add(buf.getvalue())}}))
    body = _phase(cluster, namespace, name, "Failed")
    assert _condition(body, "Synced")["reason"] == "NotAVoice"
    assert "objects other than tensors" in _condition(body, "Synced")["message"]
    assert not marker.exists() and not (voices_dir / f"{name}.pth").exists()


def test_an_unreachable_source_is_retried_until_it_comes_back(cluster, operator, voice_bytes, voices_dir,
                                                               namespace):
    from tests.support.controlplane import free_port

    port = free_port()  # nothing listens here yet
    name = unique_name("later")
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_voice(name, {"http": {"url": f"http://127.0.0.1:{port}/v.pth"}}))
    body = _seen(cluster, namespace, name, "Pending")
    assert _condition(body, "Synced")["reason"] == "SourceUnavailable"
    assert "retrying" in _condition(body, "Synced")["message"]

    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(voice_bytes)))
            self.end_headers()
            self.wfile.write(voice_bytes)

        def log_message(self, *args):
            pass

    server = serve(Handler, port)
    try:
        _phase(cluster, namespace, name, "Ready")
    finally:
        close(server)
    assert (voices_dir / f"{name}.pth").read_bytes() == voice_bytes


def test_a_configmap_source_syncs_and_an_edit_of_the_configmap_is_synced_again(
        cluster, operator, voice_bytes, other_voice_bytes, voices_dir, namespace, tmp_path):
    name = unique_name("alpha")
    path = tmp_path / "voice.pth"
    path.write_bytes(voice_bytes)
    # Applied before its ConfigMap exists, as `kubectl apply -f dir/` may well do: it waits.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(
        name, {"configMap": {"name": "alpha-voice", "key": "voice.pth"}}, voiceId="cloned_voice_alpha"))
    body = _seen(cluster, namespace, name, "Pending")
    assert _condition(body, "Synced")["reason"] == "SourceNotFound"
    cluster.kubectl("create", "configmap", "alpha-voice", "-n", namespace, f"--from-file=voice.pth={path}")
    body = _phase(cluster, namespace, name, "Ready")
    assert body["status"]["voiceId"] == "cloned_voice_alpha"
    assert (voices_dir / "cloned_voice_alpha.pth").read_bytes() == voice_bytes

    path.write_bytes(other_voice_bytes)
    edited = cluster.kubectl("create", "configmap", "alpha-voice", "-n", namespace,
                             f"--from-file=voice.pth={path}", "--dry-run=client", "-o", "yaml").stdout
    cluster.kubectl("apply", "-f", "-", "-n", namespace, input=edited)
    _wait_for(cluster, namespace, name, lambda b: b["status"].get("sha256") == _sha(other_voice_bytes)
              and b["status"]["phase"] == "Ready", "re-synced from the edited ConfigMap")
    assert (voices_dir / "cloned_voice_alpha.pth").read_bytes() == other_voice_bytes


def test_a_file_removed_or_changed_behind_the_operators_back_is_repaired(
        cluster, operator, sources, voice_bytes, voices_dir, namespace):
    name = unique_name("drift")
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_voice(name, {"http": {"url": sources.add(voice_bytes)}}))
    _phase(cluster, namespace, name, "Ready")
    target = voices_dir / f"{name}.pth"
    target.unlink()
    deadline = time.monotonic() + TIMEOUT
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert target.read_bytes() == voice_bytes
    target.write_bytes(b"scribbled over")
    while target.read_bytes() != voice_bytes and time.monotonic() < deadline:
        time.sleep(0.2)
    assert target.read_bytes() == voice_bytes
    _phase(cluster, namespace, name, "Ready")
    assert {"Drift", "DriftRepaired"} <= set(_events(cluster, namespace, name))


def test_a_second_voice_claiming_a_taken_id_fails_clearly_and_takes_over_once_the_first_is_gone(
        cluster, operator, sources, voice_bytes, other_voice_bytes, voices_dir, namespace):
    voice_id = unique_name("shared")
    first, second = unique_name("first"), unique_name("second")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(
        first, {"http": {"url": sources.add(voice_bytes)}}, voiceId=voice_id))
    _phase(cluster, namespace, first, "Ready")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(
        second, {"http": {"url": sources.add(other_voice_bytes)}}, voiceId=voice_id))
    body = _phase(cluster, namespace, second, "Failed")
    synced = _condition(body, "Synced")
    assert synced["reason"] == "VoiceIdTaken" and f"{namespace}/{first}" in synced["message"]
    assert (voices_dir / f"{voice_id}.pth").read_bytes() == voice_bytes  # the first one's file stays

    cluster.kubectl("delete", "voice", first, "-n", namespace, "--timeout=60s")
    _phase(cluster, namespace, second, "Ready")
    assert (voices_dir / f"{voice_id}.pth").read_bytes() == other_voice_bytes


def test_deleting_a_voice_removes_its_file_and_tells_the_replicas_even_when_the_file_is_gone(
        cluster, operator, sources, voice_bytes, voices_dir, namespace, replica):
    replica = replica()
    cluster.kubectl("apply", "-f", "-", input=endpoint_slice(namespace, "tts", [(replica.port, True)]))
    names = [unique_name("gone"), unique_name("gone")]
    for name in names:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(
            name, {"http": {"url": sources.add(voice_bytes)}}, inferenceService="tts"))
    for name in names:
        _phase(cluster, namespace, name, "Ready")
    reloads = replica.reloads
    cluster.kubectl("delete", "voice", names[0], "-n", namespace, "--timeout=60s")
    assert not (voices_dir / f"{names[0]}.pth").exists()
    assert replica.reloads > reloads
    # Removed by hand just before (the drift timer may or may not have put it back by then; the
    # finalizer's missing-file path itself is pinned down in test_units.py).
    (voices_dir / f"{names[1]}.pth").unlink()
    cluster.kubectl("delete", "voice", names[1], "-n", namespace, "--timeout=60s")
    assert cluster.kubectl("get", "voice", names[1], "-n", namespace, check=False).returncode != 0
    assert not (voices_dir / f"{names[1]}.pth").exists()


def test_the_crd_refuses_zero_or_two_sources_and_a_clone_source_without_a_predictor(cluster, operator,
                                                                                      sources, namespace):
    for source in ({}, {"http": {"url": "https://x/a.pth"}, "configMap": {"name": "a", "key": "b"}}):
        result = cluster.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                                 input=_voice(unique_name("bad"), source))
        assert result.returncode != 0 and "exactly one source" in result.stderr
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                             input=_voice("bad", {"http": {"url": "https://x/a.pth"}}, voiceId="../etc"))
    assert result.returncode != 0 and "spec.voiceId" in result.stderr
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                             input=_voice(unique_name("clone"), {"clone": {"audioUrls": ["https://x/a.wav"]}}))
    assert result.returncode != 0 and "needs spec.inferenceService" in result.stderr
    name = unique_name("fixed")
    missing = {"http": {"url": f"{sources.url}/missing.pth"}}  # on loopback: nothing leaves the machine
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(name, missing))
    # voiceId cannot change under a Voice (its file would be orphaned).
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", check=False, input=_voice(
        name, missing, voiceId="other"))
    assert result.returncode != 0 and "immutable" in result.stderr


def test_a_clone_source_waits_for_a_ready_predictor(cluster, operator, sources, recordings, namespace):
    name = unique_name("clone")
    url = sources.add_file(recordings.speakers[0].read_bytes(), f"{name}.wav")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(
        name, {"clone": {"audioUrls": [url]}}, inferenceService="nobody"))
    body = _phase(cluster, namespace, name, "Pending")
    assert _condition(body, "Synced")["reason"] == "NoReadyReplicas"
    assert "nobody-predictor" in _condition(body, "Synced")["message"]


def _temporary_files(directory: Path) -> list[str]:
    """Hidden or .tmp files anywhere under `directory`, claims included: a write in progress
    (write_atomic's temporaries are `.<name>.<random>.tmp`) or one that a crash left behind."""
    return [os.path.join(root, f) for root, _, files in os.walk(directory) for f in files
            if f.startswith(".") or f.endswith(".tmp")]


def test_an_operator_killed_mid_download_leaves_no_partial_file_and_loses_no_voice(
        cluster, operator, sources, voice_bytes, other_voice_bytes, voices_dir, namespace):
    kept = unique_name("kept")
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_voice(kept, {"http": {"url": sources.add(voice_bytes)}}))
    _phase(cluster, namespace, kept, "Ready")
    name = unique_name("slow")
    url, stall = sources.add_stalled(other_voice_bytes)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(name, {"http": {"url": url}}))
    assert stall.sent.wait(TIMEOUT), "the operator never started the download"
    assert _get(cluster, namespace, name)["status"]["phase"] == "Syncing"
    operator.kill()  # SIGKILL with the first bytes sent and the rest still owed

    assert not (voices_dir / f"{name}.pth").exists()
    assert _temporary_files(voices_dir) == []
    operator.start()
    stall.release.set()
    body = _phase(cluster, namespace, name, "Ready")
    assert body["status"]["sha256"] == _sha(other_voice_bytes)
    assert _sha((voices_dir / f"{name}.pth").read_bytes()) == _sha(other_voice_bytes)
    assert sources.count(url) >= 2  # fetched again from the start, not resumed from a partial file
    assert _temporary_files(voices_dir) == []
    assert (voices_dir / f"{kept}.pth").read_bytes() == voice_bytes
    assert _get(cluster, namespace, kept)["status"]["phase"] == "Ready"


def test_fifty_voices_applied_at_once_all_become_ready(cluster, operator, sources, voice_bytes, voices_dir,
                                                       namespace):
    names = [unique_name("many") for _ in range(50)]
    url = sources.add(voice_bytes)
    manifest = "---\n".join(_voice(n, {"http": {"url": url}}, sha256=_sha(voice_bytes)) for n in names)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    deadline = time.monotonic() + 180
    while True:
        items = json.loads(cluster.kubectl("get", "voices", "-n", namespace, "-o", "json").stdout)["items"]
        phases = [(i.get("status") or {}).get("phase") for i in items]
        if phases.count("Ready") == 50:
            break
        assert time.monotonic() < deadline, f"not all Ready: {sorted(map(str, phases))}"
        time.sleep(0.5)
    assert all((voices_dir / f"{n}.pth").read_bytes() == voice_bytes for n in names)


@pytest.fixture
def real_predictor(cluster, voices_dir, namespace, random_checkpoint, tmp_path):
    """The real predictor on the small random checkpoint and the shared voice volume, as the ready replica
    of the InferenceService `chatterbox` in the test's namespace (an EndpointSlice points at it)."""
    from tests.support.processes import ServerProcess

    checkpoint = random_checkpoint("turbo")
    predictor = ServerProcess(["--model_name", "chatterbox", "--checkpoint_dir", str(checkpoint),
                               "--voices_dir", str(voices_dir), "--api_keys", API_KEY, "--token_cap", "20",
                               # a long scan interval: a voice must arrive through the operator's reload
                               "--voice_scan_interval", "3600"], tmp_path / "predictor.log")
    try:
        predictor.wait_ready("/v2/health/ready")
        cluster.kubectl("apply", "-f", "-", input=endpoint_slice(namespace, "chatterbox",
                                                                 [(predictor.port, True)]))
        yield predictor
    finally:
        predictor.stop()


@pytest.mark.slow
def test_a_voice_applied_with_kubectl_is_spoken_by_the_real_predictor(
        cluster, operator, sources, voice_bytes, voices_dir, namespace, real_predictor):
    import httpx

    predictor = real_predictor
    name = unique_name("spoken")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(
        name, {"http": {"url": sources.add(voice_bytes)}}, inferenceService="chatterbox"))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"voice/{name}", "--timeout=60s")
    body = _get(cluster, namespace, name)
    assert "1 ready replicas reloaded" in _condition(body, "PredictorsReloaded")["message"]
    headers = {"X-API-Key": API_KEY}
    assert f"{name}.pth" in httpx.get(f"{predictor.url}/voices", headers=headers).json()
    resp = httpx.post(f"{predictor.url}/tts/generate", headers=headers, timeout=120,
                      json={"text": "Hello from the operator.", "voice_id": name, "seed": 1})
    assert resp.status_code == 200, resp.text
    assert resp.content[:4] == b"RIFF" and len(resp.content) > 44 + 2 * 1000


@pytest.mark.slow
def test_a_clone_source_is_cloned_by_the_real_predictor_synced_and_spoken(
        cluster, operator, sources, recordings, voices_dir, namespace, real_predictor):
    import httpx

    predictor = real_predictor
    name = unique_name("cloned")
    files = [*recordings.speakers[:2], recordings.silent]
    urls = [sources.add_file(p.read_bytes(), f"{name}-{p.name}") for p in files]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(
        name, {"clone": {"audioUrls": urls, "exaggeration": 0.4}}, inferenceService="chatterbox"))
    body = _phase(cluster, namespace, name, "Ready", timeout=300)
    clone = body["status"]["clone"]
    assert clone["recordings"] == 3 and clone["segments"] == 2 and clone["speechSeconds"] > 10
    assert clone["replica"] == "chatterbox-predictor-" + str(predictor.port)
    assert [r["recording"] for r in clone["rejected"]] == [f"{name}-silent.wav"]
    assert clone["rejected"][0]["reason"].startswith("silent")
    assert 0 < clone["similarityMin"] <= clone["similarityMean"] <= 1
    assert clone["syncedGeneration"] == body["metadata"]["generation"]
    assert predictor.log().count("cloning a voice from 3 recordings") == 1
    events = set(_events(cluster, namespace, name))
    assert {"Cloned", "RecordingsRejected", "Synced", "Reloaded"} <= events
    raw = (voices_dir / f"{name}.pth").read_bytes()
    assert _sha(raw) == body["status"]["sha256"]
    stored = torch.load(io.BytesIO(raw), weights_only=True)
    assert float(stored["t3"]["emotion_adv"]) == pytest.approx(0.4)
    headers = {"X-API-Key": API_KEY}
    assert f"{name}.pth" in httpx.get(f"{predictor.url}/voices", headers=headers).json()
    resp = httpx.post(f"{predictor.url}/tts/generate", headers=headers, timeout=120,
                      json={"text": "Cloned by the operator.", "voice_id": name, "seed": 1})
    assert resp.status_code == 200 and resp.content[:4] == b"RIFF", resp.text
    # Removed behind the operator's back: cloned again, to the same bytes.
    (voices_dir / f"{name}.pth").unlink()
    deadline = time.monotonic() + 300
    while not (voices_dir / f"{name}.pth").exists():
        assert time.monotonic() < deadline, "the cloned voice was not repaired"
        time.sleep(0.5)
    _phase(cluster, namespace, name, "Ready", timeout=300)
    assert (voices_dir / f"{name}.pth").read_bytes() == raw
    assert predictor.log().count("cloning a voice from 3 recordings") == 2  # the repair, once


def test_the_replica_works_through_kopf_peering(cluster, operator):
    peering = json.loads(cluster.kubectl("get", "clusterkopfpeering", "chatterbox-voice-operator",
                                         "-o", "json").stdout)
    peers = peering.get("status") or {}
    assert peers, "the operator announced itself to no peering object"
    assert all(p["priority"] > 0 for p in peers.values())  # each replica's own, from its start time


def test_an_operator_scoped_to_one_namespace_leaves_the_others_alone(
        cluster, operator, sources, voice_bytes, voices_dir, tmp_path):
    from .conftest import OperatorProcess

    served, other = unique_name("served"), unique_name("other")
    for ns in (served, other):
        cluster.kubectl("create", "namespace", ns)
    operator.stop()  # the cluster-wide one would take the Voices of both
    scoped = OperatorProcess(operator.kubeconfig, voices_dir, tmp_path)
    scoped.env["VOICE_OPERATOR_NAMESPACES"] = served
    scoped.start()
    try:
        url = sources.add(voice_bytes)
        untouched = cluster.kubectl(  # the version as created: any write by an operator changes it
            "apply", "-n", other, "-f", "-", "-o", "jsonpath={.metadata.resourceVersion}",
            input=_voice("theirs", {"http": {"url": url}}, voiceId=unique_name("theirs"))).stdout
        cluster.kubectl("apply", "-n", served, "-f", "-", input=_voice("mine", {"http": {"url": url}},
                                                                     voiceId=unique_name("mine")))
        # "mine" was created after "theirs", so an operator watching both namespaces would see
        # "theirs" first, and would have written to it (its finalizer first of all) by the time it
        # has taken "mine" all the way to Ready.
        _phase(cluster, served, "mine", "Ready")
        theirs = _get(cluster, other, "theirs")
        assert "status" not in theirs and not theirs["metadata"].get("finalizers")
        assert theirs["metadata"]["resourceVersion"] == untouched
        # Its peering object lives in the namespace it serves.
        cluster.kubectl("get", "kopfpeering", "chatterbox-voice-operator", "-n", served)
    finally:
        scoped.stop()
        operator.start()
    _phase(cluster, other, "theirs", "Ready")  # the cluster-wide operator, back, takes it


def test_a_second_replica_takes_over_and_the_first_stands_by_until_it_is_gone(
        cluster, operator, sources, voice_bytes, voices_dir, namespace, tmp_path):
    from .conftest import OperatorProcess

    newer = OperatorProcess(operator.kubeconfig, voices_dir, tmp_path)
    newer.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while "Pausing" not in operator.log() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "Pausing" in operator.log(), operator.log()[-3000:]  # the older replica stands by
        name = unique_name("peered")
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=_voice(name, {"http": {"url": sources.add(voice_bytes)}}))
        _phase(cluster, namespace, name, "Ready")
        assert name in newer.log() and name not in operator.log()
    finally:
        newer.stop()  # a clean exit removes its peering record: the older one resumes at once
    name = unique_name("resumed")
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_voice(name, {"http": {"url": sources.add(voice_bytes)}}))
    _phase(cluster, namespace, name, "Ready")
    assert "Resuming" in operator.log()


def test_a_5xx_source_is_retried_and_a_404_is_not(cluster, operator, sources, voice_bytes, voices_dir,
                                                   namespace):
    flaky, missing = unique_name("flaky"), unique_name("missing")
    url = sources.add(voice_bytes)
    sources.statuses[url.removeprefix(sources.url)] = 503
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(flaky, {"http": {"url": url}}))
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_voice(missing, {"http": {"url": sources.url + "/nowhere.pth"}}))
    body = _seen(cluster, namespace, flaky, "Pending")
    assert "HTTP 503" in _condition(body, "Synced")["message"]
    body = _phase(cluster, namespace, missing, "Failed")
    assert _condition(body, "Synced")["reason"] == "SourceRefused"
    del sources.statuses[url.removeprefix(sources.url)]
    _phase(cluster, namespace, flaky, "Ready")
    assert (voices_dir / f"{flaky}.pth").read_bytes() == voice_bytes


def test_a_secret_source_syncs(cluster, operator, voice_bytes, voices_dir, namespace, tmp_path):
    path = tmp_path / "voice.pth"
    path.write_bytes(voice_bytes)
    cluster.kubectl("create", "secret", "generic", "private-voice", "-n", namespace,
                    f"--from-file=voice.pth={path}")
    name = unique_name("private")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_voice(
        name, {"secret": {"name": "private-voice", "key": "voice.pth"}}, sha256=_sha(voice_bytes)))
    _phase(cluster, namespace, name, "Ready")
    assert (voices_dir / f"{name}.pth").read_bytes() == voice_bytes
