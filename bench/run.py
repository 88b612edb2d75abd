"""`make bench`: our streaming engine against the library's own generate(), in one process.

Both run on the same random-weight full-size checkpoint (built once into the model cache), with the same
seed and the same speech-token budget. Our token loop samples exactly as the library's does, so under
one seed both draw the same tokens and produce audio of the same length: the comparison is like for
like. Our engine runs as the server does, on its own copy of the checkpoint with T3's linear weights
packed for oneDNN (`--no-pack`: PyTorch's own layers) and S3Gen's flow linears and vocoder convolutions
in `--s3gen-dtype` (default auto, as the server: bfloat16 on a CPU with AVX512-BF16); the library keeps
its own layers, all float32. The packed sums round differently in the last bits, which can part the two
draws where two tokens are that close (not once in bench/steps.py's 150 tokens); the results keep both
audio lengths (`audio_s`, `baseline_audio_s`). The library returns its audio at the end, so its time to
first audio is its total time.

Every case runs `--runs` times (default 3), interleaved with the library's, after both were warmed on the
measured texts; the tables give medians and the spread. `--concurrency 1,2,4,8` measures many streams at
once instead: per level, the streams submitted together to the engine's worker at `max_batch_size` 1
and at the largest level, and the library's `generate()` for the same requests one after another.

`--device cuda` runs both sides on the GPU (T3's packing is a CPU layout and is skipped there; the meta
names the card). Audio reaches both sides' callers as host arrays, so the clocks stop after the device
has finished.

Numbers on a shared CPU are noisy: compare the ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support (the library's token cap)

from chatterbox_predictor.engine import (  # noqa: E402
    Engine,
    EngineConfig,
    ModelThread,
    SynthesisRequest,
    prepare_s3gen,
    prepare_t3,
    s3gen_dtype,
)
from chatterbox_predictor.loading import load_model  # noqa: E402
from chatterbox_predictor.random_checkpoint import random_checkpoint_dir  # noqa: E402
from chatterbox_predictor.sampling import SamplingParams  # noqa: E402
from chatterbox_predictor.variants import get_variant  # noqa: E402
from chatterbox_predictor.voices import VoiceCache, VoiceLibrary  # noqa: E402
from tests.support.chatterbox import capped_speech_tokens  # noqa: E402

CASES = {
    "one_sentence": "The quick brown fox jumps over the lazy dog near the river bank.",
    "two_sentences": "The quick brown fox jumps over the lazy dog near the river bank. "
                     "Then it runs back home before the sun goes down behind the hills.",
}


class PeakRss:
    """Samples this process's resident memory every 10 ms while the block runs."""

    def __enter__(self):
        self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        proc = psutil.Process()
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.peak / 2**20


def run_library(model, text: str, tokens: int, seed: int) -> dict:
    torch.manual_seed(seed)
    with PeakRss() as rss, capped_speech_tokens(model, tokens):
        started = time.perf_counter()
        wav = model.generate(text)
        total = time.perf_counter() - started
    return {"total_s": total, "audio_s": wav.shape[-1] / model.sr, "peak_rss_mb": rss.mb}


def run_ours(engine: Engine, text: str, tokens: int, seed: int) -> dict:
    request = SynthesisRequest(text, params=SamplingParams(max_new_tokens=tokens), seed=seed)
    with PeakRss() as rss:
        started = time.perf_counter()
        ttfa, audio, chunks = None, 0.0, 0
        for chunk in engine.synthesize(request, threading.Event()):
            ttfa = ttfa if ttfa is not None else time.perf_counter() - started
            audio += chunk.duration_s
            chunks += 1
        total = time.perf_counter() - started
    return {"ttfa_s": ttfa, "total_s": total, "audio_s": audio, "chunks": chunks, "peak_rss_mb": rss.mb}


