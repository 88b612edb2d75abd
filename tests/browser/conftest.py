"""The browser tier: Debian's chromium, driven by Playwright (its own browser download cannot work here:
no network but the package registries), against real predictor processes on random checkpoints."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.controlplane import REPO_ROOT

# Where the screenshots go for the test report (the temporary directories of passed tests are removed).
REPORT_DIR = REPO_ROOT / "test-results" / "browser"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium, installed when missing (hack/system-deps.sh, root)."""
    subprocess.run(["bash", str(REPO_ROOT / "hack/system-deps.sh"), "chromium"], check=True, timeout=900)
    path = shutil.which("chromium")
    assert path, "hack/system-deps.sh chromium left no chromium on PATH"
    return path


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    # Chromium's sandbox needs user namespaces that root in this container does not get.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=args)
        yield browser
        browser.close()


class Console:
    """What the page said on its console and the errors it threw, for the tests to hold it to."""

    def __init__(self, page):
        self.messages: list[tuple[str, str]] = []
        page.on("console", lambda m: self.messages.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e))))

    @property
    def errors(self) -> list[str]:
        return [text for kind, text in self.messages if kind in ("error", "pageerror")]


@pytest.fixture
def page(browser):
    """A fresh tab in its own context (its own session storage), with its console recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.console = Console(page)
    page.set_default_timeout(60_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def report_dir():
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    return REPORT_DIR
