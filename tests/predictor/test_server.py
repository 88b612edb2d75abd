"""The predictor server end to end: a real KServe model server process on a loopback port, the small
random Turbo checkpoint, and real clients (httpx, the openai package, websockets, Open Inference JSON)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import av
import chatterbox_voicefile as voicefile
import httpx
import numpy as np
import openai
import pytest
import torch
import websockets
from chatterbox_voicefile.claims import remove_claim, write_claim

from tests.support.processes import ServerProcess
from tests.support.routes import OPEN, route_table

KEY = "test-key-1"
HEADERS = {"X-API-Key": KEY}
TOKENS = 30  # speech tokens per request: a little over a second of (noise) audio
# Seeded wherever a test counts samples: random weights draw end-of-speech by chance too (about one
# request in 200 at 30 tokens), and an unseeded request that drew it came back short (1 run in 5).
FAST = {"max_new_tokens": TOKENS, "seed": 1}
BATCH = 2  # the module server's max_batch_size


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="module")
def server(random_checkpoint, voices_dir, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("secret") / "keys"
    keys_file.write_text("# mounted Secret\nfile-key\n")
    args = ["--model_name", "chatterbox", "--checkpoint_dir", str(random_checkpoint("turbo")),
            "--voices_dir", str(voices_dir), "--queue_size", "1", "--voice_scan_interval", "0.5",
            # Two rows: small enough that a test can fill the batch and then the queue (the burst test).
            "--max_batch_size", str(BATCH), "--api_keys", KEY, "--api_keys_file", str(keys_file)]
    proc = ServerProcess(args, tmp_path_factory.mktemp("logs") / "server.log")
    try:
        proc.wait_ready("/v2/health/ready")
        proc.keys_file = keys_file
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=120) as c:
        yield c


def _wav(data: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(_fix_stream_sizes(data))) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _fix_stream_sizes(data: bytes) -> bytes:
    """A streamed WAV says "unknown length" (0xFFFFFFFF); Python's wave module wants the real sizes."""
    assert data[:4] == b"RIFF" and data[36:40] == b"data"
    assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    sizes = struct.pack("<I", len(data) - 8), struct.pack("<I", len(data) - 44)
    return data[:4] + sizes[0] + data[8:40] + sizes[1] + data[44:]