def spread(values: list[float]) -> dict:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p95 of 4 values is the largest: no interpolation past what was seen)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def single_cases(name: str, model, engine: Engine, args) -> list[dict]:
    cases = []
    for case, text in CASES.items():
        budget = args.tokens * (2 if case == "two_sentences" else 1)
        # Both sides warmed on the measured text before timing (first calls pick kernels, allocate).
        run_library(model, text, budget, args.seed)
        run_ours(engine, text, budget, args.seed)
        base, ours = [], []
        for _ in range(args.runs):  # interleaved, so that a slow spell of the machine hits both
            base.append(run_library(model, text, budget, args.seed))
            ours.append(run_ours(engine, text, budget, args.seed))
        med = {k: statistics.median(r[k] for r in ours) for k in ("ttfa_s", "total_s", "audio_s")}
        lib = statistics.median(r["total_s"] for r in base)
        cases.append({
            "name": f"{name}/{case}", "variant": name, "tokens": budget, "runs": args.runs,
            "ttfa_s": med["ttfa_s"], "total_s": med["total_s"], "audio_s": med["audio_s"],
            "chunks": ours[0]["chunks"], "rtf": med["total_s"] / med["audio_s"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
            "baseline_total_s": lib, "baseline_audio_s": base[0]["audio_s"],
            "baseline_rtf": lib / base[0]["audio_s"],
            "baseline_peak_rss_mb": max(r["peak_rss_mb"] for r in base),
            "ttfa_vs_baseline_total": med["ttfa_s"] / lib, "total_vs_baseline_total": med["total_s"] / lib,
            # Per run, ours over the library run beside it: the spread of the ratio the targets are about.
            "total_vs_baseline_spread": spread([o["total_s"] / b["total_s"]
                                                for o, b in zip(ours, base, strict=True)]),
            "ttfa_spread_s": spread([r["ttfa_s"] for r in ours]),
        })
        print(f"done {cases[-1]['name']}", file=sys.stderr)
    return cases


def print_single(cases: list[dict]) -> None:
    header = (f"{'case':<28}{'tokens':>7}{'ttfa s':>9}{'total s':>9}{'lib total s':>12}{'ttfa/lib':>9}"
              f"{'total/lib':>10}{'(min-max)':>12}{'audio s':>9}{'rtf':>7}{'lib rtf':>8}{'rss MB':>8}")
    print(header)
    for c in cases:
        s = c["total_vs_baseline_spread"]
        print(f"{c['name']:<28}{c['tokens']:>7}{c['ttfa_s']:>9.2f}{c['total_s']:>9.2f}"
              f"{c['baseline_total_s']:>12.2f}{c['ttfa_vs_baseline_total']:>9.2f}"
              f"{c['total_vs_baseline_total']:>10.2f}{s['min']:>6.2f}-{s['max']:<5.2f}{c['audio_s']:>9.2f}"
              f"{c['rtf']:>7.2f}{c['baseline_rtf']:>8.2f}{c['peak_rss_mb']:>8.0f}")


# -- concurrency -------------------------------------------------------------------------------------
# Distinct sentences (and seeds) per stream, as distinct clients would send.
STREAM_TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please leave the package at the front door before noon.",
    "Our next train to the city leaves from platform four.",
    "She sells sea shells by the sea shore every summer.",
    "Turn left at the second light and park behind the bakery.",
    "The meeting has moved to Thursday at half past three.",
    "A gentle rain fell on the quiet village all night long.",
    "Remember to water the plants while I am away this week.",
]


def _stream_requests(level: int, tokens: int, seed: int) -> list[SynthesisRequest]:
    params = SamplingParams(max_new_tokens=tokens)
    return [SynthesisRequest(STREAM_TEXTS[i % len(STREAM_TEXTS)], params=params, seed=seed + i)
            for i in range(level)]


def run_engine_level(engine: Engine, requests: list[SynthesisRequest]) -> dict:
    """All requests submitted at once to the engine's worker (started for them: the engines take turns on
    one model thread); per request the time to its first chunk and to its last, from the common start."""

    async def one(request, started):
        ttfa, audio = None, 0.0
        async for chunk in engine.stream(request):
            ttfa = ttfa if ttfa is not None else time.perf_counter() - started
            audio += chunk.duration_s
        return ttfa, time.perf_counter() - started, audio

    async def all_of_them():
        started = time.perf_counter()
        return await asyncio.gather(*(one(r, started) for r in requests))

    engine.start()
    try:
        return _level_metrics(asyncio.run(all_of_them()))
    finally:
        engine.stop()


def run_library_level(model, requests: list[SynthesisRequest], tokens: int) -> dict:
    """The library's generate() for the same requests, one after another: a request's audio (all of it at
    once) is ready when its call returns, after the calls before it."""
    results = []
    with capped_speech_tokens(model, tokens):
        started = time.perf_counter()
        for request in requests:
            torch.manual_seed(request.seed)
            wav = model.generate(request.text)
            done = time.perf_counter() - started
            results.append((done, done, wav.shape[-1] / model.sr))
    return _level_metrics(results)


