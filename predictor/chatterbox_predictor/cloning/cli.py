"""The voice-cloning tool: a directory of a speaker's recordings in, `<voice_id>.pth` and its sidecar out.

    python scripts/clone_voice.py --input_dir /path/to/audio/samples --output_voice_id new_voice_name
    chatterbox-clone-voice --input_dir samples --output_voice_id anna --tune --upload http://host:8080

Every flag has a dashed spelling too (`--input-dir`). One line per rejected recording goes to stderr,
the summary to stdout. Exit codes, for scripts:
    0  the voice was written (and uploaded, with --upload)
    1  an unexpected failure (a bug: the message says where)
    2  bad usage: a flag, or an input directory that is not there
    3  no usable audio: every recording was rejected (each one's reason is printed)
    4  the model could not be loaded (checkpoint directory, download, device)
    5  the output exists (give --overwrite) or cannot be written
    6  the upload failed (the voice file stays on disk)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from chatterbox_voicefile import InvalidVoiceId, voice_file_name
from chatterbox_voicefile.files import write_atomic

OK, FAILED, USAGE, NO_AUDIO, NO_MODEL, NO_OUTPUT, UPLOAD_FAILED = 0, 1, 2, 3, 4, 5, 6
PROG = "chatterbox-clone-voice"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Clone a voice from 1-5 minutes of one speaker's recordings (WAV, FLAC, MP3, "
        "Ogg) into a Chatterbox voice file (<voice_id>.pth) with a JSON sidecar.",
        epilog="Exit codes: 0 written, 1 unexpected failure, 2 usage, 3 no usable audio, 4 model not "
        "loaded, 5 output exists or not writable, 6 upload failed.")
    add = parser.add_argument
    add("--input_dir", "--input-dir", type=Path, required=True, help="Directory of recordings; a <name>.txt "
        "beside <name>.wav is its transcript (used by --tune).")
    add("--output_voice_id", "--output-voice-id", required=True, help="The voice id: the file is "
        "<voice_id>.pth.")
    add("--output_dir", "--output-dir", type=Path, default=Path("."), help="Where to write the voice and "
        "its sidecar (default: the current directory).")
    add("--overwrite", action="store_true", help="Replace an existing voice file.")
    add("--variant", default="turbo", choices=("turbo", "english", "multilingual"),
        help="The Chatterbox variant the voice is for (default: turbo).")
    add("--device", default="auto", choices=("auto", "cuda", "cpu"), help="Device (default: auto).")
    add("--checkpoint_dir", "--checkpoint-dir", type=Path, help="The variant's checkpoint directory "
        "(default: /mnt/models, the image's baked copy, else a Hugging Face Hub download).")
    add("--random_weights", "--random-weights", default="", choices=("", "small", "full"),
        help="Offline trial: a generated checkpoint with RANDOM weights (the voice is not a real one).")
    add("--exaggeration", type=float, default=0.5, help="Emotion exaggeration stored in the voice, 0-2 "
        "(default 0.5; a request may override it).")
    add("--language", help="Language id of the recordings for --tune with transcripts (multilingual).")
    add("--seed", type=int, default=0, help="Seed of --tune's held-out split (default 0).")
    tune = parser.add_argument_group("fine-tuning (--tune): fit the voice's speaker embedding to the "
                                     "recordings by gradient descent; meant for a GPU")
    tune.add_argument("--tune", action="store_true", help="Fine-tune the voice on the recordings.")
    tune.add_argument("--tune_steps", "--tune-steps", type=int, default=50, help="Optimiser steps (50).")
    tune.add_argument("--tune_lr", "--tune-lr", type=float, default=0.002, help="Learning rate (0.002).")
    tune.add_argument("--tune_time_limit", "--tune-time-limit", type=float, default=600.0,
                      help="Stop tuning after this many seconds (600).")
    tune.add_argument("--holdout", type=float, default=0.2, help="Fraction of segments held out (0.2).")
    up = parser.add_argument_group("upload")
    up.add_argument("--upload", metavar="URL", help="Upload the voice to a running predictor, e.g. "
                    "http://localhost:8080 (POST URL/voices).")
    up.add_argument("--api_key", "--api-key", default=os.environ.get("CHATTERBOX_API_KEY"),
                    help="The predictor's API key (default: $CHATTERBOX_API_KEY).")
    add("--quiet", action="store_true", help="No progress bar.")
    return parser


def _usage(args) -> str | None:
    if not args.input_dir.is_dir():
        return f"--input_dir {args.input_dir} is not a directory"
    try:
        voice_file_name(args.output_voice_id)
    except InvalidVoiceId as exc:
        return f"--output_voice_id: {exc}"
    if not 0 <= args.exaggeration <= 2:
        return "--exaggeration must lie in [0, 2]"
    if args.tune and (args.tune_steps < 1 or args.tune_lr <= 0 or not 0 < args.holdout < 1
                      or args.tune_time_limit <= 0):
        return "--tune_steps must be >= 1, --tune_lr and --tune_time_limit > 0, --holdout in (0, 1)"
    if args.variant == "multilingual" and args.tune and not args.language:
        return "--tune for the multilingual variant needs --language"
    return None


class _Progress:
    """A tqdm bar per stage, on stderr, only where stderr is a terminal (and not --quiet)."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar, self.stage = quiet, None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="step" if stage == "tuning" else "file",
                            file=sys.stderr, disable=None, leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _load(args):
    import logging

    from ..checkpoints import resolve_checkpoint
    from ..loading import load_model, resolve_device
    from ..settings import PredictorSettings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = PredictorSettings(variant=args.variant, checkpoint_dir=args.checkpoint_dir,
                                 random_weights=args.random_weights, device=args.device)
    device = resolve_device(settings.device)
    return load_model(resolve_checkpoint(settings), args.variant, device=device)


