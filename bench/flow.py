"""S3Gen's flow pass, one stream at a time against several streams' passes in one batch (CPU).

`.venv/bin/python bench/flow.py`: on the random full-size Turbo checkpoint (`--variant english` for the
10-step guided flow), the median time of `flow_mels` for one pass and for 2, 4 and 8 passes of the same
shape batched, at the window shapes streaming uses: a first chunk (10 tokens after a prompt tail of 75
or 25 tokens) and a later one (25 tokens of context and 20 new after 75 of prompt). Each stream has its
own tokens and noise. Results to bench/results/flow.json; the ratio is what matters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psutil
import torch

from chatterbox_predictor.engine import ModelThread
from chatterbox_predictor.loading import load_model
from chatterbox_predictor.random_checkpoint import random_checkpoint_dir
from chatterbox_predictor.speech import SpeechStream, flow_mels
from chatterbox_predictor.variants import get_variant

REPO = Path(__file__).resolve().parents[1]
# (prompt tokens, speech tokens in the window): the first chunk with the plan's windows, a shorter
# prompt tail, and a later chunk.
SHAPES = [(75, 10), (25, 10), (75, 45)]


def measure(model, variant, batch: int, prompt: int, speech: int, runs: int) -> float:
    streams = [SpeechStream(model.s3gen, model.conds.gen, meanflow=variant.meanflow, seed=i)
               for i in range(batch)]
    tokens = [torch.randint(0, 6561, (speech,), generator=torch.Generator().manual_seed(i)).tolist()
              for i in range(batch)]
    inputs = [s.flow_input(t, 0, prompt) for s, t in zip(streams, tokens, strict=True)]
    flow_mels(model.s3gen.flow, inputs)  # the first call at a shape allocates
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        flow_mels(model.s3gen.flow, inputs)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="turbo")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chatterbox-predictor")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "flow.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(psutil.cpu_count(logical=False) or 1)
    variant = get_variant(args.variant)
    thread = ModelThread()  # all model work on one thread, as in the server
    model = thread.call(load_model, thread.call(random_checkpoint_dir, args.cache, variant, "full"), variant,
                        device="cpu")
    rows = []
    for prompt, speech in SHAPES:
        one = thread.call(measure, model, variant, 1, prompt, speech, args.runs)
        for batch in (2, 4, 8):
            together = thread.call(measure, model, variant, batch, prompt, speech, args.runs)
            rows.append({"prompt_tokens": prompt, "speech_tokens": speech, "batch": batch, "one_s": one,
                         "batch_s": together, "of_one_by_one": together / (batch * one)})
            print(f"prompt {prompt:>3} + speech {speech:>3} tokens: one pass {one * 1000:5.0f} ms, {batch} "
                  f"batched {together * 1000:6.0f} ms = {rows[-1]['of_one_by_one']:.2f} of one by one",
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"variant": args.variant, "threads": torch.get_num_threads(),
                                    "runs": args.runs, "passes": rows}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