def _level_metrics(results: list[tuple[float, float, float]]) -> dict:
    """From (time to first audio, time to last audio, audio seconds) per request of one run. A stream's
    real-time factor is its wall time, from the common start to its last audio, over its audio."""
    ttfa = [r[0] for r in results]
    wall = max(r[1] for r in results)
    return {"audio_s_per_wall_s": sum(r[2] for r in results) / wall, "ttfa_p50_s": percentile(ttfa, 50),
            "ttfa_p95_s": percentile(ttfa, 95), "stream_rtf": [r[1] / r[2] for r in results],
            "wall_s": wall, "audio_s": sum(r[2] for r in results)}


def concurrency(model, engines: dict[int, Engine], thread: ModelThread, levels: list[int],
                args) -> list[dict]:
    """Every level's runs; the library runs on the engines' model thread, between their turns."""
    out = []
    # Warm-up on the measured texts, both sides, untimed.
    for engine in engines.values():
        run_engine_level(engine, _stream_requests(max(levels), args.tokens, args.seed))
    thread.call(run_library_level, model,
                _stream_requests(min(len(STREAM_TEXTS), max(levels)), args.tokens, args.seed), args.tokens)
    for level in levels:
        requests = _stream_requests(level, args.tokens, args.seed)
        runs: dict[str, list[dict]] = {}
        for _ in range(args.runs):  # interleaved settings, so that a slow spell hits them all
            for size, engine in engines.items():
                runs.setdefault(f"ours/{size}", []).append(run_engine_level(engine, requests))
            library = thread.call(run_library_level, model, requests, args.tokens)
            runs.setdefault("library", []).append(library)
        for setting, results in runs.items():
            entry = {"concurrency": level, "engine": setting.split("/")[0],
                     "max_batch_size": int(setting.split("/")[1]) if "/" in setting else 1,
                     "runs": len(results)}
            for key in ("audio_s_per_wall_s", "ttfa_p50_s", "ttfa_p95_s", "wall_s"):
                entry[key] = statistics.median(r[key] for r in results)
                entry[key + "_spread"] = spread([r[key] for r in results])
            rtf = [x for r in results for x in r["stream_rtf"]]
            entry["stream_rtf_p50"], entry["stream_rtf_max"] = percentile(rtf, 50), max(rtf)
            out.append(entry)
        print(f"done concurrency {level}", file=sys.stderr)
    return out


def print_concurrency(levels: list[dict]) -> None:
    print(f"{'conc':>5}{'engine':>9}{'batch':>6}{'audio s/wall s':>16}{'(min-max)':>13}{'ttfa p50':>10}"
          f"{'ttfa p95':>10}{'(min-max)':>13}{'rtf p50':>9}{'rtf max':>9}{'x batch=1':>10}")
    for e in levels:
        base = next(b for b in levels if b["concurrency"] == e["concurrency"] and b["engine"] == "ours"
                    and b["max_batch_size"] == 1)
        a, t = e["audio_s_per_wall_s_spread"], e["ttfa_p95_s_spread"]
        print(f"{e['concurrency']:>5}{e['engine']:>9}{e['max_batch_size']:>6}{e['audio_s_per_wall_s']:>16.3f}"
              f"{a['min']:>7.3f}-{a['max']:<5.3f}{e['ttfa_p50_s']:>10.2f}{e['ttfa_p95_s']:>10.2f}"
              f"{t['min']:>7.2f}-{t['max']:<5.2f}{e['stream_rtf_p50']:>9.2f}{e['stream_rtf_max']:>9.2f}"
              f"{e['audio_s_per_wall_s'] / base['audio_s_per_wall_s']:>10.2f}")


# Issue 15's CPU targets at 4 streams: aggregate throughput against max_batch_size 1, and time to first
# audio p95 against the same engine's single stream.
TARGET_LEVEL, TARGET_THROUGHPUT, TARGET_TTFA = 4, 1.7, 2.0


