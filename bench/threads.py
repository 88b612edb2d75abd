"""Why all model work runs on one thread: the engine's steps with and without a second live thread that
has run torch's parallel kernels (`.venv/bin/python bench/threads.py`).

On the random full-size Turbo checkpoint, in one process: a request decoded on the thread that loaded
the model, then on a new thread (which ends after it) while the first one, idle, still exists, repeated
`--runs` times, interleaved. Our reading of why: libgomp gives each thread that starts a parallel region
a team of OpenMP workers of its own, and with more of them than cores its barriers stop spinning
(GOMP_SPINCOUNT does not change it), so every small kernel pays for waking its workers. The ratio is
what matters; the numbers are this machine's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

from chatterbox_predictor.engine import Engine, EngineConfig, ModelThread, SynthesisRequest
from chatterbox_predictor.loading import load_model
from chatterbox_predictor.random_checkpoint import random_checkpoint_dir
from chatterbox_predictor.sampling import SamplingParams
from chatterbox_predictor.variants import TURBO
from chatterbox_predictor.voices import VoiceCache, VoiceLibrary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chatterbox-predictor")
    args = parser.parse_args(argv)
    torch.set_num_threads(psutil.cpu_count(logical=False) or 1)
    owner = ModelThread()
    directory = owner.call(random_checkpoint_dir, args.cache, TURBO, "full")
    model = owner.call(load_model, directory, TURBO, device="cpu")
    config = EngineConfig.from_settings(variant=TURBO, max_batch_size=1, warmup=False)
    engine = Engine(model, config, "cpu", VoiceLibrary(directory, TURBO, "cpu", VoiceCache(2**28)), owner)
    owner.call(engine.warm_up)
    request = SynthesisRequest(
        "The quick brown fox jumps over the lazy dog near the river bank.",
        params=SamplingParams(max_new_tokens=args.tokens), seed=1)

    def timed() -> float:
        started = time.perf_counter()
        for _ in engine.synthesize(request, threading.Event()):
            pass
        return time.perf_counter() - started

    def on_a_new_thread() -> float:
        result = []
        thread = threading.Thread(target=lambda: result.append(timed()))
        thread.start()
        thread.join()
        return result[0]

    same, other = [], []
    for _ in range(args.runs):
        same.append(owner.call(timed))
        other.append(on_a_new_thread())
    print(f"decoding {args.tokens} tokens, median of {args.runs} (min-max):")
    print(f"  on the thread that loaded the model: {statistics.median(same):.2f} s "
          f"({min(same):.2f}-{max(same):.2f})")
    print(f"  on a new thread (the first one alive): {statistics.median(other):.2f} s "
          f"({min(other):.2f}-{max(other):.2f}), "
          f"{statistics.median(other) / statistics.median(same):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
