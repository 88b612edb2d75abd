"""Voice files are untrusted: weights-only loading, structure checks, safe names, a bounded cache."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import chatterbox_voicefile as voicefile
import pytest
import torch

from chatterbox_predictor.errors import InvalidVoice, VoiceNotFound, VoiceStoreError
from chatterbox_predictor.variants import ENGLISH, TURBO
from chatterbox_predictor.voice_directory import ScanResult, VoiceDirectory
from chatterbox_predictor.voices import (
    VoiceCache,
    VoiceLibrary,
    conditionals_nbytes,
    load_voice_bytes,
    voice_file_name,
)


@pytest.fixture(scope="module")
def turbo_voice_bytes(random_checkpoint) -> bytes:
    return (random_checkpoint("turbo") / "conds.pt").read_bytes()


def _saved(data) -> bytes:
    buf = io.BytesIO()
    torch.save(data, buf)
    return buf.getvalue()


def _data(raw: bytes) -> dict:
    return torch.load(io.BytesIO(raw), weights_only=True)


class _Payload:
    """Unpickling this runs os.system: exactly what a hostile voice file would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_generated_voice_loads_as_the_library_conditionals(turbo_voice_bytes):
    conds = load_voice_bytes(turbo_voice_bytes, TURBO)
    assert type(conds).__name__ == "Conditionals"
    assert conds.t3.speaker_emb.shape == (1, 256)
    assert conditionals_nbytes(conds) > 100_000


def test_a_pickle_with_a_payload_is_refused_and_the_payload_never_runs(tmp_path, turbo_voice_bytes):
    marker = tmp_path / "pwned"
    data = _data(turbo_voice_bytes)
    data["t3"]["speaker_emb"] = _Payload(marker)
    with pytest.raises(InvalidVoice, match="objects other than tensors"):
        load_voice_bytes(_saved(data), TURBO)
    plain_pickle = pickle.dumps(_Payload(marker))
    with pytest.raises(InvalidVoice):
        load_voice_bytes(plain_pickle, TURBO)
    assert not marker.exists()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("gen"), "exactly the keys 't3' and 'gen'"),
    (lambda d: d["t3"].update(extra=torch.zeros(1)), "unknown keys in t3"),
    (lambda d: d["t3"].update(speaker_emb=torch.zeros(1, 128)), r"speaker_emb must have shape \(1, 256\)"),
    (lambda d: d["t3"].update(speaker_emb=torch.full((1, 256), float("nan"))), "NaN"),
    (lambda d: d["gen"].update(prompt_token=d["gen"]["prompt_token"].float()), "must be integer"),
    (lambda d: d["gen"].update(prompt_feat=d["gen"]["prompt_feat"][:, :10]), "prompt_feat must have shape"),
    (lambda d: d["gen"].update(prompt_token=d["gen"]["prompt_token"] + 7000), r"must lie in \[0, 6561\)"),
    (lambda d: d["gen"].update(embedding="not a tensor"), "must be a tensor, found str"),
])
def test_a_voice_of_the_wrong_structure_is_refused_naming_the_problem(turbo_voice_bytes, mutate, message):
    data = _data(turbo_voice_bytes)
    mutate(data)
    with pytest.raises(InvalidVoice, match=message):
        load_voice_bytes(_saved(data), TURBO)


def test_english_needs_an_exaggeration_level_that_turbo_does_not(turbo_voice_bytes):
    data = _data(turbo_voice_bytes)
    data["t3"]["cond_prompt_speech_tokens"] = data["t3"]["cond_prompt_speech_tokens"][:, :150]
    data["t3"].pop("emotion_adv")
    load_voice_bytes(_saved(data), TURBO)
    with pytest.raises(InvalidVoice, match="emotion_adv"):
        load_voice_bytes(_saved(data), ENGLISH)


@pytest.mark.parametrize("raw", [b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"\x80\x04K\x01."])
def test_files_that_are_not_voices_are_refused(raw):
    with pytest.raises(InvalidVoice, match="not a voice file|exactly the keys"):
        load_voice_bytes(raw, TURBO)


