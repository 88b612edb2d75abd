"""`make soak`: memory under churn. Many requests over many voices through the engine's worker, with RSS
(and CUDA memory where there is one) at the start, along the way and at the end.

What may grow, and by how much: the voice cache (`--voice-cache-mb`, loaded voices, least recently used
evicted first) and the engine's conditioning-prefix cache (`EngineConfig.prefix_cache_entries` voices'
T3 keys and values). Both are filled by the warm-up pass over every voice, before the start figure is
taken, so the end figure should sit near the start; anything beyond is a leak, and the report says how
much beyond the bound it is. The default is the small random checkpoint (its S3Gen is full size), so that
1,000 requests take minutes; `--size full` for the real shapes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import sys
import time
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]

from chatterbox_predictor.engine import Engine, EngineConfig, ModelThread, SynthesisRequest  # noqa: E402
from chatterbox_predictor.loading import load_model  # noqa: E402
from chatterbox_predictor.random_checkpoint import random_checkpoint_dir  # noqa: E402
from chatterbox_predictor.sampling import SamplingParams  # noqa: E402
from chatterbox_predictor.variants import get_variant  # noqa: E402
from chatterbox_predictor.voices import VoiceCache, VoiceLibrary  # noqa: E402

TEXTS = ["Short one.", "A slightly longer sentence to say.", "Numbers: one, two, three.",
         "Goodbye for now. See you soon."]


def write_voices(directory: Path, checkpoint: Path, count: int) -> list[str]:
    """`count` distinct voices: the checkpoint's built-in one with its speaker embeddings moved."""
    base = torch.load(checkpoint / "conds.pt", weights_only=True)
    directory.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        t3 = dict(base["t3"])
        t3["speaker_emb"] = t3["speaker_emb"] + 0.1 * torch.randn(t3["speaker_emb"].shape, generator=g)
        gen = dict(base["gen"])
        gen["embedding"] = gen["embedding"] + 0.1 * torch.randn(gen["embedding"].shape, generator=g)
        buffer = io.BytesIO()
        torch.save({"t3": t3, "gen": gen}, buffer)
        (directory / f"soak-{i:02d}.pth").write_bytes(buffer.getvalue())
        ids.append(f"soak-{i:02d}")
    return ids


def memory(device: str) -> dict:
    gc.collect()
    out = {"rss_mb": psutil.Process().memory_info().rss / 2**20}
    if device.startswith("cuda"):
        out["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        out["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return out


async def soak(engine: Engine, voices: list[str], requests: int, concurrency: int, tokens: int,
               device: str, samples: list) -> dict:
    counter = iter(range(requests))
    done = {"ok": 0, "failed": 0, "audio_s": 0.0}

    async def client():
        for n in counter:
            request = SynthesisRequest(TEXTS[n % len(TEXTS)], voice_id=voices[n % len(voices)],
                                       params=SamplingParams(max_new_tokens=tokens), seed=n)
            try:
                async for chunk in engine.stream(request):
                    done["audio_s"] += chunk.duration_s
                done["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
                done["failed"] += 1
                print(f"request {n} failed: {exc}", file=sys.stderr)
            if (n + 1) % max(1, requests // 10) == 0:
                samples.append({"requests": n + 1, **memory(device)})
                print(f"{n + 1} requests: rss {samples[-1]['rss_mb']:.0f} MB", file=sys.stderr)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--voices", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=10, help="speech tokens per request (25 = 1 s)")
    parser.add_argument("--voice-cache-mb", type=int, default=1,
                        help="voice cache budget (the default holds a few of the 20 small-checkpoint "
                             "voices, so that they are evicted and loaded again all along)")
    parser.add_argument("--variant", default="turbo")
    parser.add_argument("--size", default="small", choices=("small", "full"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chatterbox-predictor")
    parser.add_argument("--work", type=Path, default=Path("/tmp/chatterbox-soak"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)

    if args.device == "cpu":
        torch.set_num_threads(psutil.cpu_count(logical=False) or 1)
    variant = get_variant(args.variant)
    # The model's work on one thread, as in the server (see engine.ModelThread).
    thread = ModelThread()
    checkpoint = thread.call(random_checkpoint_dir, args.cache, variant, args.size)
    voice_ids = write_voices(args.work / "voices", checkpoint, args.voices)
    model = thread.call(load_model, checkpoint, variant, device=args.device)
    cache = VoiceCache(args.voice_cache_mb * 2**20)
    config = EngineConfig.from_settings(variant=variant, max_batch_size=args.concurrency,
                                        queue_size=2 * args.concurrency)
    library = VoiceLibrary(args.work / "voices", variant, args.device, cache)
    engine = Engine(model, config, args.device, library, thread)
    thread.call(engine.warm_up)
    engine.start()
    samples: list[dict] = []
    try:
        # Every voice once: the caches reach their steady size before the start figure.
        asyncio.run(soak(engine, voice_ids, len(voice_ids), args.concurrency, args.tokens, args.device, []))
        start = memory(args.device)
        started = time.monotonic()
        done = asyncio.run(soak(engine, voice_ids, args.requests, args.concurrency, args.tokens,
                                args.device, samples))
        wall = time.monotonic() - started
        end = memory(args.device)
    finally:
        engine.stop()
    growth = end["rss_mb"] - start["rss_mb"]
    # What may still grow after the warm-up pass: the voice cache up to its budget (it was filled to
    # what the warm-up left) and allocator slack; more than the budget plus 10% of the start is a leak.
    allowed = args.voice_cache_mb + 0.1 * start["rss_mb"]
    report = {"requests": args.requests, "voices": args.voices, "concurrency": args.concurrency,
              "tokens": args.tokens, "size": args.size, "device": args.device, "wall_s": wall, **done,
              "start": start, "end": end, "samples": samples, "rss_growth_mb": growth,
              "voice_cache_mb": args.voice_cache_mb, "voice_cache_entries": len(cache),
              "voice_cache_evictions": cache.misses - len(cache),
              "prefix_cache_entries": len(engine._prefixes), "rss_growth_bound_mb": allowed,
              "within_bound": growth <= allowed}
    print(f"{done['ok']} requests served, {done['failed']} failed, {done['audio_s']:.0f} s of audio "
          f"in {wall:.0f} s; voice cache: {len(cache)} voices, {cache.misses} loads for {args.voices} voices")
    verdict = "within" if growth <= allowed else "BEYOND"
    print(f"RSS start {start['rss_mb']:.0f} MB, end {end['rss_mb']:.0f} MB: growth {growth:+.0f} MB, "
          f"{verdict} the bound of {allowed:.0f} MB (the voice cache's {args.voice_cache_mb} MB and "
          f"{config.prefix_cache_entries} conditioning prefixes, full before the start figure, plus 10% "
          "allocator slack)")
    if "cuda_allocated_mb" in start:
        print(f"CUDA allocated start {start['cuda_allocated_mb']:.0f} MB, "
              f"end {end['cuda_allocated_mb']:.0f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if done["failed"] == 0 and growth <= allowed else 1


if __name__ == "__main__":
    sys.exit(main())
