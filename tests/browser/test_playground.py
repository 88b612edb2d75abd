"""The playground page in a real browser (Debian's chromium, Playwright) against live predictor processes
on random checkpoints: what a person does with it, by label and keyboard where a person would.

The page's Content-Security-Policy forbids eval, so waits are Playwright's `expect` and Python-side polls
rather than `wait_for_function` (which evaluates its predicate as a string).
"""

from __future__ import annotations

import io
import re
import time
import wave

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect

from tests.support.processes import ServerProcess

pytestmark = pytest.mark.browser

KEY = "playground-key"
TEXT = "Hello from the playground. It speaks while it thinks."


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("voices")


def serve(args: list[str], tmp_path_factory):
    """A predictor process with `args`, ready; stopped when the fixture that yields from it ends."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    proc = ServerProcess(["--model_name", "chatterbox", *args], log)
    try:
        proc.wait_ready("/v2/health/ready")
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def server(random_checkpoint, voices_dir, tmp_path_factory):
    # Random weights never stop by themselves: 40 tokens (1.6 s) a sentence group keeps each speech short.
    yield from serve(["--checkpoint_dir", str(random_checkpoint("turbo")), "--voices_dir", str(voices_dir),
                      "--api_keys", KEY, "--token_cap", "40"], tmp_path_factory)


def open_page(page, server, key: str | None = KEY):
    """The page as a person reaches it (the server's root), past the key form when `key` is given."""
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Chatterbox playground")).to_be_visible()
    if key is not None:
        page.get_by_label("This server wants an API key").fill(key)
        page.get_by_role("button", name="Use this key").click()
        expect(page.locator("#key-section")).to_be_hidden()
        expect(page.locator("#voices-status")).not_to_be_empty()


def wait_for(predicate, timeout: float = 120, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def samples(page, element: str) -> int:
    return int(page.get_attribute(element, "data-samples"))


def pcm(wav_bytes: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_the_page_loads_from_the_root_without_a_console_error_and_asks_for_the_key(page, server):
    page.goto(server.url + "/")
    assert page.url == server.url + "/playground"  # a browser asking / for HTML is sent to the page
    key_box = page.get_by_label("This server wants an API key")
    expect(key_box).to_be_visible()
    expect(key_box).to_be_focused()
    expect(page.locator("#server-info")).to_contain_text("turbo")
    expect(page.get_by_role("button", name="Speak")).to_be_disabled()  # nothing works without the key
    page.wait_for_load_state("networkidle")
    assert page.console.errors == []
    # Programs asking / still get KServe's liveness answer, and the page's files need no key.
    assert httpx.get(server.url + "/").json() == {"status": "alive"}
    headers = httpx.get(server.url + "/playground").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert httpx.get(server.url + "/playground/no-such-file.js").status_code == 404


def test_a_wrong_key_is_refused_and_the_right_one_is_kept_for_the_session_only(page, server):
    page.goto(server.url + "/playground")
    page.get_by_label("This server wants an API key").fill("not-the-key")
    page.keyboard.press("Enter")
    expect(page.locator("#key-error")).to_have_text("The server refused this key. Check it and try again.")
    assert page.evaluate("sessionStorage.length") == 0  # a refused key is not kept
    page.get_by_label("This server wants an API key").fill(KEY)
    page.keyboard.press("Enter")
    expect(page.locator("#key-section")).to_be_hidden()
    expect(page.get_by_label("Text")).to_be_focused()
    assert page.evaluate("sessionStorage.getItem('chatterbox.apiKey')") == KEY
    assert KEY not in page.url
    page.reload()  # same tab: the key is still there, no form
    expect(page.locator("#voices-status")).to_contain_text("built-in")
    expect(page.locator("#key-section")).to_be_hidden()
    # The only console error is the browser's own line about the refused key's 401.
    assert [e for e in page.console.errors if "401" not in e] == []
    page.get_by_role("button", name="Forget the API key").click()
    expect(page.get_by_label("This server wants an API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_voice_file_is_uploaded_listed_and_deleted_after_a_confirmation(page, server, voice_bytes,
                                                                           voices_dir):
    open_page(page, server)
    page.get_by_text("Upload a voice file (.pth)").click()
    page.get_by_label("Voice file").set_input_files(
        files=[{"name": "alpha.pth", "mimeType": "application/octet-stream", "buffer": voice_bytes}])
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#voices-status")).to_have_text("Voice alpha uploaded; it is selected for speech.")
    expect(page.get_by_role("list", name="Voices on the server")).to_contain_text("alpha")
    expect(page.get_by_label("Voice", exact=True)).to_have_value("alpha")
    assert (voices_dir / "alpha.pth").read_bytes() == voice_bytes

    # A second upload of the same id is the server's 409, said in the page; nothing changes.
    page.get_by_label("Voice file").set_input_files(
        files=[{"name": "alpha.pth", "mimeType": "application/octet-stream", "buffer": voice_bytes}])
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#voices-error")).to_contain_text("Not uploaded")

    delete = page.get_by_role("button", name="Delete voice alpha")
    delete.click()
    dialog = page.get_by_role("dialog", name="Delete voice alpha?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(delete).to_be_focused()  # focus goes back where it was
    assert (voices_dir / "alpha.pth").exists()
    page.keyboard.press("Enter")  # the focused Delete button, by keyboard this time
    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator("#voices-status")).to_contain_text("No voice files")
    assert not (voices_dir / "alpha.pth").exists()
    expect(page.get_by_label("Voice", exact=True)).to_have_value("")


def test_speaking_plays_every_sample_through_the_worklet_shows_the_time_to_first_audio_and_downloads(
        page, server, report_dir):
    open_page(page, server)
    page.get_by_label("Seed").fill("7")
    text = page.get_by_label("Text")
    text.fill(TEXT)
    text.press("Control+Enter")  # by keyboard, as a person in the text box would
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    wait_for(lambda: samples(page, "#played") > 0, what="the worklet to play a sample")
    expect(page.locator("#ttfa")).to_have_text(re.compile(r"^\d+ ms$"))
    ttfa_ms = int(page.get_attribute("#ttfa", "data-ms"))
    assert 0 < ttfa_ms < 120_000
    expect(page.get_by_role("link", name="Download WAV")).to_be_visible(timeout=120_000)
    received = samples(page, "#received")
    # The worklet plays back to back: once drained, it has played exactly what arrived, not a sample
    # more (no silence inserted at the joins) or less.
    expect(page.locator("#status")).to_contain_text("Done", timeout=60_000)
    assert samples(page, "#played") == received > 0
    page.screenshot(path=report_dir / "playground.png", full_page=True)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download WAV").click()
    rate, played = pcm(download.value.path().read_bytes())
    assert rate == 24000 and len(played) == received
    # The page's stream is the server's speech: the same request over REST gives the same samples.
    rest = httpx.post(server.url + "/tts/generate", headers={"X-API-Key": KEY}, timeout=120,
                      json={"text": TEXT, "seed": 7, "format": "wav"})
    data = rest.content
    _, expected = pcm(data[:4] + (len(data) - 8).to_bytes(4, "little") + data[8:40]
                      + (len(data) - 44).to_bytes(4, "little") + data[44:])
    np.testing.assert_array_equal(played, expected)
    assert page.console.errors == []


def test_stop_ends_the_speech_and_the_next_one_plays(page, server):
    open_page(page, server)
    page.get_by_label("Text").fill(" ".join(["This sentence is one of many."] * 12))
    page.get_by_role("button", name="Speak").click()
    wait_for(lambda: samples(page, "#received") > 0, what="the first audio")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#status")).to_contain_text("Stopped after")
    expect(page.get_by_role("link", name="Download WAV")).to_be_visible()  # what came is kept
    expect(page.get_by_role("button", name="Speak")).to_be_enabled()
    page.get_by_label("Text").fill("And this one plays.")
    page.get_by_role("button", name="Speak").click()
    expect(page.locator("#status")).to_contain_text("Done", timeout=120_000)
    assert samples(page, "#played") == samples(page, "#received") > 0
    assert page.console.errors == []


def test_a_voice_is_cloned_from_recordings_in_the_page_with_the_rejected_ones_named(page, server,
                                                                                  recordings, voices_dir):
    open_page(page, server)
    page.get_by_text("Clone a voice from recordings").click()
    page.get_by_label("Recordings of one speaker").set_input_files(
        [*recordings.speakers[:3], recordings.silent])
    page.get_by_label("Voice id", exact=True).fill("cloned")
    page.get_by_role("button", name="Clone").click()
    expect(page.locator("#voices-status")).to_contain_text("Voice cloned and stored", timeout=300_000)
    expect(page.locator("#clone-report")).to_contain_text("Left out: silent.wav")
    expect(page.get_by_role("list", name="Voices on the server")).to_contain_text("cloned")
    expect(page.get_by_label("Voice", exact=True)).to_have_value("cloned")
    assert (voices_dir / "cloned.pth").is_file()
    assert page.console.errors == []


def test_on_a_phone_the_page_fits_its_width_and_every_control_has_a_label(page, server, report_dir):
    page.set_viewport_size({"width": 390, "height": 844})
    open_page(page, server)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
        .map((el) => el.id || el.outerHTML)""")
    assert unlabelled == []
    page.screenshot(path=report_dir / "playground-phone.png", full_page=True)


@pytest.fixture(scope="module")
def open_multilingual(random_checkpoint, tmp_path_factory):
    yield from serve(["--variant", "multilingual", "--checkpoint_dir", str(random_checkpoint("multilingual")),
                      "--voices_dir", str(tmp_path_factory.mktemp("voices")), "--token_cap", "30"],
                     tmp_path_factory)


def test_without_keys_the_page_works_at_once_with_the_variants_options_and_the_schemas_ranges(
        page, open_multilingual):
    open_page(page, open_multilingual, key=None)
    expect(page.locator("#key-section")).to_be_hidden()
    expect(page.locator("#server-info")).to_contain_text("no key")
    language = page.get_by_label("Language")
    assert language.locator("option").count() == 23
    language.select_option("fr")
    schema = httpx.get(open_multilingual.url + "/openapi.json").json()
    properties = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    for name, label in [("temperature", "Temperature"), ("exaggeration", "Exaggeration"),
                        ("cfg_weight", "CFG weight"), ("speed", "Speed")]:
        bounds = next(p for p in properties[name].get("anyOf", [properties[name]]) if "maximum" in p)
        slider = page.get_by_label(label)
        assert float(slider.get_attribute("min")) == bounds["minimum"]
        assert float(slider.get_attribute("max")) == bounds["maximum"]
    assert page.get_by_label("Exaggeration").input_value() == "0.5"  # the variant's default
    speed = page.get_by_label("Speed")
    speed.focus()
    for _ in range(10):  # by keyboard: ten steps of 0.05
        speed.press("ArrowRight")
    expect(speed).to_have_value("1.5")
    page.get_by_label("Text").fill("Bonjour tout le monde.")
    # A fixed seed: under an unseeded one, make test once got a "Done" with no audio at all (random
    # weights may end the speech at once; not investigated further, see the issue 15 note of stop 22).
    page.get_by_label("Seed").fill("7")
    page.get_by_role("button", name="Speak").click()
    expect(page.locator("#status")).to_contain_text("Done", timeout=180_000)
    assert samples(page, "#played") == samples(page, "#received") > 0
    assert page.console.errors == []
