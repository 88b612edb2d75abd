"""chatterbox_common.keys: the one reader of the API key file, used by the predictor and the operator."""

from __future__ import annotations

import pytest
from chatterbox_common import read_key_file


def test_keys_are_read_one_a_line_without_comments_blank_lines_or_surrounding_space(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# rotated on Monday\n\n  new-key \nold-key\r\n   # an indented comment\n")
    assert read_key_file(path) == ["new-key", "old-key"]


def test_a_file_of_comments_holds_no_key_and_a_missing_file_is_an_error(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# none yet\n")
    assert read_key_file(path) == []
    with pytest.raises(FileNotFoundError):
        read_key_file(tmp_path / "absent")
