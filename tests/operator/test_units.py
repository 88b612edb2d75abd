"""The operator's plain parts, without a cluster: settings, replica discovery, claims, status conditions."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
from chatterbox_voicefile import Owner

from voice_operator.predictors import Replica, _pick_port, ready_replicas
from voice_operator.reconcile import Context, owner_of, remove
from voice_operator.settings import OperatorSettings
from voice_operator.status import VoiceStatus
from voice_operator.store import VoiceStore


def test_settings_come_from_the_environment_and_bad_values_name_the_variable(tmp_path):
    settings = OperatorSettings.from_env({"VOICE_OPERATOR_NAMESPACES": "a, b,,c",
                                          "VOICE_OPERATOR_STANDALONE": "yes",
                                          "VOICE_OPERATOR_VOICES_DIR": str(tmp_path)})
    assert settings.namespaces == ("a", "b", "c") and settings.standalone and settings.voices_dir == tmp_path
    assert OperatorSettings.from_env({}).namespaces == ()  # all namespaces
    with pytest.raises(ValueError, match="VOICE_OPERATOR_VARIANT: Input should be 'turbo'"):
        OperatorSettings.from_env({"VOICE_OPERATOR_VARIANT": "klingon"})
    with pytest.raises(ValueError, match="VOICE_OPERATOR_DRIFT_INTERVAL: Input should be greater than 0"):
        OperatorSettings.from_env({"VOICE_OPERATOR_DRIFT_INTERVAL": "-1"})
    with pytest.raises(ValueError, match="VOICE_OPERATOR_STANDALONE: 'sometimes' is not a boolean"):
        OperatorSettings.from_env({"VOICE_OPERATOR_STANDALONE": "sometimes"})
    assert OperatorSettings.from_env({"VOICE_OPERATOR_API_KEY_FILE": ""}).api_key_file is None


def test_the_api_key_is_read_from_its_file_at_each_use(tmp_path):
    key = tmp_path / "key"
    key.write_text("first\n")
    settings = OperatorSettings(api_key_file=key)
    assert settings.api_key == "first"
    key.write_text("rotated\n")
    assert settings.api_key == "rotated"


def test_the_predictor_port_is_the_named_one_the_only_one_or_http():
    ports = [NS(name="metrics", port=9090), NS(name="http", port=8080)]
    assert _pick_port(ports, "") == 8080
    assert _pick_port(ports, "metrics") == 9090
    assert _pick_port([NS(name=None, port=8080)], "") == 8080
    assert _pick_port([NS(name="a", port=1), NS(name="b", port=2)], "") is None


def test_only_ready_endpoints_that_are_not_terminating_are_replicas():
    def endpoint(address, ready, terminating=None):
        return NS(addresses=[address], conditions=NS(ready=ready, terminating=terminating),
                  target_ref=NS(name=f"pod-{address}"))

    endpoint_slice = NS(ports=[NS(name="http", port=8080)], endpoints=[
        endpoint("10.0.0.1", True), endpoint("10.0.0.2", None), endpoint("10.0.0.3", False),
        endpoint("10.0.0.4", True, terminating=True)])
    api = NS(list_namespaced_endpoint_slice=lambda namespace, label_selector: NS(items=[endpoint_slice]))
    assert ready_replicas(api, "ns", "svc", "") == [Replica("10.0.0.1", 8080, "pod-10.0.0.1"),
                                                    Replica("10.0.0.2", 8080, "pod-10.0.0.2")]


def test_the_api_key_file_may_hold_comments_as_the_predictors_does(tmp_path):
    key = tmp_path / "key"
    key.write_text("# rotated on Monday\n\nsecret\nold-secret\n")
    assert OperatorSettings(api_key_file=key).api_key == "secret"


def test_voice_ids_that_differ_only_around_a_suffix_get_their_own_claims(tmp_path):
    store = VoiceStore(tmp_path)
    first, second = Owner("ns", "a", "uid-1"), Owner("ns", "b", "uid-2")
    assert store.claim("a.pth.x", first) == first
    assert store.claim("a.json.x", second) == second


def test_deleting_a_voice_whose_file_is_already_gone_lets_go_and_releases_the_id(tmp_path):
    store = VoiceStore(tmp_path)
    body = {"metadata": {"namespace": "ns", "name": "v", "uid": "uid-1"}, "spec": {"source": {}}}
    events = []
    ctx = Context(OperatorSettings(voices_dir=tmp_path), store, api=None,
                  events=lambda _body, kind, reason, message: events.append((kind, reason, message)))
    store.claim("v", owner_of(body))
    store.write("v", b"voice")
    store.path("v").unlink()  # removed behind the operator's back
    remove(ctx, body)  # no InferenceService: no API call, no predictor to tell
    assert events == [("Normal", "Deleted", "v.pth was already gone")]
    assert store.owner("v") is None


def test_a_voice_id_is_claimed_once_and_a_stale_claim_can_be_taken_over(tmp_path):
    store = VoiceStore(tmp_path)
    first, second = Owner("ns", "a", "uid-1"), Owner("ns", "b", "uid-2")
    assert store.claim("alpha", first) == first
    assert store.claim("alpha", second) == first  # taken
    assert store.claim("alpha", second, replace_stale=first) == second
    store.release("alpha", first)  # not the holder: nothing happens
    assert store.owner("alpha") == second
    store.release("alpha", second)
    assert store.owner("alpha") is None
    assert not list(tmp_path.glob("*.pth"))  # claims live apart from voice files


def test_ready_summarises_synced_and_predictors_reloaded_and_keeps_transition_times():
    status = VoiceStatus(api=None, body={"metadata": {"namespace": "n", "name": "v", "generation": 3}})
    status.set_condition("Synced", False, "SourceUnavailable", "down")
    ready = status.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SourceUnavailable")
    since = ready["lastTransitionTime"]
    status.set_condition("Synced", True, "Synced", "wrote it")
    ready = status.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReloadPending")  # predictors not told yet
    assert ready["lastTransitionTime"] == since
    status.set_condition("PredictorsReloaded", True, "Reloaded", "2 replicas")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Ready", 3)


def test_a_recordings_name_comes_from_its_url_and_cannot_break_the_multipart_header():
    from voice_operator.sources import recording_name

    assert recording_name("https://h/anna/take-1.wav?sig=x", 0) == "take-1.wav"
    assert recording_name("https://h/a/..%2F..%2Fetc%2Fpasswd", 0) == "passwd"  # never a path
    assert recording_name('https://h/x%22%0D%0AContent-Type:%20evil.wav', 2) == "x___Content-Type__evil.wav"
    assert recording_name("https://h/", 2) == "recording-3"


def test_a_clone_the_predictor_refuses_is_permanent_and_an_unavailable_one_is_retried(tmp_path):
    """A real HTTP server on loopback stands in for the predictor's /voices/clone answers."""
    import http.server
    import threading

    from voice_operator.failures import PermanentFailure, TemporaryFailure
    from voice_operator.predictors import clone_on

    answers = {"/voices/clone?exaggeration=0.5": 422}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            status = answers.get(self.path, 503)
            body = b'{"detail": "no usable speech to clone from: a.wav: rejected: silent"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        replica = Replica("127.0.0.1", server.server_port, "pod-a")
        with pytest.raises(PermanentFailure, match="a.wav: rejected: silent") as refused:
            clone_on(replica, [("a.wav", b"RIFF")], scheme="http", api_key="k", timeout=10, exaggeration=0.5)
        assert refused.value.reason == "CloningRefused"
        with pytest.raises(TemporaryFailure) as unavailable:
            clone_on(replica, [("a.wav", b"RIFF")], scheme="http", api_key="k", timeout=10, exaggeration=1.0)
        assert unavailable.value.reason == "CloneUnavailable" and "503" in str(unavailable.value)
    finally:
        server.shutdown()
        server.server_close()
