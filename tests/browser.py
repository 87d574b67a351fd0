"""Browser-test fixtures: headless Debian chromium driven by Python Playwright.

``browser`` is one chromium per test session (started lazily by the first test
that needs it); ``page_for(user)`` gives a fresh context logged in as ``user``
against pytest-django's ``live_server``; ``screenshot(page, name)`` writes
``screenshots/<name>-<width>.png`` (git-ignored) so a person can look at them.

Chromium comes from the distribution (``/usr/bin/chromium``; bin/setup-env
installs it), never Playwright's own download. Teardown closes every context and
the browser, then kills by PID any chromium, crashpad or driver process this
module started that is still alive, also when a test failed. Chromium runs with
a private HOME (a temporary folder, removed at the end), so its crash handlers,
which detach from the process tree, can still be told apart from other browsers.
Registered as a plugin in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

CHROMIUM = os.environ.get("TUNNELSITE_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags chromium tries to reach the internet and stalls.
# (Playwright adds --headless itself and gives each launch a fresh user-data-dir.)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
# A page looks and behaves the same whatever database serves it, and every view a browser test drives
# is also tested without a browser on both databases: CI's PostgreSQL pass skips the browser tests
# (they cost a minute and a half there and repeated the SQLite pass's checks).
sqlite_pass_only = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="browser test: checked in the SQLite pass"
)
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000


def _missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)"
    return None


def _descendants() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def _marked(home: str) -> set[int]:
    """Processes naming our private HOME: chromium's crashpad handlers detach to PID 1 at once, so only
    their ``--database=<HOME>/...`` argument says they are ours."""
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        if home in " ".join(proc.info["cmdline"] or ()):
            found.add(proc.pid)
    return found


def _kill(pids: set[int]) -> None:
    """SIGKILL what is left of ``pids`` (chromium and the Playwright driver), and reap it."""
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.kill()
            alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless chromium for the session; skipped (failing under CI) when chromium or playwright is missing."""
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the tests still use the ORM
    # synchronously in between browser calls, which Django would otherwise refuse.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    before = _descendants()
    home = tempfile.mkdtemp(prefix="tunnelsite-chromium-")
    env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": f"{home}/config", "XDG_CACHE_HOME": f"{home}/cache"}
    driver = sync_playwright().start()
    try:
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=env)
        try:
            yield launched
        finally:
            started = _descendants() - before
            launched.close()
            _kill((started & _descendants()) | _marked(home))
    finally:
        started = _descendants() - before
        driver.stop()
        _kill((started & _descendants()) | _marked(home))
        shutil.rmtree(home, ignore_errors=True)
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def log_in(page, base_url: str, username: str, password: str) -> None:
    """Through the login form, as a person would."""
    page.goto(f"{base_url}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("h1:text('Tunnels')")


@pytest.fixture
def page_for(browser, live_server) -> Iterator[Callable[..., object]]:
    """``page_for(user, password, viewport=DESKTOP)``: a new context and page, logged in through the form.
    Every context is closed at teardown."""
    contexts = []

    def make(user, password: str, viewport: dict[str, int] | None = None):
        context = browser.new_context(viewport=viewport or DESKTOP, base_url=live_server.url)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        log_in(page, live_server.url, user.get_username(), password)
        return page

    yield make
    for context in contexts:
        context.close()


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Write ``screenshots/<name>-<viewport width>.png`` (the folder is git-ignored)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    width = page.viewport_size["width"] if page.viewport_size else 0
    path = SCREENSHOTS / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def publish(path: Path, target: Path) -> None:
    """Copy a screenshot into the repository (``TUNNELSITE_UPDATE_DOCS_IMAGES=1``, e.g. the README's)."""
    if os.environ.get("TUNNELSITE_UPDATE_DOCS_IMAGES"):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
