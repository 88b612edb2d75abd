"""`make bench`: our streaming engine against the library's own generate(), in one process.

Both run on the same random-weight full-size checkpoint (built once into the model cache), with the same
seed and the same speech-token budget. Our token loop samples exactly as the library's does, so under
one seed both draw the same tokens and produce audio of the same length: the comparison is like for
like. The library returns its audio at the end, so its time to first audio is its total time.

Numbers on a shared CPU are noisy: compare the ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support (the library's token cap)

from chatterbox_predictor.engine import Engine, EngineConfig, SynthesisRequest  # noqa: E402
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="turbo", help="comma-separated: turbo,english")
    parser.add_argument("--tokens", type=int, default=50, help="speech tokens per sentence (25 = 1 s)")
    parser.add_argument("--size", default="full", choices=("small", "full"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flow-prompt-tokens", type=int, default=None,
                        help="voice prompt S3Gen sees while streaming, 0 for all of it "
                             "(default: the variant's stream plan)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chatterbox-predictor")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(psutil.cpu_count(logical=False) or 1)
    cases = []
    for name in args.variants.split(","):
        variant = get_variant(name)
        directory = random_checkpoint_dir(args.cache, variant, args.size)
        model = load_model(directory, variant, device="cpu")
        plan = variant.stream_plan
        if args.flow_prompt_tokens is not None:
            window = args.flow_prompt_tokens or None
            plan = dataclasses.replace(plan, prompt_tokens=window, first_prompt_tokens=window)
        config = EngineConfig.from_settings(variant=variant, stream_plan=plan)
        engine = Engine(model, config, "cpu", VoiceLibrary(directory, variant, "cpu", VoiceCache(2**28)))
        # First calls allocate and pick kernels: not measured. Ours is the engine's load-time warm-up.
        run_library(model, "Warm up.", 5, 0)
        engine.warm_up()
        for case, text in CASES.items():
            budget = args.tokens * (2 if case == "two_sentences" else 1)
            base = run_library(model, text, budget, args.seed)
            ours = run_ours(engine, text, budget, args.seed)
            cases.append({
                "name": f"{name}/{case}", "variant": name, "tokens": budget, "ttfa_s": ours["ttfa_s"],
                "total_s": ours["total_s"], "audio_s": ours["audio_s"], "chunks": ours["chunks"],
                "rtf": ours["total_s"] / ours["audio_s"], "peak_rss_mb": ours["peak_rss_mb"],
                "baseline_total_s": base["total_s"], "baseline_audio_s": base["audio_s"],
                "baseline_rtf": base["total_s"] / base["audio_s"],
                "baseline_peak_rss_mb": base["peak_rss_mb"],
                "ttfa_vs_baseline_total": ours["ttfa_s"] / base["total_s"],
                "total_vs_baseline_total": ours["total_s"] / base["total_s"],
            })
            print(f"done {cases[-1]['name']}", file=sys.stderr)

    header = (f"{'case':<28}{'tokens':>7}{'ttfa s':>9}{'total s':>9}{'lib total s':>12}{'ttfa/lib':>9}"
              f"{'total/lib':>10}{'audio s':>9}{'rtf':>7}{'lib rtf':>8}{'rss MB':>8}{'lib rss MB':>11}")
    print(header)
    for c in cases:
        print(f"{c['name']:<28}{c['tokens']:>7}{c['ttfa_s']:>9.2f}{c['total_s']:>9.2f}"
              f"{c['baseline_total_s']:>12.2f}{c['ttfa_vs_baseline_total']:>9.2f}"
              f"{c['total_vs_baseline_total']:>10.2f}{c['audio_s']:>9.2f}{c['rtf']:>7.2f}"
              f"{c['baseline_rtf']:>8.2f}{c['peak_rss_mb']:>8.0f}{c['baseline_peak_rss_mb']:>11.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"size": args.size, "device": "cpu", "threads": torch.get_num_threads(),
                                    "cases": cases}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
