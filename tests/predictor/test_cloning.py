"""Voice cloning on the small random Turbo checkpoint, from real speech (espeak-ng) and its faults: the
checks, the segmentation, the conditioning from many segments, tuning, and the tool as a user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import chatterbox_voicefile as voicefile
import numpy as np
import pytest
import torch

from chatterbox_predictor.cloning import conditioning
from chatterbox_predictor.cloning.pipeline import CloneOptions, NoUsableAudio, Source, clone
from chatterbox_predictor.cloning.segments import MAX_SEGMENT_S, MIN_SEGMENT_S
from chatterbox_predictor.cloning.tuning import TuneOptions
from chatterbox_predictor.variants import TURBO
from chatterbox_predictor.voices import load_voice_bytes
from tests.support.controlplane import REPO_ROOT
from tests.support.speech import SPEAKERS, encode

TOOL = [sys.executable, str(REPO_ROOT / "scripts" / "clone_voice.py")]


@pytest.fixture(scope="module")
def model(random_checkpoint):
    from chatterbox_predictor.loading import load_model

    return load_model(random_checkpoint("turbo"), "turbo", device="cpu")


def _sources(paths: list[Path]) -> list[Source]:
    return [Source(p.name, p) for p in paths]


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def test_each_faulty_recording_is_rejected_with_one_line_saying_why_and_the_rest_cloned(model, recordings):
    r = recordings
    faulty = [r.clipped, r.silent, r.noisy, r.stereo, r.short, r.not_audio, r.truncated]
    result = clone(model, TURBO, _sources(r.speakers[:2] + faulty), CloneOptions())
    reasons = {x.name: x.reason for x in result.rejections}
    assert set(reasons) == {p.name for p in faulty}
    assert reasons["clipped.wav"].startswith("clipped: ")
    assert reasons["silent.wav"].startswith("silent: ")
    assert reasons["noisy.wav"].startswith("noisy: ") and "dB above the background" in reasons["noisy.wav"]
    assert reasons["stereo.wav"].startswith("has 2 channels that differ")
    assert reasons["short.wav"].startswith("too short: 2.5 s")
    assert reasons["notes.wav"].startswith("cannot be decoded as audio")
    assert reasons["truncated.mp3"].startswith(("cannot be decoded", "too short"))
    assert all("\n" not in reason for reason in reasons.values())
    assert [s["file"] for s in result.report["segments"]] == ["speaker1.wav", "speaker2.wav"]
    load_voice_bytes(result.voice, TURBO)  # a voice the server loads


def test_nothing_usable_is_an_error_that_lists_every_recording(model, recordings):
    with pytest.raises(NoUsableAudio) as caught:
        clone(model, TURBO, _sources([recordings.silent, recordings.clipped]), CloneOptions())
    assert [x.name for x in caught.value.rejections] == ["silent.wav", "clipped.wav"]
    assert "silent.wav: rejected: silent" in str(caught.value)


def test_flac_mp3_and_ogg_are_read_like_wav(model, recordings, tmp_path):
    speaker = recordings.speakers[0]
    encoded = [encode(speaker, tmp_path / f"s.{ext}", fmt) for ext, fmt in
               (("flac", "FLAC"), ("mp3", "MP3"), ("ogg", "OGG"))]
    result = clone(model, TURBO, _sources([speaker, *encoded]), CloneOptions())
    assert result.rejections == []
    segments = result.report["segments"]
    assert [s["file"] for s in segments] == ["speaker1.wav", "s.flac", "s.mp3", "s.ogg"]
    durations = [s["duration_s"] for s in segments]
    assert max(durations) - min(durations) < 0.3  # the same speech found in each
    similarities = [s["similarity"] for s in segments]
    assert min(similarities) > 0.95  # lossy codecs change the sound a little, not the speaker


def test_a_long_recording_is_cut_at_pauses_into_5_to_15_second_segments(model, recordings):
    result = clone(model, TURBO, _sources([recordings.long]), CloneOptions())
    segments = result.report["segments"]
    assert len(segments) >= 3
    assert all(MIN_SEGMENT_S <= s["duration_s"] <= MAX_SEGMENT_S + 0.05 for s in segments)
    assert all(a["end_s"] <= b["start_s"] for a, b in zip(segments, segments[1:], strict=False))  # ordered
    total = sum(s["duration_s"] for s in segments)
    assert result.report["total_duration_s"] == pytest.approx(total, abs=0.05)


def test_the_embedding_of_many_segments_lies_closer_to_each_segment_than_any_single_one(model, recordings):
    from chatterbox_predictor.cloning import segments as seg

    vad = seg.load_vad()
    pieces = []
    for path in [recordings.long, *recordings.speakers[:2]]:
        from chatterbox_predictor.cloning.recordings import read_recording

        pieces += seg.split(read_recording(path.name, path, 600), vad).segments
    embeddings = conditioning.segment_embeddings(model, pieces)
    many = conditioning.speaker_embedding(embeddings)
    closeness_many = float(np.mean(embeddings @ many))
    closeness_single = [float(np.mean(embeddings @ e)) for e in embeddings]  # a voice from segment i alone
    assert closeness_many > max(closeness_single)
    assert closeness_many - np.mean(closeness_single) > 1e-3  # by a margin, not by rounding
    result = clone(model, TURBO, _sources([recordings.long, *recordings.speakers[:2]]), CloneOptions())
    assert result.report["quality"]["speaker_similarity_mean"] == pytest.approx(closeness_many, abs=1e-4)


def test_the_same_recordings_give_the_same_file(model, recordings):
    first = clone(model, TURBO, _sources(recordings.speakers[:3]), CloneOptions(exaggeration=0.7))
    again = clone(model, TURBO, _sources(recordings.speakers[:3]), CloneOptions(exaggeration=0.7))
    assert first.voice == again.voice and first.report["sha256"] == _sha(first.voice)
    data = torch.load(__import__("io").BytesIO(first.voice), weights_only=True)
    assert float(data["t3"]["emotion_adv"]) == pytest.approx(0.7)


def test_tuning_lowers_the_training_loss_and_reports_the_held_out_loss(model, recordings):
    texts = [text for *_, text in SPEAKERS[:3]]
    sources = [Source(p.name, p, t) for p, t in zip(recordings.speakers[:3], texts, strict=True)]
    result = clone(model, TURBO, sources, CloneOptions(tune=TuneOptions(steps=4, eval_every=2,
                                                                         learning_rate=0.01)))
    tune = result.report["tune"]
    assert tune["steps"] == 4 and tune["stopped_by"] == "steps" and tune["with_transcripts"] == 3
    assert tune["train_loss_last"] < tune["train_loss_before"]
    # The embedding kept is the one with the lowest held-out loss of all that were measured.
    assert tune["held_out_loss_after"] == min(h["held_out"] for h in tune["history"])
    assert len(tune["held_out_segments"]) == 1 and len(tune["train_segments"]) == 2
    quality = result.report["quality"]
    assert quality["held_out_loss_before"] == tune["held_out_loss_before"]
    assert quality["held_out_loss_after"] == tune["held_out_loss_after"]
    conds = load_voice_bytes(result.voice, TURBO)
    assert float(conds.t3.speaker_emb.norm()) == pytest.approx(1.0, abs=1e-4)  # on the encoder's sphere


@pytest.mark.parametrize("variant", ["turbo", "english"])
def test_the_tuning_loss_sees_the_logits_the_decoder_samples_from(random_checkpoint, variant):
    """Tuning fits what serving uses: T3's teacher-forced logits over a token sequence equal, position by
    position, the logits our streaming decoder sampled that sequence from (Turbo's GPT-2 layout, and the
    Llama variants' with the start of speech fed twice)."""
    from chatterbox_predictor.cloning.tuning import Example, teacher_forced_logits
    from chatterbox_predictor.loading import load_model
    from chatterbox_predictor.sampling import SamplingParams
    from chatterbox_predictor.t3_stream import T3Stream, with_exaggeration
    from chatterbox_predictor.variants import get_variant

    v = get_variant(variant)
    model = load_model(random_checkpoint(variant), variant, device="cpu")
    params = SamplingParams(max_new_tokens=12, cfg_weight=0.0).resolved(v.sampling_defaults, 1000)
    t3_cond = with_exaggeration(model.conds.t3, 0.5)
    text = v.text_tokens(model, "Hello there, how are you?", None)
    stream = T3Stream(model.t3, v, t3_cond, text, params, torch.Generator().manual_seed(3))
    seen, sample = [], stream.row._sample

    def spy(logits):
        seen.append(logits[0].clone())
        return sample(logits)

    stream.row._sample = spy
    tokens = []
    while (token := stream.next_token()) is not None:
        tokens.append(token)
    example = Example(text.clone(), torch.tensor([tokens], dtype=torch.long))
    with torch.no_grad():
        logits, targets = teacher_forced_logits(
            model, v, t3_cond.speaker_emb, t3_cond.cond_prompt_speech_tokens, t3_cond.emotion_adv, example)
    assert len(seen) >= len(tokens) >= 1 and targets.tolist() == [*tokens, model.t3.hp.stop_speech_token]
    for i, decoded in enumerate(seen):
        torch.testing.assert_close(logits[i], decoded, atol=2e-3, rtol=1e-3)


def test_tuning_one_segment_is_refused_and_a_time_limit_stops_it(model, recordings):
    with pytest.raises(ValueError, match="at least two segments"):
        clone(model, TURBO, _sources(recordings.speakers[:1]), CloneOptions(tune=TuneOptions(steps=2)))
    result = clone(model, TURBO, _sources(recordings.speakers[:2]),
                   CloneOptions(tune=TuneOptions(steps=1000, time_limit_s=0.01)))
    assert result.report["tune"]["stopped_by"] == "time limit" and result.report["tune"]["steps"] < 1000


def test_a_voice_saved_from_a_gpu_loads_on_the_cpu(model, recordings, monkeypatch):
    """A GPU's tensors are pickled with the location 'cuda:0'; the voice readers must not care. (No GPU
    here: the location tag torch writes is set as a GPU would set it.)"""
    result = clone(model, TURBO, _sources(recordings.speakers[:1]), CloneOptions())
    data = torch.load(__import__("io").BytesIO(result.voice), weights_only=True)
    import torch.serialization as serialization

    monkeypatch.setattr(serialization, "location_tag", lambda storage: "cuda:0")
    gpu_bytes = conditioning.voice_bytes(data)
    monkeypatch.undo()
    assert b"cuda:0" in gpu_bytes
    conds = load_voice_bytes(gpu_bytes, TURBO)
    assert conds.t3.speaker_emb.device.type == "cpu"
    assert torch.equal(conds.t3.speaker_emb, data["t3"]["speaker_emb"])


def test_a_turbo_voice_is_refused_by_the_english_variant_saying_why(model, recordings):
    result = clone(model, TURBO, _sources(recordings.speakers[:3]), CloneOptions())
    with pytest.raises(voicefile.InvalidVoiceFile) as caught:
        voicefile.read_voice(result.voice, "english")
    assert "made for turbo" in str(caught.value)


# -- the tool, as a user runs it -----------------------------------------------------------------------
def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_plans_invocation_writes_the_voice_and_its_sidecar(recordings, random_checkpoint, tmp_path):
    r = recordings
    samples = r.directory("samples", [*r.speakers[:3], r.clipped, r.silent])
    out = tmp_path / "work"
    out.mkdir()
    done = _run([*TOOL, "--input_dir", str(samples), "--output_voice_id", "new_voice_name",
                 "--checkpoint-dir", str(random_checkpoint("turbo")), "--device", "cpu"], cwd=out)
    assert done.returncode == 0, done.stderr
    print(done.stdout, done.stderr)  # the tool's output, for the note
    rejected = [line for line in done.stderr.splitlines() if ": rejected: " in line]
    assert rejected == [f"clipped.wav: rejected: {_reason(done, 'clipped')}",
                        f"silent.wav: rejected: {_reason(done, 'silent')}"]
    raw = (out / "new_voice_name.pth").read_bytes()
    assert (out / "new_voice_name.pth").stat().st_mode & 0o777 == 0o666 & ~_umask()  # the user's umask
    sidecar = json.loads((out / "new_voice_name.json").read_text())
    assert sidecar["sha256"] == _sha(raw) and sidecar["bytes"] == len(raw)
    assert sidecar["voice_id"] == "new_voice_name" and sidecar["variant"] == "turbo"
    assert sidecar["tool"] == "chatterbox-clone-voice" and sidecar["tool_version"] == "0.1.0"
    assert sidecar["created"].endswith("+00:00")
    assert [s["file"] for s in sidecar["segments"]] == ["speaker1.wav", "speaker2.wav", "speaker3.wav"]
    assert all(s["duration_s"] > 5 for s in sidecar["segments"])
    assert sidecar["total_duration_s"] == pytest.approx(sum(s["duration_s"] for s in sidecar["segments"]),
                                                        abs=0.05)
    assert {"speaker_similarity_mean", "speaker_similarity_min"} <= set(sidecar["quality"])
    assert [x["file"] for x in sidecar["rejected"]] == ["clipped.wav", "silent.wav"]
    assert "wrote new_voice_name.pth" in done.stdout and "sidecar new_voice_name.json" in done.stdout
    load_voice_bytes(raw, TURBO)
    # The console script of the predictor package does the same, byte for byte.
    again = _run([str(Path(sys.executable).parent / "chatterbox-clone-voice"), "--input-dir", str(samples),
                  "--output-voice-id", "same", "--output-dir", str(tmp_path / "other"),
                  "--checkpoint_dir", str(random_checkpoint("turbo")), "--device", "cpu"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "other" / "same.pth").read_bytes() == raw


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _reason(done: subprocess.CompletedProcess, name: str) -> str:
    line = next(line for line in done.stderr.splitlines() if line.startswith(f"{name}.wav: rejected: "))
    return line.split(": rejected: ", 1)[1]


def test_the_tools_exit_codes_say_what_went_wrong(recordings, random_checkpoint, tmp_path):
    r = recordings
    checkpoint = ["--checkpoint-dir", str(random_checkpoint("turbo")), "--device", "cpu"]
    bad = r.directory("bad", [r.silent, r.clipped])
    done = _run([*TOOL, "--input_dir", str(bad), "--output_voice_id", "v", *checkpoint], cwd=tmp_path)
    assert done.returncode == 3 and "silent.wav: rejected: silent" in done.stderr
    assert not (tmp_path / "v.pth").exists()

    done = _run([*TOOL, "--input_dir", str(tmp_path / "missing"), "--output_voice_id", "v"], cwd=tmp_path)
    assert done.returncode == 2 and "is not a directory" in done.stderr
    done = _run([*TOOL, "--input_dir", str(bad), "--output_voice_id", "../etc/passwd"], cwd=tmp_path)
    assert done.returncode == 2 and "--output_voice_id" in done.stderr

    good = r.directory("good", r.speakers[:2])
    done = _run([*TOOL, "--input_dir", str(good), "--output_voice_id", "v", "--checkpoint-dir",
                 str(tmp_path / "no-such-checkpoint"), "--device", "cpu"], cwd=tmp_path)
    assert done.returncode == 4 and "could not be loaded" in done.stderr

    (tmp_path / "taken.pth").write_bytes(b"mine")
    done = _run([*TOOL, "--input_dir", str(good), "--output_voice_id", "taken", *checkpoint], cwd=tmp_path)
    assert done.returncode == 5 and "--overwrite" in done.stderr
    assert (tmp_path / "taken.pth").read_bytes() == b"mine"

    from tests.support.controlplane import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    done = _run([*TOOL, "--input_dir", str(good), "--output_voice_id", "up", "--upload", closed, *checkpoint],
                cwd=tmp_path)
    assert done.returncode == 6 and "upload failed" in done.stderr
    load_voice_bytes((tmp_path / "up.pth").read_bytes(), TURBO)  # kept


def test_the_tool_tunes_with_transcripts_and_writes_the_losses(recordings, random_checkpoint, tmp_path):
    samples = recordings.directory("tune", recordings.speakers[:3])
    for path, (*_, text) in zip(recordings.speakers[:3], SPEAKERS[:3], strict=True):
        (samples / path.with_suffix(".txt").name).write_text(text)
    done = _run([*TOOL, "--input_dir", str(samples), "--output_voice_id", "tuned", "--tune", "--tune-steps",
                 "3", "--tune-lr", "0.01", "--checkpoint-dir", str(random_checkpoint("turbo")), "--device",
                 "cpu"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    sidecar = json.loads((tmp_path / "tuned.json").read_text())
    assert sidecar["tune"]["with_transcripts"] == 3 and sidecar["tune"]["steps"] == 3
    assert "held-out loss" in done.stdout
    history = sidecar["tune"]["history"]
    assert [h["step"] for h in history] == [0, 3] and history[-1]["train"] < history[0]["train"]
    assert sidecar["quality"]["held_out_loss_after"] == min(h["held_out"] for h in history)
