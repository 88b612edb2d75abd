"""Where a single stream's time goes: T3, the S3Gen flow and the vocoder, ours against the library (CPU).

`.venv/bin/python bench/stages.py`: on the random full-size Turbo checkpoint, one request of `--tokens`
speech tokens through our engine (its T3 steps, flow passes and vocoder calls timed) and the same text
through the library's `generate()` (its T3 loop and its one S3Gen call timed), interleaved, `--runs`
times each after one untimed warm run. The timers wrap the stages' own functions; nothing else changes.
It prints one line a run; `make bench` gives the totals with their spread.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support (the library's token cap)

from chatterbox_predictor import engine as engine_module  # noqa: E402
from chatterbox_predictor.engine import Engine, EngineConfig, ModelThread, SynthesisRequest  # noqa: E402
from chatterbox_predictor.loading import load_model  # noqa: E402
from chatterbox_predictor.random_checkpoint import random_checkpoint_dir  # noqa: E402
from chatterbox_predictor.sampling import SamplingParams  # noqa: E402
from chatterbox_predictor.speech import SpeechStream  # noqa: E402
from chatterbox_predictor.t3_stream import T3Batch  # noqa: E402
from chatterbox_predictor.variants import get_variant  # noqa: E402
from chatterbox_predictor.voices import VoiceCache, VoiceLibrary  # noqa: E402
from tests.support.chatterbox import capped_speech_tokens  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog near the river bank. "
        "Then it runs back home before the sun goes down behind the hills.")


@contextmanager
def timers(targets: dict[str, tuple[object, str]]):
    """Seconds spent in each (owner, attribute) function while the block runs, by name."""
    spent = dict.fromkeys(targets, 0.0)
    originals = {name: getattr(owner, attr) for name, (owner, attr) in targets.items()}

    def timed(name, fn):
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return call

    for name, (owner, attr) in targets.items():
        setattr(owner, attr, timed(name, originals[name]))
    try:
        yield spent
    finally:
        for name, (owner, attr) in targets.items():
            setattr(owner, attr, originals[name])


def ours(engine: Engine, tokens: int) -> dict:
    request = SynthesisRequest(TEXT, params=SamplingParams(max_new_tokens=tokens), seed=1)
    stages = {"t3": (T3Batch, "step"), "flow": (engine_module, "flow_mels"),
              "vocoder": (SpeechStream, "vocode")}
    with timers(stages) as spent:
        started = time.perf_counter()
        for _ in engine.synthesize(request, threading.Event()):
            pass
        spent["total"] = time.perf_counter() - started
    return spent


def library(model, tokens: int) -> dict:
    torch.manual_seed(1)
    with timers({"t3": (model.t3, "inference_turbo"), "s3gen": (model.s3gen, "inference")}) as spent, \
            capped_speech_tokens(model, tokens):
        started = time.perf_counter()
        model.generate(TEXT)
        spent["total"] = time.perf_counter() - started
    return spent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100, help="speech tokens (25 = 1 s)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chatterbox-predictor")
    args = parser.parse_args(argv)
    torch.set_num_threads(psutil.cpu_count(logical=False) or 1)
    thread = ModelThread()  # all model work on one thread, as in the server (see engine.py)
    variant = get_variant("turbo")
    directory = thread.call(random_checkpoint_dir, args.cache, variant, "full")
    model = thread.call(load_model, directory, variant, device="cpu")
    engine = Engine(model, EngineConfig.from_settings(variant=variant, max_batch_size=1), "cpu",
                    VoiceLibrary(directory, variant, "cpu", VoiceCache(2**28)), thread)
    thread.call(engine.warm_up)
    thread.call(ours, engine, args.tokens)
    thread.call(library, model, args.tokens)
    for _ in range(args.runs):
        for name, result in (("ours", thread.call(ours, engine, args.tokens)),
                             ("library", thread.call(library, model, args.tokens))):
            print(f"{name:<8}" + "  ".join(f"{k} {v:.2f} s" for k, v in result.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