def test_a_truncated_voice_file_is_refused(turbo_voice_bytes):
    with pytest.raises(InvalidVoice, match="not a voice file"):
        load_voice_bytes(turbo_voice_bytes[: len(turbo_voice_bytes) // 2], TURBO)
    assert zipfile.is_zipfile(io.BytesIO(turbo_voice_bytes))


@pytest.mark.parametrize("voice_id", ["../etc/passwd", "a/b", "/abs", ".hidden", "", "a..b", "x" * 101,
                                      "name\x00", "spaced name", "..", "ü"])
def test_voice_ids_that_are_not_plain_names_are_refused(voice_id):
    with pytest.raises(InvalidVoice, match="invalid voice id"):
        voice_file_name(voice_id)


def test_a_voice_id_maps_to_its_file_with_or_without_the_suffix():
    assert voice_file_name("alpha") == voice_file_name("alpha.pth") == "alpha.pth"
    assert voice_file_name("v1.2_b-c") == "v1.2_b-c.pth"


def test_the_library_serves_files_through_its_cache(tmp_path, turbo_voice_bytes):
    (tmp_path / "alpha.pth").write_bytes(turbo_voice_bytes)
    cache = VoiceCache(max_bytes=10**9)
    library = VoiceLibrary(tmp_path, TURBO, "cpu", cache)
    first = library.get("alpha")
    assert library.get("alpha.pth") is first and (cache.hits, cache.misses) == (1, 1)
    with pytest.raises(VoiceNotFound, match="Voice 'beta' not found."):
        library.get("beta")


def test_a_voice_replaced_on_disk_is_loaded_anew(tmp_path, turbo_voice_bytes):
    path = tmp_path / "alpha.pth"
    path.write_bytes(turbo_voice_bytes)
    library = VoiceLibrary(tmp_path, TURBO, "cpu", VoiceCache(10**9))
    first = library.get("alpha")
    data = _data(turbo_voice_bytes)
    data["t3"]["speaker_emb"] = torch.ones(1, 256)
    path.write_bytes(_saved(data))
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    second = library.get("alpha")
    assert second is not first and torch.equal(second.t3.speaker_emb, torch.ones(1, 256))


def test_the_cache_evicts_least_recently_used_voices_beyond_its_byte_budget(tmp_path, turbo_voice_bytes):
    one = conditionals_nbytes(load_voice_bytes(turbo_voice_bytes, TURBO))
    for name in "abc":
        (tmp_path / f"{name}.pth").write_bytes(turbo_voice_bytes)
    cache = VoiceCache(max_bytes=2 * one)
    library = VoiceLibrary(tmp_path, TURBO, "cpu", cache)
    library.get("a")
    library.get("b")
    library.get("a")  # a is now the most recently used
    library.get("c")  # over budget: b goes
    assert len(cache) == 2 and cache.nbytes <= 2 * one
    misses = cache.misses
    library.get("a")
    assert cache.misses == misses  # still cached
    library.get("b")
    assert cache.misses == misses + 1  # was evicted


# -- the shared, torch-free reader (chatterbox_voicefile), which the voice operator uses as well --------

def _as_torch(value):
    if isinstance(value, voicefile.TensorData):
        dtype = getattr(torch, value.dtype)
        return torch.tensor(value.values, dtype=dtype).reshape(value.shape)
    if isinstance(value, dict):
        return {k: _as_torch(v) for k, v in value.items()}
    return value


def _same(ours, theirs) -> None:
    if isinstance(theirs, torch.Tensor):
        assert torch.equal(_as_torch(ours), theirs), "the readers disagree on a tensor"
    elif isinstance(theirs, dict):
        assert set(ours) == set(theirs)
        for key in theirs:
            _same(ours[key], theirs[key])
    else:
        assert ours == theirs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_the_torch_free_reader_reads_exactly_what_torch_load_reads(turbo_voice_bytes, dtype):
    data = _data(turbo_voice_bytes)
    data["t3"]["speaker_emb"] = data["t3"]["speaker_emb"].to(dtype)
    # A transposed view and a slice: tensors that do not start at their storage's first element.
    data["gen"]["embedding"] = torch.randn(192, 1).t()
    data["gen"]["prompt_feat"] = torch.randn(1, 2 * data["gen"]["prompt_token"].shape[1] + 3, 80)[:, 3:]
    raw = _saved(data)
    _same(voicefile.read_pth(raw), _data(raw))
    voicefile.read_voice(raw, "turbo")


def test_the_torch_free_reader_never_runs_a_payload_nor_lets_a_pickle_set_attributes(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(voicefile.InvalidVoiceFile, match="objects other than tensors"):
        voicefile.read_pth(_saved({"t3": _Payload(marker)}))
    # A hand-written pickle: a storage stand-in, then BUILD, which would write into its __dict__.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02ctorch\nFloatStorage\n}X\x01\x00\x00\x00xK\x01sb.")
    with pytest.raises(voicefile.InvalidVoiceFile, match="sets attributes"):
        voicefile.read_pth(buf.getvalue())
    assert not marker.exists()


def test_the_torch_free_reader_refuses_a_tensor_that_repeats_one_element_billions_of_times():
    bomb = torch.zeros(1).expand(1, 10**9)  # torch.save keeps the stride 0: 4 bytes on disk
    raw = _saved({"t3": {"speaker_emb": bomb}})
    with pytest.raises(voicefile.VoiceFileTooLarge, match="larger than any voice"):
        voicefile.read_pth(raw)


def test_the_torch_free_reader_refuses_a_member_that_inflates_beyond_the_limit():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x00" * (voicefile.MAX_VOICE_BYTES + 1))
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(voicefile.VoiceFileTooLarge, match="unpacked"):
        voicefile.read_pth(buf.getvalue())


def test_a_directory_scan_reports_what_others_added_replaced_and_removed(tmp_path, turbo_voice_bytes):
    cache = VoiceCache(10**9)
    library = VoiceLibrary(tmp_path, TURBO, "cpu", cache)
    directory = VoiceDirectory(library)  # no watcher: every scan here is this test's
    (tmp_path / "a.pth").write_bytes(turbo_voice_bytes)
    (tmp_path / ".a.pth.123.tmp").write_bytes(b"half")  # a write in progress is nobody's voice yet
    assert directory.scan() == ScanResult(["a"], ["a"], [], [])
    library.get("a")
    (tmp_path / "a.pth").write_bytes(turbo_voice_bytes + b"")
    os.utime(tmp_path / "a.pth", ns=(1, 1))
    (tmp_path / "b.pth").write_bytes(turbo_voice_bytes)
    assert directory.scan() == ScanResult(["a", "b"], ["b"], [], ["a"])
    assert len(cache) == 0  # the replaced voice left the cache at once
    (tmp_path / "a.pth").unlink()
    assert directory.scan() == ScanResult(["b"], [], ["a"], [])
    # The server's own writes are not news to the next scan: only what others changed is reported.
    directory.save("c", turbo_voice_bytes)
    directory.delete("b")
    assert directory.scan() == ScanResult(["c"], [], [], [])


def test_a_write_the_voice_directory_refuses_answers_a_store_error_naming_the_directory(tmp_path,
                                                                                       turbo_voice_bytes):
    """A directory squatting on the voice's file name stands for any write the volume refuses (tests
    run as root, whom permissions do not stop); the container tier shows the real case, a volume that
    uid 1000 may not write."""
    directory = VoiceDirectory(VoiceLibrary(tmp_path, TURBO, "cpu", VoiceCache(10**9)))
    assert directory.writable_problem() is None
    (tmp_path / "alpha.pth").mkdir()
    with pytest.raises(VoiceStoreError, match=f"voice directory {tmp_path} refused the change") as info:
        directory.save("alpha", turbo_voice_bytes, overwrite=True)
    assert info.value.status == 500
    assert [p.name for p in tmp_path.iterdir()] == ["alpha.pth"]  # no temporary file left behind


def test_a_missing_voice_directory_is_reported_before_the_first_upload(tmp_path):
    directory = VoiceDirectory(VoiceLibrary(tmp_path / "absent", TURBO, "cpu", VoiceCache(10**9)))
    assert "does not exist" in directory.writable_problem()