def check_targets(levels: list[dict]) -> list[str]:
    """A line saying whether the batched engine meets the targets (none without levels 1 and 4)."""
    ours = {(e["concurrency"], e["max_batch_size"]): e for e in levels if e["engine"] == "ours"}
    largest = max(size for _, size in ours)
    batched, serial = ours.get((TARGET_LEVEL, largest)), ours.get((TARGET_LEVEL, 1))
    alone = ours.get((1, largest))
    if largest == 1 or not (batched and serial and alone):
        return []
    gain = batched["audio_s_per_wall_s"] / serial["audio_s_per_wall_s"]
    wait = batched["ttfa_p95_s"] / alone["ttfa_p95_s"]
    verdict = {True: "met", False: "NOT met"}
    return [f"{TARGET_LEVEL} streams, max_batch_size {largest}: throughput {gain:.2f}x "
            f"max_batch_size 1's (target >= {TARGET_THROUGHPUT}: {verdict[gain >= TARGET_THROUGHPUT]}); "
            f"time to first audio p95 {batched['ttfa_p95_s']:.2f} s, {wait:.2f}x the single stream's "
            f"{alone['ttfa_p95_s']:.2f} s (target <= {TARGET_TTFA}: {verdict[wait <= TARGET_TTFA]})"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="turbo", help="comma-separated: turbo,english")
    parser.add_argument("--tokens", type=int, default=50, help="speech tokens per sentence (25 = 1 s)")
    parser.add_argument("--size", default="full", choices=("small", "full"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda (cuda:N) where a GPU is visible: both sides run there")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case (median and spread)")
    parser.add_argument("--concurrency", default="",
                        help="comma-separated stream counts (e.g. 1,2,4,8): streams submitted at once to "
                             "the engine at max_batch_size 1 and at the largest level, and the library's "
                             "generate() one after another; instead of the single-stream cases")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="our engine's T3 dtype (the library runs its own way, float32, on a copy)")
    parser.add_argument("--no-pack", dest="pack", action="store_false",
                        help="our engine's T3 keeps PyTorch's own linear layers (default: packed for oneDNN, "
                             "as the server does on a CPU)")
    parser.add_argument("--s3gen-dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="dtype of our engine's S3Gen products (auto: as the server picks it)")
    parser.add_argument("--flow-prompt-tokens", type=int, default=None,
                        help="voice prompt S3Gen sees while streaming, 0 for all of it "
                             "(default: the variant's stream plan)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chatterbox-predictor")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default: bench/results/latest.json, or concurrency.json)")
    args = parser.parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {device}: no CUDA device is visible here")
    levels = [int(x) for x in args.concurrency.split(",") if x]
    out = args.out or REPO / "bench" / "results" / ("concurrency.json" if levels else "latest.json")

    torch.set_num_threads(psutil.cpu_count(logical=False) or 1)
    # All model work on one thread, as in the server: the engines' workers take turns on it, and the
    # library runs there too (a second thread running torch would slow the first one, see engine.py).
    thread = ModelThread()
    cases, level_results = [], []
    s3gen = s3gen_dtype(EngineConfig.from_settings(s3gen_dtype=args.s3gen_dtype), device)  # auto resolved
    for name in args.variants.split(","):
        variant = get_variant(name)
        directory = thread.call(random_checkpoint_dir, args.cache, variant, args.size)
        model = thread.call(load_model, directory, variant, device=device)
        plan = variant.stream_plan
        if args.flow_prompt_tokens is not None:
            window = args.flow_prompt_tokens or None
            plan = dataclasses.replace(plan, prompt_tokens=window, first_prompt_tokens=window)
        voices = VoiceLibrary(directory, variant, device, VoiceCache(2**28))
        settings = dict(variant=variant, stream_plan=plan, queue_size=max([16, *levels]), dtype=args.dtype,
                        pack_weights=args.pack, s3gen_dtype=args.s3gen_dtype)
        ours = model
        prepared = EngineConfig.from_settings(**settings)
        if args.dtype != "float32" or args.pack or s3gen != torch.float32:
            # A second copy: the library's generate() keeps its own.
            ours = thread.call(load_model, directory, variant, device=device)
            thread.call(prepare_t3, ours, prepared)
            thread.call(prepare_s3gen, ours, prepared)

        def engine(batch: int, ours=ours, voices=voices, settings=settings) -> Engine:
            config = EngineConfig.from_settings(max_batch_size=batch, **settings)
            return Engine(ours, config, device, voices, thread)

        thread.call(run_library, model, "Warm up.", 5, 0)
        if not levels:
            single = engine(1)
            thread.call(single.warm_up)
            cases += thread.call(single_cases, name, model, single, args)
            continue
        engines = {1: engine(1), max(levels): engine(max(levels))}
        thread.call(next(iter(engines.values())).warm_up)
        for entry in concurrency(model, engines, thread, levels, args):
            level_results.append({"variant": name, **entry})

    meta = {"size": args.size, "device": device, "dtype": args.dtype, "packed": args.pack and device == "cpu",
            "s3gen_dtype": str(s3gen).removeprefix("torch."),
            "threads": torch.get_num_threads(), "tokens": args.tokens, "runs": args.runs,
            "cpu": platform.processor() or platform.machine()}
    if device.startswith("cuda"):  # the card the numbers belong to
        meta["gpu"] = torch.cuda.get_device_name(device)
    if levels:
        print_concurrency(level_results)
        for line in check_targets(level_results):
            print(line)
        payload = {**meta, "levels": level_results}
    else:
        print_single(cases)
        payload = {**meta, "cases": cases}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
