"""The predictor runs as KServe's model server (what `make run` and the container start)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.support.processes import ServerProcess


@pytest.fixture
def server_factory(tmp_path):
    started = []

    def start(*args: str, env=None) -> ServerProcess:
        server = ServerProcess(list(args), tmp_path / f"server-{len(started)}.log", env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_server_loads_the_checkpoint_then_answers_kserve_health_and_readiness(random_checkpoint,
                                                                            server_factory):
    server = server_factory("--model_name", "chatterbox",
                            "--checkpoint_dir", str(random_checkpoint("turbo")))
    assert server.wait_ready("/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v1/models/chatterbox").json() == {"name": "chatterbox", "ready": True}
    assert httpx.get(f"{server.url}/v2/models/chatterbox/ready").json()["ready"] is True
    assert httpx.get(f"{server.url}/v2/models/chatterbox").json()["name"] == "chatterbox"
    assert httpx.get(f"{server.url}/v1/models/nosuchmodel").status_code == 404
    assert "RANDOM WEIGHTS" in server.log()


def test_settings_come_from_environment_variables_too(random_checkpoint, server_factory):
    server = server_factory(env={"CHATTERBOX_CHECKPOINT_DIR": str(random_checkpoint("english")),
                                 "CHATTERBOX_VARIANT": "english"})
    assert server.wait_ready("/v1/models/model").json()["ready"] is True
    assert "small english checkpoint" in server.log()


def test_offline_mode_builds_a_random_checkpoint_once_and_serves_it(tmp_path, server_factory):
    cache = tmp_path / "cache"
    server = server_factory("--random_weights", "small", "--model_cache_dir", str(cache))
    server.wait_ready("/v2/health/ready")
    built = cache / "random" / "turbo-small"
    assert (built / "conds.pt").is_file() and (built / "random-weights.json").is_file()
    assert [p.name for p in (cache / "random").iterdir()] == ["turbo-small"]  # no half-built leftovers
    assert "RANDOM WEIGHTS" in server.log()
    server.stop()

    stamp = (built / "t3_turbo_v1.safetensors").stat().st_mtime_ns
    again = server_factory("--random_weights", "small", "--model_cache_dir", str(cache))
    again.wait_ready("/v2/health/ready")
    assert (built / "t3_turbo_v1.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_without_weights_or_hub_the_server_stops_and_says_how_to_go_on(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "chatterbox_predictor", "--model_cache_dir", str(tmp_path),
         "--enable_grpc", "false"],
        capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin"})
    assert result.returncode == 1
    assert "could not be downloaded from the Hugging Face Hub" in result.stderr
    assert "--checkpoint_dir" in result.stderr and "--random_weights small" in result.stderr


def test_a_bad_setting_value_is_refused_before_anything_loads():
    result = subprocess.run([sys.executable, "-m", "chatterbox_predictor", "--variant", "klingon"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid choice: 'klingon'" in result.stderr


def test_unloading_the_model_stops_its_engine_and_voice_watcher_without_stalling_the_server(random_checkpoint,
                                                                                           server_factory,
                                                                                           tmp_path):
    server = server_factory("--model_name", "chatterbox", "--checkpoint_dir", str(random_checkpoint("turbo")),
                            "--voices_dir", str(tmp_path / "voices"), "--api_keys", "k")
    server.wait_ready("/v2/health/ready")
    key = {"X-API-Key": "k"}
    assert httpx.post(f"{server.url}/v2/repository/models/chatterbox/unload").status_code == 401
    unloaded = httpx.post(f"{server.url}/v2/repository/models/chatterbox/unload", headers=key, timeout=30)
    assert unloaded.status_code == 200
    assert httpx.get(f"{server.url}/health").json()["ready"] is False  # the engine stopped
    assert httpx.get(f"{server.url}/v2/models/chatterbox/ready").status_code == 404
    refused = httpx.post(f"{server.url}/tts/generate", headers=key, json={"text": "Anyone there?"})
    assert refused.status_code == 503
    assert "stopped watching" in server.log()
