"""chatterbox_voicefile.claims: the claim format that the operator writes and the predictor reads."""

from __future__ import annotations

import json

import chatterbox_voicefile
import pytest
from chatterbox_voicefile import InvalidVoiceId
from chatterbox_voicefile.claims import CLAIMS_DIR, Owner, claim_path, read_claim, remove_claim, write_claim

OWNER = Owner("voices", "narrator", "uid-1")


def test_a_written_claim_reads_back_as_its_owner_and_names_the_voice_resource(tmp_path):
    write_claim(tmp_path, "narrator", OWNER, overwrite=False)
    assert chatterbox_voicefile.read_claim(tmp_path, "narrator") == OWNER
    assert str(OWNER) == "voices/narrator"
    path = claim_path(tmp_path, "narrator")
    assert path == tmp_path / CLAIMS_DIR / "narrator.json"
    assert json.loads(path.read_text()) == {"namespace": "voices", "name": "narrator", "uid": "uid-1"}


def test_an_id_with_or_without_its_suffix_names_one_claim_and_look_alikes_name_two(tmp_path):
    assert claim_path(tmp_path, "a") == claim_path(tmp_path, "a.pth")
    assert claim_path(tmp_path, "a.pth.x") != claim_path(tmp_path, "a.json.x")


def test_no_claim_and_an_unreadable_claim_both_read_as_no_owner(tmp_path):
    assert read_claim(tmp_path, "narrator") is None
    path = claim_path(tmp_path, "narrator")
    path.parent.mkdir()
    for torn in ('{"namespace": "voices"', '{"namespace": "voices"}', "[]"):
        path.write_text(torn)
        assert read_claim(tmp_path, "narrator") is None


def test_a_create_only_write_does_not_replace_a_claim_but_an_overwrite_does(tmp_path):
    other = Owner("voices", "other", "uid-2")
    write_claim(tmp_path, "narrator", OWNER, overwrite=False)
    with pytest.raises(FileExistsError):
        write_claim(tmp_path, "narrator", other, overwrite=False)
    assert read_claim(tmp_path, "narrator") == OWNER
    write_claim(tmp_path, "narrator", other, overwrite=True)
    assert read_claim(tmp_path, "narrator") == other
    assert sorted(p.name for p in (tmp_path / CLAIMS_DIR).iterdir()) == ["narrator.json"]  # no temp files


def test_removing_a_claim_frees_the_id_and_removing_none_is_fine(tmp_path):
    write_claim(tmp_path, "narrator", OWNER, overwrite=False)
    remove_claim(tmp_path, "narrator")
    assert read_claim(tmp_path, "narrator") is None
    remove_claim(tmp_path, "narrator")


def test_a_path_like_voice_id_names_no_claim(tmp_path):
    with pytest.raises(InvalidVoiceId):
        claim_path(tmp_path, "../etc/passwd")
