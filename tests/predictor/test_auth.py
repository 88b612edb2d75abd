"""The key rule's own parts: which keys count, and where a WebSocket's key may not end up."""

from __future__ import annotations

from chatterbox_predictor.api.auth import ApiKeys, presented_key


def test_no_key_at_all_leaves_the_api_open():
    keys = ApiKeys("", None)
    assert not keys.enabled and keys.check(None)


def test_a_configured_key_file_that_is_missing_or_empty_refuses_everything_until_it_holds_a_key(tmp_path):
    path = tmp_path / "keys"
    keys = ApiKeys("", path)  # the Secret is not mounted yet
    assert keys.enabled and not keys.check(None) and not keys.check("anything")
    path.write_text("# rotated soon\n\n")
    assert not keys.check(None) and not keys.check("")
    path.write_text("k1\n  k2  \n")
    assert keys.check("k2") and not keys.check("k3") and not keys.check(None)


def test_static_keys_and_file_keys_both_count(tmp_path):
    path = tmp_path / "keys"
    path.write_text("from-file\n")
    keys = ApiKeys("a, b", path)
    assert all(keys.check(k) for k in ("a", "b", "from-file")) and not keys.check("c")


def test_a_websocket_key_in_the_query_is_read_and_taken_out_of_what_gets_logged():
    scope = {"type": "websocket", "headers": [], "query_string": b"lang=fr&api_key=s3cret&x="}
    assert presented_key(scope) == "s3cret"
    assert scope["query_string"] == b"lang=fr&x="
    http = {"type": "http", "headers": [], "query_string": b"api_key=s3cret"}
    assert presented_key(http) is None  # plain HTTP takes headers only: a URL is logged everywhere
    assert presented_key({"type": "http", "headers": [(b"authorization", b"Bearer t0k")]}) == "t0k"
