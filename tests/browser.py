"""Headless Chromium (Debian's chromium) for the tests: load a page, dump its DOM after its scripts ran, or
take a screenshot. Every call is a fresh browser with its own profile directory (about 1-2 s each)."""
import os
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium():
    if CHROMIUM is None:
        pytest.skip("chromium not installed: `make deps` installs it")


def _run(url, tmp_path, *flags, timeout=120):
    need_chromium()
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-extensions", f"--user-data-dir={profile}", *flags, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, HOME=str(tmp_path)))
    assert proc.returncode == 0, f"chromium exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def dump_dom(url, tmp_path, budget_ms=3000, extra=()):
    """The DOM after the page's scripts ran (virtual time: timers and fetches within budget_ms)."""
    return _run(url, tmp_path, f"--virtual-time-budget={budget_ms}", "--dump-dom", *extra).stdout


def screenshot(url, png, tmp_path, size=(1200, 600), budget_ms=3000, extra=()):
    _run(url, tmp_path, f"--virtual-time-budget={budget_ms}", f"--window-size={size[0]},{size[1]}",
         f"--screenshot={png}", *extra)
    assert os.path.getsize(png) > 1000, "empty screenshot"
    return png
