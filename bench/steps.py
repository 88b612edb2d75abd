"""T3's decoding step by batch size, dtype and weight layout, and what each does to the drawn tokens (CPU).

`.venv/bin/python bench/steps.py`: on the random full-size Turbo checkpoint, the median time of one
batched decode step through our `T3Batch` (each row past a voice's conditioning and three sentences) at
batch sizes 1, 2, 4 and 8, in float32 and bfloat16, each with PyTorch's own linear layers and with
oneDNN's packed ones (`packed_linear`); then the same three requests' tokens drawn under the same seeds in
each setting against plain float32 (how far they agree before the first difference, and position by
position). Results to bench/results/steps.json.
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

REPO = Path(__file__).resolve().parents[1]

from chatterbox_predictor.loading import load_model  # noqa: E402
from chatterbox_predictor.packed_linear import pack_linears  # noqa: E402
from chatterbox_predictor.random_checkpoint import random_checkpoint_dir  # noqa: E402
from chatterbox_predictor.sampling import SamplingParams  # noqa: E402
from chatterbox_predictor.t3_stream import (  # noqa: E402
    ConditioningPrefix,
    T3Batch,
    T3Row,
    T3Stream,
    with_exaggeration,
)
from chatterbox_predictor.variants import get_variant  # noqa: E402

# T3's dtype, and whether its linear layers are packed for oneDNN (packed_linear).
SETTINGS = ("float32", "float32 packed", "bfloat16", "bfloat16 packed")
TEXTS = ["The quick brown fox jumps over the lazy dog near the river bank.",
         "Please leave the package at the front door before noon.",
         "Our next train to the city leaves from platform four."]


def step_times(model, variant, batch: int, steps: int) -> float:
    """Median seconds of a decode step for `batch` rows, each after the voice's cached conditioning and
    the three texts' prefill (as the engine starts a piece)."""
    dtype = next(model.t3.parameters()).dtype
    cond = with_exaggeration(model.conds.t3, 0.0).to(dtype=dtype)
    prefix = ConditioningPrefix.compute(model.t3, cond)
    params = SamplingParams(max_new_tokens=steps + 2).resolved(variant.sampling_defaults, 1000)
    text = variant.text_tokens(model, " ".join(TEXTS), None)
    t3_batch = T3Batch(model.t3)
    for i in range(batch):
        t3_batch.add(T3Row(model.t3, variant, cond, text, params, torch.Generator().manual_seed(i), prefix))
    t3_batch.step()  # the prefill
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        t3_batch.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tokens(model, variant, tokens_per_text: int) -> list[list[int]]:
    dtype = next(model.t3.parameters()).dtype
    cond = with_exaggeration(model.conds.t3, 0.0).to(dtype=dtype)
    prefix = ConditioningPrefix.compute(model.t3, cond)
    params = SamplingParams(max_new_tokens=tokens_per_text).resolved(variant.sampling_defaults, 1000)
    out = []
    for i, text in enumerate(TEXTS):
        stream = T3Stream(model.t3, variant, cond, variant.text_tokens(model, text, None), params,
                          torch.Generator().manual_seed(i), prefix)
        out.append(list(iter(stream.next_token, None)))
    return out


def agreement_with(reference: list[list[int]], drawn: list[list[int]]) -> dict:
    """Per text: the share of `reference`'s tokens before the first difference, and the share equal
    position by position."""
    before, same = [], []
    for a, b in zip(reference, drawn, strict=True):
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        before.append(round(first / len(a), 2))
        same.append(round(sum(x == y for x, y in zip(a, b, strict=False)) / len(a), 2))
    return {"before_first_difference": before, "same_position": same}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=9, help="timed decode steps per batch size")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per text for the agreement")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chatterbox-predictor")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "steps.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(psutil.cpu_count(logical=False) or 1)
    variant = get_variant("turbo")
    directory = random_checkpoint_dir(args.cache, variant, "full")
    # Each setting is its own copy of the checkpoint: converting or packing one copy in turn would round
    # its float32 weights.
    models = {}
    for name in SETTINGS:
        model = models[name] = load_model(directory, variant, device="cpu")
        if name.startswith("bfloat16"):
            model.t3.to(dtype=torch.bfloat16)
        if name.endswith("packed") and not pack_linears(model.t3):
            del models[name]  # this CPU or build has no packed linear for the dtype
    batches = [int(b) for b in args.batches.split(",")]
    steps = {name: {b: step_times(model, variant, b, args.steps) for b in batches}
             for name, model in models.items()}
    drawn = {name: tokens(model, variant, args.tokens) for name, model in models.items()}
    agreement = {name: agreement_with(drawn["float32"], drawn[name]) for name in models if name != "float32"}
    print(f"{'batch':>6}" + "".join(f"{name:>18}" for name in models) + "   (ms a step; x: over batch 1)")
    for b in batches:
        print(f"{b:>6}" + "".join(f"{steps[name][b] * 1000:>10.0f} {steps[name][b] / steps[name][1]:>5.2f}x "
                                  for name in models))
    for name, agree in agreement.items():
        print(f"{name} against float32's tokens: share before the first difference",
              agree["before_first_difference"], "same position", agree["same_position"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"step_s": steps, "agreement_with_float32": agreement,
                                    "threads": torch.get_num_threads()}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
