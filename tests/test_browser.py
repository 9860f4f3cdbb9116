"""The course in a real browser: JupyterLab on 127.0.0.1 driven by headless Chromium.

Lecture 1 runs and its GeM slider redraws the plot; in exercise 1 a wrong ``gem`` typed into the
answer cell gets its named mistake from the check cell, and a correct one passes. Both notebooks
are temporary copies. Needs Debian's ``chromium`` and the Python ``playwright`` package (pinned in
constraints.txt; its own browser download, ``playwright install``, is never used):
``python3 course.py test`` installs ``chromium`` when run as root on a machine with apt-get.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="install the pinned `playwright` package: "
                                 "`.venv/bin/pip install -c constraints.txt -e .` (course.py does)")
if not Path(CHROMIUM).exists():
    pytest.skip("needs Debian's chromium: `apt-get install -y --no-install-recommends chromium` "
                "(python3 course.py test does it when run as root)", allow_module_level=True)

WRONG_GEM = "def gem(x, p=3.0, eps=1e-6):\n    return x.amax(dim=(-2, -1))\n"  # max pooling whatever p
RIGHT_GEM = "def gem(x, p=3.0, eps=1e-6):\n    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1 / p)\n"
TIMEOUT_MS = 120_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a temporary copy of lecture 1 and exercise 1: (base URL, token)."""
    home = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "lectures" / "01_pooling.ipynb", home / "lecture.ipynb")
    shutil.copy(ROOT / "exercises" / "01_pooling.ipynb", home / "exercise.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / ".config"), "JUPYTER_RUNTIME_DIR": str(home / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / ".settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / ".workspaces")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--ServerApp.root_dir={home}",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True"],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start")
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


def _open(browser, lab, name: str):
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")  # reset: only this notebook, no restored tabs
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'")
    return page


def _run(page, index: int) -> None:
    """Run cell ``index`` of the open notebook, as Shift+Enter on it would."""
    page.evaluate("""(i) => { const nb = window.jupyterapp.shell.currentWidget.content;
                             nb.activeCellIndex = i; return window.jupyterapp.commands.execute('notebook:run-cell'); }""",
                  index)


def _cell(page, index: int):
    """Cell ``index`` of the open notebook (scrolled into view: JupyterLab renders cells lazily)."""
    page.evaluate("""async (i) => { const nb = window.jupyterapp.shell.currentWidget.content;
                                   await nb.scrollToItem(i); document.querySelectorAll('[data-rk-cell]')
                                   .forEach(n => n.removeAttribute('data-rk-cell'));
                                   nb.widgets[i].node.setAttribute('data-rk-cell', String(i)); }""", index)
    return page.locator(f"[data-rk-cell='{index}']")


def test_lecture_1_runs_and_the_gem_slider_redraws_the_plot(browser, lab):
    start = time.monotonic()
    page = _open(browser, lab, "lecture.ipynb")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    plot = page.locator(".widget-interact .jp-OutputArea-output img").first
    plot.wait_for()
    before = plot.get_attribute("src")
    handle = page.locator(".widget-interact .noUi-handle").first
    handle.focus()
    for _ in range(6):
        handle.press("ArrowRight")
    page.wait_for_function("""(before) => { const img = document.querySelector('.widget-interact .jp-OutputArea-output img');
                                          return img && img.getAttribute('src') !== before; }""", arg=before)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert "Error" not in " ".join(errors.all_inner_texts())
    print(f"\nlecture 1 in the browser: {time.monotonic() - start:.1f} s")
    page.close()


def test_an_exercise_check_names_the_mistake_of_a_wrong_gem_and_passes_a_right_one(browser, lab):
    start = time.monotonic()
    cells = nbformat.read(ROOT / "exercises" / "01_pooling.ipynb", as_version=4).cells
    gids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in cells]
    answer, check = gids.index("gem"), gids.index("check_gem")
    imports = [i for i, c in enumerate(cells[:answer]) if c.cell_type == "code" and not gids[i]]
    page = _open(browser, lab, "exercise.ipynb")
    for i in imports:
        _run(page, i)
    for code, expected in [(WRONG_GEM, "yours equals max pooling"), (RIGHT_GEM, "✓ gem: all 4 checks passed")]:
        editor = _cell(page, answer).locator(".cm-content")
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.insert_text(code)  # typed as a paste: no auto-indentation
        assert editor.inner_text().strip() == code.strip()
        _run(page, answer)
        _run(page, check)
        page.wait_for_function("""([i, text]) => window.jupyterapp.shell.currentWidget.content.widgets[i]
                                                  .outputArea.node.innerText.includes(text)""", arg=[check, expected])
        text = _cell(page, check).locator(".jp-OutputArea").inner_text()
        assert ("CheckFailed" in text) == (code is WRONG_GEM), text
    print(f"\nexercise 1 in the browser: {time.monotonic() - start:.1f} s")
    page.close()
