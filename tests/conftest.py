"""Fixtures shared by every test tier: the real control plane, the images and random-weight Chatterbox
checkpoints (the control plane with a node is tests/cluster's own).

All are session-scoped and built lazily: a tier that never asks for one never pays for it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# No test may reach the Hugging Face Hub (it is out of reach on CI anyway): fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _collect_each_tests_cycles():
    """Collect garbage after every test, so that a resource a test leaves open in a reference cycle
    (a client with its pooled socket) fails that test with its ResourceWarning. With only the
    module-end collection below, it failed the module's last test instead: the fuzzing test, for an
    OpenAI client test_the_openai_client_gets_every_format had not closed."""
    yield
    gc.collect()


@pytest.fixture(scope="module", autouse=True)
def _give_back_a_modules_memory():
    """After each module, collect its models and hand the freed heap back to the system.

    glibc keeps freed small blocks in its arenas: after test_packed_linear's models were freed this
    process still held 12 GB (4.7 GB of 0.9 GB live for one loaded pair, until malloc_trim), and the
    server processes later modules start, on a machine with no swap, stalled in their warm-up for the
    memory (CI's test_readme and test_server timed out at 600 s each)."""
    yield
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:  # glibc's malloc_trim; other C libraries have none, and nothing is lost without it
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)
        if trim is not None:
            trim(0)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    """A running etcd + kube-apiserver (RBAC on) for the whole session; see tests/support/controlplane."""
    from tests.support.controlplane import ControlPlane

    with ControlPlane(tmp_path_factory.mktemp("controlplane")) as cp:
        yield cp


@dataclass(frozen=True)
class Images:
    predictor: str
    operator: str


@pytest.fixture(scope="session")
def images() -> Images:
    """Both images, built by hack/build-images.sh under test tags (the engine started if needed).

    The build is the one `make images` runs; with the layers cached it takes seconds, cold about five
    minutes (the predictor's dependency layer)."""
    from tests.support.containers import DockerError, remove_leftover_containers
    from tests.support.controlplane import REPO_ROOT

    tags = Images(predictor="chatterbox-predictor:image-tier", operator="voice-operator:image-tier")
    # ffprobe checks the audio the containers return (Debian's ffmpeg, installed when missing).
    subprocess.run(["bash", str(REPO_ROOT / "hack/system-deps.sh"), "ffprobe"], check=True, timeout=600)
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack/build-images.sh")],
        env={**os.environ, "PREDICTOR_IMAGE": tags.predictor, "OPERATOR_IMAGE": tags.operator},
        capture_output=True, text=True, timeout=1800)
    print(result.stderr)  # the build's timings and the stand-in notice, in pytest's captured output
    if result.returncode != 0:
        raise DockerError(f"building the images failed:\n{result.stderr[-6000:]}")
    remove_leftover_containers()
    return tags


@pytest.fixture(scope="session")
def voice_bytes(random_checkpoint) -> bytes:
    """A real voice file: the small random checkpoint's built-in conds.pt, as the library saves voices."""
    return (random_checkpoint("turbo") / "conds.pt").read_bytes()


@pytest.fixture(scope="session")
def recordings(tmp_path_factory):
    """espeak-ng speech in five voices and the faults the cloning checks catch (tests/support/speech.py)."""
    from tests.support.speech import make_recordings

    return make_recordings(tmp_path_factory.mktemp("recordings"))


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """Factory `random_checkpoint(variant="turbo", size="small") -> Path`, each built once a session.

    A random-weight checkpoint of the real architecture in the layout the variant's `from_local` reads
    (see chatterbox_predictor.random_checkpoint). `small` has a two-block transformer; `full` has the
    real shapes and costs minutes and gigabytes, so only tests marked `slow` ask for it.

    Removed at the session's end whatever its result: pytest keeps a failed session's temporary files
    (three sessions' worth), and five checkpoints are 11 GB that the next run's node images need.
    Random weights are rebuilt from a seed, so nothing is lost. A killed session never reaches its
    end: this one removes such a session's checkpoints first.
    """
    from chatterbox_predictor.random_checkpoint import build_random_checkpoint

    _remove_checkpoints_of_dead_sessions(tmp_path_factory.getbasetemp())
    built = {}
    directories = []

    def build(variant: str = "turbo", size: str = "small"):
        if (variant, size) not in built:
            directory = tmp_path_factory.mktemp(f"checkpoint-{variant}-{size}")
            directories.append(directory)
            built[variant, size] = build_random_checkpoint(directory, variant, size)
        return built[variant, size]

    yield build
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def _remove_checkpoints_of_dead_sessions(basetemp: Path) -> None:
    """The checkpoints under pytest's other numbered session directories whose session is no longer
    running: pytest's `.lock` there holds its pid and goes when the session ends."""
    for directory in basetemp.parent.glob("pytest-*/checkpoint-*"):
        session = directory.parent
        if session == basetemp or _running(session / ".lock"):
            continue
        shutil.rmtree(directory, ignore_errors=True)


def _running(lock: Path) -> bool:
    try:
        os.kill(int(lock.read_text()), 0)
    except (OSError, ValueError):  # no lock, a garbled one, or no such process
        return False
    return True