def upload(url: str, api_key: str | None, voice_id: str, raw: bytes, overwrite: bool) -> str:
    """POSTs the voice to a predictor's /voices; returns its answer's message. Raises RuntimeError."""
    import httpx

    name = voice_file_name(voice_id)
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        response = httpx.post(url.rstrip("/") + "/voices", params={"overwrite": str(overwrite).lower()},
                              files={"file": (name, raw, "application/octet-stream")}, headers=headers,
                              timeout=60)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"{url} could not be reached: {exc}") from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300]
        raise RuntimeError(f"{url} answered {response.status_code}: {detail}")
    return response.json().get("message", "uploaded")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _usage(args)
    if problem:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return USAGE
    name = voice_file_name(args.output_voice_id)
    target = args.output_dir / name
    sidecar = target.with_suffix(".json")
    if target.exists() and not args.overwrite:
        print(f"{PROG}: {target} exists; give --overwrite to replace it", file=sys.stderr)
        return NO_OUTPUT

    from ..loading import CheckpointError
    from ..variants import get_variant
    from .pipeline import CloneOptions, NoUsableAudio, Source, analyse, build
    from .recordings import list_recordings
    from .tuning import TooFewSegments, TuneOptions

    paths, skipped = list_recordings(args.input_dir)
    for rejection in skipped:
        print(f"{rejection.name}: {rejection.reason}", file=sys.stderr)
    if not paths:
        print(f"{PROG}: no recordings (.wav, .flac, .mp3, .ogg) in {args.input_dir}", file=sys.stderr)
        return NO_AUDIO
    sources = [Source(p.name, p, _transcript(p)) for p in paths]
    tune = TuneOptions(steps=args.tune_steps, learning_rate=args.tune_lr, time_limit_s=args.tune_time_limit,
                       holdout_fraction=args.holdout, seed=args.seed, language=args.language) \
        if args.tune else None
    options = CloneOptions(exaggeration=args.exaggeration, tune=tune)
    progress = _Progress(args.quiet)
    try:  # the recordings first: a directory with nothing usable fails before the model loads
        analysis = analyse(sources, options, progress)
    except NoUsableAudio as exc:
        progress.close()
        for rejection in exc.rejections:
            print(rejection, file=sys.stderr)
        print(f"{PROG}: no usable speech in {args.input_dir}: every recording was rejected", file=sys.stderr)
        return NO_AUDIO
    progress.close()
    if tune is not None and len(analysis.segments) < 2:
        print(f"{PROG}: --tune needs at least two segments (some are held out to measure it); the "
              f"recordings gave {len(analysis.segments)}", file=sys.stderr)
        return NO_AUDIO
    try:
        model = _load(args)
    except (CheckpointError, OSError, RuntimeError) as exc:
        print(f"{PROG}: the model could not be loaded: {exc}", file=sys.stderr)
        return NO_MODEL
    try:
        result = build(model, get_variant(args.variant), analysis, options, progress)
    except TooFewSegments as exc:
        progress.close()
        print(f"{PROG}: {exc}", file=sys.stderr)
        return NO_AUDIO
    progress.close()
    for rejection in result.rejections:
        print(rejection, file=sys.stderr)
    for note in result.report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    report = {"voice_id": target.stem, "file": name, **result.report}
    mode = 0o666 & ~_umask()  # a file the user made, as any of their tools would make it
    try:
        write_atomic(target, result.voice, overwrite=args.overwrite, mode=mode)
        write_atomic(sidecar, (json.dumps(report, indent=2) + "\n").encode(), overwrite=True, mode=mode)
    except FileExistsError:
        print(f"{PROG}: {target} appeared meanwhile; give --overwrite to replace it", file=sys.stderr)
        return NO_OUTPUT
    except OSError as exc:
        print(f"{PROG}: cannot write {target}: {exc}", file=sys.stderr)
        return NO_OUTPUT
    _summary(report, target, sidecar)
    if args.upload:
        try:
            message = upload(args.upload, args.api_key, target.stem, result.voice, args.overwrite)
        except RuntimeError as exc:
            print(f"{PROG}: upload failed: {exc} ({target} is kept)", file=sys.stderr)
            return UPLOAD_FAILED
        print(f"uploaded to {args.upload}: {message}")
    return OK


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _transcript(path: Path) -> str | None:
    text = path.with_suffix(".txt")
    if text.is_file():
        return " ".join(text.read_text(errors="replace").split()) or None
    return None


def _summary(report: dict, target: Path, sidecar: Path) -> None:
    quality = report["quality"]
    used = sum(1 for r in report["recordings"] if r.get("accepted"))
    print(f"wrote {target} ({report['bytes']} bytes, sha256 {report['sha256']})")
    print(f"  {len(report['segments'])} segments, {report['total_duration_s']:.1f} s of speech from {used} "
          f"of {len(report['recordings'])} recordings; reference {report['reference_duration_s']:.1f} s")
    print(f"  speaker similarity: mean {quality['speaker_similarity_mean']:.3f}, "
          f"min {quality['speaker_similarity_min']:.3f}")
    if report["tune"]:
        t = report["tune"]
        print(f"  tuned {t['steps']} steps ({t['stopped_by']}, {t['elapsed_s']:.1f} s): held-out loss "
              f"{t['held_out_loss_before']:.4f} -> {t['held_out_loss_after']:.4f}, training loss "
              f"{t['train_loss_before']:.4f} -> {t['train_loss_last']:.4f}")
    print(f"  sidecar {sidecar}")


if __name__ == "__main__":
    sys.exit(main())