# -- health, auth ----------------------------------------------------------------------------------------
def test_every_route_of_the_app_wants_the_key_except_the_probes_and_the_docs(server):
    """Walks the app's own route table (ours and KServe's, as `main` assembles it), so that a route added
    later cannot slip by: each gets a request without a key."""
    table = route_table()
    served = set(httpx.get(f"{server.url}/openapi.json").json()["paths"])
    assert served <= {path for _, path in table}  # the table is the served app's, not a smaller one
    assert {("POST", "/v2/models/{model_name}/infer"), ("POST", "/v2/repository/models/{model_name}/unload"),
            ("GET", "/metrics"), ("WEBSOCKET", "/tts/stream")} <= table
    values = {"model_name": "chatterbox", "model_version": "1", "voice_id": "alpha", "name": "app.js"}
    for method, template in sorted(table):
        path = template.format(**values)
        if method == "WEBSOCKET":
            with pytest.raises(websockets.InvalidStatus) as refused:
                asyncio.run(_connect(server.url.replace("http", "ws") + path))
            assert refused.value.response.status_code == 403, path
            continue
        r = httpx.request(method, server.url + path, timeout=30)
        if (method, template) in OPEN:
            assert r.status_code != 401, (method, template)
        else:
            assert r.status_code == 401, (method, template, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer" and "API key" in r.json()["detail"]
    assert httpx.get(f"{server.url}/no/such/route").status_code == 401  # unknown paths reveal nothing


async def _connect(url: str) -> None:
    async with websockets.connect(url) as ws:
        await ws.recv()


def test_probes_answer_without_a_key_and_the_key_may_come_three_ways(server):
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.url}/v1/models/chatterbox").json()["ready"] is True
    assert httpx.get(f"{server.url}/voices", headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(f"{server.url}/voices", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(f"{server.url}/voices", headers={"X-API-Key": "file-key"}).status_code == 200
    # KServe's model management wants the key too: unloading the model is not for anyone who can connect.
    unload = httpx.post(f"{server.url}/v2/repository/models/chatterbox/unload")
    assert unload.status_code == 401
    assert httpx.get(f"{server.url}/v2/models/chatterbox/ready").json()["ready"] is True


def test_metrics_stay_closed_unless_opened_for_a_scraper(random_checkpoint, tmp_path):
    args = ["--checkpoint_dir", str(random_checkpoint("turbo")), "--voices_dir", str(tmp_path),
            "--api_keys", KEY, "--open_metrics", "true"]
    proc = ServerProcess(args, tmp_path / "server.log")
    try:
        proc.wait_ready("/v2/health/ready")
        assert "chatterbox_queue_depth" in httpx.get(f"{proc.url}/metrics").text
        assert httpx.get(f"{proc.url}/voices").status_code == 401
    finally:
        proc.stop()


def test_grpc_without_a_key_check_is_refused_when_keys_are_configured(tmp_path):
    result = subprocess.run([sys.executable, "-m", "chatterbox_predictor", "--api_keys", KEY,
                             "--enable_grpc", "true"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "gRPC" in result.stderr


def test_a_key_added_to_the_mounted_secret_works_without_a_restart(server):
    assert httpx.get(f"{server.url}/voices", headers={"X-API-Key": "rotated"}).status_code == 401
    server.keys_file.write_text("file-key\nrotated\n")
    assert httpx.get(f"{server.url}/voices", headers={"X-API-Key": "rotated"}).status_code == 200


# -- /tts/generate ------------------------------------------------------------------------------------
def test_generate_streams_a_wav_in_chunks_with_the_builtin_voice(client):
    pieces = []
    with client.stream("POST", "/tts/generate", json={"text": "Hello there, this is a test.", **FAST}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        assert r.headers["x-request-id"]
        pieces = list(r.iter_raw())
    data = b"".join(pieces)
    rate, samples = _wav(data)
    assert rate == 24_000 and len(samples) == (TOKENS + 3) * 960  # tokens plus 3 silence tokens, 40 ms each
    assert len(pieces) >= 2  # chunks arrive as they are generated (10, then 20 more tokens)


def test_generate_with_an_unknown_voice_is_the_plans_404(client):
    r = client.post("/tts/generate", json={"text": "Hi.", "voice_id": "cloned_voice_alpha"})
    assert r.status_code == 404 and r.json() == {"detail": "Voice 'cloned_voice_alpha' not found."}


# The schema states every limit, so a body outside it is FastAPI's 422 naming the field.
@pytest.mark.parametrize(("body", "field"), [
    ({"text": ""}, "text"),
    ({"text": "   "}, "text"),
    ({"text": "x" * 5001}, "text"),
    ({"text": "Hi.", "voice_id": "../../etc/passwd"}, "voice_id"),
    ({"text": "Hi.", "voice_id": "a/b"}, "voice_id"),
    ({"text": "Hi.", "voice_id": ".hidden"}, "voice_id"),
    ({"text": "Hi.", "temperature": -1}, "temperature"),
    ({"text": "Hi.", "top_p": 2}, "top_p"),
    ({"text": "Hi.", "unknown": 1}, "unknown"),
    ({"text": 5}, "text"),
    ({}, "text"),
])
def test_client_mistakes_are_422_naming_the_field(client, body, field):
    r = client.post("/tts/generate", json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field]


def test_the_schema_states_the_limits_validation_enforces(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]["properties"]
    assert schema["text"]["minLength"] == 1 and schema["text"]["maxLength"] == 5000
    assert schema["temperature"]["anyOf"][0]["minimum"] == 0.01
    assert schema["top_p"]["anyOf"][0]["maximum"] == 1


def test_a_body_that_is_not_json_is_a_4xx(client):
    r = client.post("/tts/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "detail" in r.json()


# -- voices --------------------------------------------------------------------------------------------
def test_upload_list_speak_and_delete_a_voice(client, voice_bytes, voices_dir):
    r = client.post("/voices", files={"file": ("alpha.pth", voice_bytes)})
    assert r.status_code == 201
    assert r.json() == {"voice_id": "alpha.pth", "message": "Voice uploaded successfully."}
    assert (voices_dir / "alpha.pth").read_bytes() == voice_bytes
    assert "alpha.pth" in client.get("/voices").json()
    for voice_id in ("alpha", "alpha.pth"):
        r = client.post("/tts/generate", json={"text": "With a cloned voice.", "voice_id": voice_id, **FAST})
        assert r.status_code == 200 and _wav(r.content)[0] == 24_000
    again = client.post("/voices", files={"file": ("alpha.pth", voice_bytes)})
    assert again.status_code == 409 and "overwrite" in again.json()["detail"]
    replaced = client.post("/voices?overwrite=true", files={"file": ("alpha.pth", voice_bytes)})
    assert replaced.status_code == 201
    r = client.delete("/voices/alpha")
    assert r.status_code == 200 and r.json() == {"message": "Voice 'alpha.pth' deleted successfully."}
    assert client.delete("/voices/alpha").status_code == 404
    assert "alpha.pth" not in client.get("/voices").json()


def test_a_voice_that_a_voice_resource_manages_cannot_be_deleted_or_replaced_here(client, voice_bytes,
                                                                                 voices_dir):
    (voices_dir / "narrator.pth").write_bytes(voice_bytes)
    write_claim(voices_dir, "narrator", voicefile.Owner("studio", "narrator-voice", "uid-1"),
                          overwrite=False)
    try:
        for r in (client.delete("/voices/narrator"),
                  client.post("/voices?overwrite=true", files={"file": ("narrator.pth", voice_bytes)})):
            assert r.status_code == 409
            assert "Voice resource narrator-voice in namespace studio" in r.json()["detail"]
        assert (voices_dir / "narrator.pth").read_bytes() == voice_bytes
    finally:
        remove_claim(voices_dir, "narrator")
    assert client.delete("/voices/narrator").status_code == 200  # unmanaged again: the API's to delete


def test_an_upload_not_named_voice_id_pth_is_refused_even_with_an_explicit_voice_id(client, voice_bytes):
    r = client.post("/voices?voice_id=renamed", files={"file": ("x.txt", voice_bytes)})
    assert r.status_code == 400 and "<voice_id>.pth" in r.json()["detail"]
    assert "renamed.pth" not in client.get("/voices").json()


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/chatterbox-pwned",))


def _bad_uploads(voice_bytes: bytes) -> list[tuple[str, bytes, int, str]]:
    buf = io.BytesIO()
    torch.save({"t3": {}, "gen": {}}, buf)
    wrong_keys = buf.getvalue()
    riff = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + b"\0" * 24
    return [
        ("payload.pth", pickle.dumps(_Payload()), 422, "not a voice file"),
        ("truncated.pth", voice_bytes[: len(voice_bytes) // 2], 422, "not a voice file"),
        ("renamed.pth", riff, 422, "not a voice file"),
        ("wrongkeys.pth", wrong_keys, 422, "t3"),
        ("huge.pth", b"\0" * (16 * 1024 * 1024 + 1), 413, "limit"),
        ("../escape.pth", voice_bytes, 400, "invalid voice file name"),
        ("bad name!.pth", voice_bytes, 400, "invalid voice file name"),
        ("x.txt", voice_bytes, 400, "<voice_id>.pth"),
        ("alpha", voice_bytes, 400, "<voice_id>.pth"),
    ]


def test_bad_uploads_are_refused_and_leave_nothing_behind(client, voice_bytes, voices_dir):
    for name, data, status, detail in _bad_uploads(voice_bytes):
        r = client.post("/voices", files={"file": (name, data)})
        assert r.status_code == status, (name, r.text)
        assert detail in r.json()["detail"], name
    assert not os.path.exists("/tmp/chatterbox-pwned")
    assert [p.name for p in voices_dir.iterdir() if p.name != ".claims"] == []  # no temporary files either
    assert client.get("/health").status_code == 200  # and it keeps serving


def test_voices_written_replaced_or_removed_by_others_are_noticed_without_a_restart(client, voice_bytes,
                                                                                   voices_dir):
    (voices_dir / "scp.pth").write_bytes(voice_bytes)
    deadline = time.monotonic() + 10
    while "scp.pth" not in client.get("/voices").json():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert client.post("/tts/generate", json={"text": "Found.", "voice_id": "scp", **FAST}).status_code == 200
    (voices_dir / "scp.pth").write_bytes(b"garbage")  # replaced by something broken: evicted, then refused
    # The watcher (every 0.5 s here) or this reload notices it, whichever scans first, so the reload's own
    # added/removed/changed lists are not asserted here (test_voices checks them without a watcher).
    assert "scp.pth" in client.post("/voices/reload").json()["voices"]
    r = client.post("/tts/generate", json={"text": "Broken.", "voice_id": "scp", **FAST})
    assert r.status_code == 422 and "not a voice file" in r.json()["detail"]
    (voices_dir / "scp.pth").unlink()
    assert "scp.pth" not in client.post("/voices/reload").json()["voices"]
    assert client.post("/tts/generate", json={"text": "Gone.", "voice_id": "scp"}).status_code == 404


# -- OpenAI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_the_openai_client_gets_every_format(server, fmt):
    # Closed: an open client's pooled socket sits in a reference cycle (see tests/conftest.py).
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY) as oa, \
            oa.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="Hello there.",
                                                           response_format=fmt, extra_body=FAST) as r:
        data = r.read()
    if fmt == "pcm":
        assert len(data) == (TOKENS + 3) * 960 * 2
        return
    if fmt == "wav":
        assert _wav(data)[0] == 24_000
        return
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.rate
    assert rate in (24_000, 48_000)
    assert abs(samples / rate - (TOKENS + 3) * 0.04) < 0.1


def test_openai_speed_stretches_the_audio_and_sse_streams_base64_deltas(client):
    body = {"model": "chatterbox", "voice": "default", "input": "Faster.", "response_format": "pcm", **FAST}
    normal = client.post("/v1/audio/speech", json=body).content
    fast = client.post("/v1/audio/speech", json={**body, "speed": 2.0}).content
    assert abs(len(fast) / len(normal) - 0.5) < 0.05
    with client.stream("POST", "/v1/audio/speech", json={**body, "stream_format": "sse"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(audio) == len(normal)
    assert client.post("/v1/audio/speech", json={**body, "voice": "nobody"}).status_code == 404
    assert client.post("/v1/audio/speech", json={**body, "speed": 9}).status_code == 422
    assert client.get("/v1/audio/voices").json()["data"][0]["id"] == "default"


# -- KServe V1 / V2 ---------------------------------------------------------------------------------
def test_kserve_v1_predict_returns_a_wav(client):
    r = client.post("/v1/models/chatterbox:predict",
                    json={"instances": [{"text": "Version one.", **FAST}]})
    assert r.status_code == 200
    prediction = r.json()["predictions"][0]
    wav = base64.b64decode(prediction["wav_base64"])
    with wave.open(io.BytesIO(wav)) as w:
        assert w.getframerate() == 24_000 and w.getnframes() == (TOKENS + 3) * 960
    assert client.post("/v1/models/chatterbox:predict", json={"instances": []}).status_code == 400


def test_kserve_v2_infer_returns_samples_and_a_binary_wav_on_request(client):
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Version two."]}],
            "parameters": {"max_new_tokens": TOKENS, "seed": 3}}
    r = client.post("/v2/models/chatterbox/infer", json=body)
    assert r.status_code == 200
    out = r.json()["outputs"][0]
    assert out["name"] == "audio" and out["datatype"] == "FP32" and out["shape"] == [(TOKENS + 3) * 960]
    binary = client.post("/v2/models/chatterbox/infer",
                         json={**body, "outputs": [{"name": "wav", "parameters": {"binary_data": True}}]})
    assert binary.status_code == 200
    json_len = int(binary.headers["inference-header-content-length"])
    header = json.loads(binary.content[:json_len])
    raw = binary.content[json_len:]
    # KServe's binary BYTES tensors prefix each element with its length (4 bytes, little endian).
    assert header["outputs"][0]["name"] == "wav" and struct.unpack("<I", raw[:4])[0] == len(raw) - 4
    with wave.open(io.BytesIO(raw[4:])) as w:
        assert w.getframerate() == 24_000 and w.getnframes() == (TOKENS + 3) * 960


def test_v2_metadata_declares_the_tensors_and_infer_holds_requests_to_them(client):
    metadata = client.get("/v2/models/chatterbox").json()
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"]}
    assert inputs["text"] == ("BYTES", [1]) and inputs["voice_id"] == ("BYTES", [1])
    assert inputs["temperature"] == ("FP32", [1]) and inputs["seed"] == ("INT64", [1])
    assert {t["name"]: (t["datatype"], t["shape"]) for t in metadata["outputs"]} == {
        "audio": ("FP32", [-1]), "wav": ("BYTES", [1])}

    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Tensors."]}
    cases = [
        ([{"name": "words", "shape": [1], "datatype": "BYTES", "data": ["x"]}], "'words'"),
        ([text, {"name": "temperature", "shape": [1], "datatype": "BYTES", "data": ["hot"]}],
         "'temperature' must be FP32"),
        ([text, {"name": "seed", "shape": [2], "datatype": "INT64", "data": [1, 2]}], "'seed' must hold"),
        ([text, {"name": "temperature", "shape": [1], "datatype": "FP32", "data": [9.0]}], "'temperature'"),
        ([{**text, "datatype": "FP32", "data": [1.0]}], "'text' must be BYTES"),
        ([{"name": "voice_id", "shape": [1], "datatype": "BYTES", "data": ["alpha"]}], "'text'"),
    ]
    for inputs_, detail in cases:
        bad = client.post("/v2/models/chatterbox/infer", json={"inputs": inputs_})
        assert bad.status_code == 400 and detail in bad.json()["detail"], (inputs_, bad.text)
    unknown_output = client.post("/v2/models/chatterbox/infer",
                                 json={"inputs": [text], "outputs": [{"name": "mel"}]})
    assert unknown_output.status_code == 400 and "'mel'" in unknown_output.json()["detail"]
    as_tensors = client.post("/v2/models/chatterbox/infer", json={"inputs": [
        text, {"name": "max_new_tokens", "shape": [1], "datatype": "INT64", "data": [TOKENS]},
        {"name": "seed", "shape": [1], "datatype": "INT64", "data": [3]}]})
    assert as_tensors.status_code == 200 and as_tensors.json()["outputs"][0]["shape"] == [(TOKENS + 3) * 960]


# -- WebSocket -------------------------------------------------------------------------------------------
def test_websocket_speaks_text_sent_in_pieces(server):
    async def talk():
        url = server.url.replace("http", "ws") + "/tts/stream"
        async with websockets.connect(url, additional_headers=HEADERS) as ws:
            start = json.loads(await ws.recv())
            assert start["type"] == "start" and start["sample_rate"] == 24_000
            await ws.send(json.dumps({"text": "Hello the", "partial": True, **FAST}))
            await ws.send(json.dumps({"text": "re. And more", "partial": True}))
            await ws.send(json.dumps({"voice_id": "nobody", "text": " words.", "partial": False}))
            await ws.send(json.dumps({"type": "end"}))
            return await _received(ws)

    audio, events = asyncio.run(talk())
    kinds = [e["type"] for e in events]
    assert kinds == ["segment_end", "error", "end"], events
    assert events[0]["text"] == "Hello there. "
    assert events[1]["status"] == 404
    assert len(audio) == (TOKENS + 3) * 960 * 2


async def _received(ws) -> tuple[bytes, list[dict]]:
    """Everything a /tts/stream session sends until it closes: the audio, and the JSON events."""
    audio, events = b"", []
    async for message in ws:
        if isinstance(message, bytes):
            audio += message
        else:
            events.append(json.loads(message))
    return audio, events


def test_websocket_answers_bad_messages_with_an_error_and_keeps_the_session(server):
    async def talk():
        url = server.url.replace("http", "ws") + "/tts/stream"
        async with websockets.connect(url, additional_headers=HEADERS) as ws:
            await ws.recv()
            for bad in ({"text": "Hi.", "voice_id": 5}, {"text": "Hi.", "partial": "false"},
                        {"text": "x" * 6000, "partial": True}, {"type": "shout"}, ["not", "an", "object"],
                        {"text": "Hi.", "temperature": -1}):
                await ws.send(json.dumps(bad))
            await ws.send(json.dumps({"type": "end"}))
            return [json.loads(m) async for m in ws]

    events = asyncio.run(talk())
    assert [e["type"] for e in events] == ["error"] * 6 + ["end"], events
    assert all(e["status"] == 400 for e in events[:-1])
    assert "voice_id" in events[0]["detail"] and "partial" in events[1]["detail"]


def test_websocket_takes_the_key_in_the_query_where_a_browser_cannot_set_headers(server):
    async def start(query: str) -> dict:
        async with websockets.connect(server.url.replace("http", "ws") + "/tts/stream" + query) as ws:
            return json.loads(await ws.recv())

    assert asyncio.run(start(f"?api_key={KEY}"))["type"] == "start"
    with pytest.raises(websockets.InvalidStatus) as refused:  # closed before the handshake: HTTP 403
        asyncio.run(start("?api_key=wrong"))
    assert refused.value.response.status_code == 403


def test_websocket_takes_the_key_as_a_subprotocol_and_never_echoes_it(server):
    """What the playground does: the key out of every URL, in a subprotocol beside `chatterbox.tts`."""
    def offer(key: str) -> list[str]:
        encoded = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
        return ["chatterbox.tts", f"chatterbox.key.{encoded}"]

    async def start(subprotocols: list[str]) -> tuple[str | None, dict]:
        async with websockets.connect(server.url.replace("http", "ws") + "/tts/stream",
                                      subprotocols=subprotocols) as ws:
            return ws.subprotocol, json.loads(await ws.recv())

    assert asyncio.run(start(offer(KEY))) == ("chatterbox.tts", {"type": "start", "sample_rate": 24_000,
                                                                 "encoding": "pcm_s16le", "channels": 1})
    for refused in (offer("wrong"), ["chatterbox.tts", "chatterbox.key.!!not-base64!!"], ["chatterbox.tts"]):
        with pytest.raises(websockets.InvalidStatus) as closed:
            asyncio.run(start(refused))
        assert closed.value.response.status_code == 403


def test_speed_stretches_the_audio_of_generate_and_of_the_websocket(client, server):
    body = {"text": "Faster.", "format": "pcm", **FAST}
    normal = client.post("/tts/generate", json=body).content
    fast = client.post("/tts/generate", json={**body, "speed": 2.0}).content
    assert abs(len(fast) / len(normal) - 0.5) < 0.05
    assert client.post("/tts/generate", json={**body, "speed": 0.1}).status_code == 422

    async def spoken(options: dict) -> tuple[bytes, list]:
        async with websockets.connect(server.url.replace("http", "ws") + "/tts/stream",
                                      additional_headers=HEADERS) as ws:
            await ws.recv()
            await ws.send(json.dumps({"text": "Faster.", **FAST, **options}))
            await ws.send(json.dumps({"type": "end"}))
            return await _received(ws)

    audio, _ = asyncio.run(spoken({"speed": 2.0}))
    assert audio == fast  # the same samples as REST at that speed
    _, events = asyncio.run(spoken({"speed": "quick"}))
    assert events[0]["type"] == "error" and events[0]["status"] == 400 and "speed" in events[0]["detail"]


# -- disconnects, queue, metrics ------------------------------------------------------------------------
def test_a_client_gone_mid_stream_frees_the_worker_and_a_burst_beyond_the_queue_gets_503(server, client):
    # 16 text pieces of up to 1000 tokens (40 s of audio) each: minutes of work unless it is cancelled.
    long = {"text": "This sentence is here to make the text long enough to take a while. " * 70, "seed": 2}
    with client.stream("POST", "/tts/generate", json=long) as r:
        next(r.iter_raw())  # the first chunk arrived: generation is running; now leave
    # The worker stops within a chunk (a second or two here).
    deadline = time.monotonic() + 10
    while _metric(client, "chatterbox_generating") != 0:
        assert time.monotonic() < deadline, "the generation went on after its client left"
        time.sleep(0.2)

    # Then a burst while the batch is surely full: every row has a runner whose first chunk is here. The
    # worker admits waiting requests only into a free row, so the queue of one takes exactly one of the
    # burst, the others get 503 at once, and the waiting one is served once a runner ends. (With a free
    # row the worker would drain the queue between steps, and how many of a burst fit would be a race.)
    async def burst():
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=300) as ac, \
                contextlib.AsyncExitStack() as stack:
            runners = []
            for seed in range(BATCH):
                running = await stack.enter_async_context(ac.stream("POST", "/tts/generate", json={
                    "text": "Keeps the worker busy.", "max_new_tokens": 200, "seed": 3 + seed}))
                chunks = running.aiter_raw()
                await anext(chunks)  # admitted: it holds a row
                runners.append((running, chunks))
            responses = await asyncio.gather(*[ac.post("/tts/generate", json={"text": "Burst.", **FAST})
                                               for _ in range(4)])
            for _, chunks in runners:
                async for _ in chunks:
                    pass
            return [running.status_code for running, _ in runners], responses

    runner_statuses, responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert runner_statuses == [200] * BATCH and statuses == [200, 503, 503, 503], statuses
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"].isdigit() and "waiting" in r.json()["detail"] for r in refused)


def _metric(client: httpx.Client, name: str, labels: str = "") -> float:
    """The sample `name{labels}` from /metrics (0 when the labelled series does not exist yet)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{{labels}}} " if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    if labels:
        return 0.0
    raise AssertionError(f"{name} not exported")


def test_a_request_moves_the_counters_and_histograms_it_should(client):
    endpoint = 'endpoint="tts_generate"'
    names = ("chatterbox_speech_requests_total", "chatterbox_time_to_first_audio_seconds_count",
             "chatterbox_real_time_factor_count", "chatterbox_audio_seconds_total")
    before = {n: _metric(client, n, endpoint) for n in names}
    misses = _metric(client, "chatterbox_errors_total", 'type="VoiceNotFound"')
    refused = _metric(client, "chatterbox_errors_total", 'type="Unauthorized"')
    assert client.post("/tts/generate", json={"text": "Measured.", **FAST}).status_code == 200
    assert client.post("/tts/generate", json={"text": "Hi.", "voice_id": "missing"}).status_code == 404
    assert httpx.get(f"{client.base_url}/voices").status_code == 401
    after = {n: _metric(client, n, endpoint) for n in names}
    assert after["chatterbox_speech_requests_total"] == before["chatterbox_speech_requests_total"] + 2
    assert after["chatterbox_time_to_first_audio_seconds_count"] == \
        before["chatterbox_time_to_first_audio_seconds_count"] + 1  # the 404 never had a first chunk
    assert after["chatterbox_real_time_factor_count"] == before["chatterbox_real_time_factor_count"] + 1
    # 30 tokens and 3 silence tokens, 40 ms each.
    assert after["chatterbox_audio_seconds_total"] == pytest.approx(
        before["chatterbox_audio_seconds_total"] + (TOKENS + 3) * 0.04)
    assert _metric(client, "chatterbox_errors_total", 'type="VoiceNotFound"') == misses + 1
    assert _metric(client, "chatterbox_errors_total", 'type="Unauthorized"') == refused + 1
    assert _metric(client, "chatterbox_queue_depth") == 0
    assert _metric(client, "chatterbox_active_streams") == 0


def test_logs_are_json_lines_with_the_request_id(server, client):
    client.post("/tts/generate", json={"text": "Hi.", "voice_id": "missing-for-log"},
                headers={"X-Request-ID": "trace-me-456"})
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(e["request_id"] == "trace-me-456" for e in lines)
    assert all({"time", "level", "logger", "message", "request_id"} <= set(e) for e in lines)


# -- fuzzing ---------------------------------------------------------------------------------------------
FUZZ = Path(__file__).with_name("schemathesis")


def test_schemathesis_runs_every_check_on_every_operation_and_follows_the_links(random_checkpoint,
                                                                                recordings, tmp_path):
    """Every operation of /openapi.json (ours and KServe's), every check (schema conformance of answers,
    documented statuses, schema-valid requests accepted, invalid ones refused, auth enforced), under a
    fixed seed, and the stateful phase that follows the links from an upload (speak with it, delete
    it). Random weights never stop, so this server caps generations at 8 tokens and texts at 400
    characters to keep each case short; the limits are in the schema too. Settings and the reason for
    each exception: tests/predictor/schemathesis/."""
    voice = random_checkpoint("turbo") / "conds.pt"
    proc = ServerProcess(["--model_name", "chatterbox", "--checkpoint_dir", str(voice.parent),
                          "--voices_dir", str(tmp_path / "voices"), "--api_keys", KEY, "--token_cap", "8",
                          "--max_text_chars", "400", "--queue_size", "64",
                          # a clone is seconds: two tuning steps at most keep each case short
                          "--clone_max_tune_steps", "2"], tmp_path / "server.log")
    report = tmp_path / "schemathesis.json"
    try:
        proc.wait_ready("/v2/health/ready")
        paths = httpx.get(f"{proc.url}/openapi.json").json()["paths"]
        run = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "--config-file",
             str(FUZZ / "schemathesis.toml"), "run", f"{proc.url}/openapi.json", "--checks", "all",
             # Starlette's 405 names only the methods of the route it matched (GET /voices and
             # POST /voices are two routes), which this check reads as a wrong Allow header.
             "--exclude-checks", "allow_header_conformance",
             "--seed", "1", "--generation-database", "none", "--header", f"X-API-Key: {KEY}",
             "--request-timeout", "120", "--workers", "1", "--report", "json",
             "--report-json-path", str(report)],
            capture_output=True, text=True, timeout=1500, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(FUZZ / "hooks.py"), "VOICE_FILE": str(voice),
                 "RECORDINGS": ":".join(str(p) for p in recordings.speakers[:2])})
    finally:
        proc.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = json.loads(report.read_text())
    assert summary["test_cases"]["generated"] >= 1000, summary["test_cases"]
    operations = sum(len(methods) for methods in paths.values())
    tested = re.search(r"Tested:\s+(\d+)", run.stdout)
    assert tested and int(tested.group(1)) == operations, run.stdout[-3000:]
    links = re.search(r"API Links:\s+(\d+) covered", run.stdout)
    assert links and int(links.group(1)) >= 2, run.stdout[-3000:]
    # Our links were among them: the uploaded voice (the hook's file) was spoken and deleted.
    log = proc.log()
    assert "voice fuzzed.pth uploaded" in log and "voice fuzzed.pth deleted" in log
    assert re.search(r"(tts_generate|openai_speech): \d+ characters, voice fuzzed", log)
