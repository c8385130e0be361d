"""The HTML rulebook in a real browser: headless Chromium renders it at phone size, dumps its DOM,
measures that nothing but the tables scrolls sideways, and prints it to PDF.

Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them). Without
Chromium these tests are skipped with the install command (and fail under CI: see tests/browser.py).
Copies of the screenshot and the PDF are kept in tests/artifacts/ (git-ignored) for a look.
"""

from __future__ import annotations

import html
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import cdss
from cdss.audit import rulebook
from tests.browser import FLAGS as BROWSER_FLAGS, chromium_path
from tests.conftest import ROOT, source_path

ARTIFACTS = ROOT / "tests" / "artifacts"
TIMEOUT = 60
PHONE = "390,844"
FLAGS = (*BROWSER_FLAGS, "--hide-scrollbars")

# Appended to a COPY of the page only (the rulebook itself has no scripts): after layout, record the
# page's scroll width and any element sticking out of the viewport that is not inside a scrolling table box.
# `--dump-dom` lays pages out at least 500 px wide, so the copy runs in a 390 px wide srcdoc iframe (same
# origin as its parent) and reports to the parent document, which is what Chromium dumps.
MEASURE = """<script>
(function () {
  var vw = window.innerWidth, wide = [];
  document.querySelectorAll('main *').forEach(function (el) {
    if (el.closest('.table-wrap')) return;
    var r = el.getBoundingClientRect();
    var spills = el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX === 'visible';
    if (r.right > vw + 1 || spills) wide.push(el.tagName.toLowerCase() + '.' + el.className + ' ' + Math.round(r.right));
  });
  parent.document.body.setAttribute('data-measure', JSON.stringify(
    {inner: vw, scroll: document.documentElement.scrollWidth, wide: wide.slice(0, 10)}));
})();
</script>"""
FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe style="width:390px;height:844px;border:0" srcdoc="{page}"></iframe></body></html>"""


def _chromium() -> str:
    return chromium_path()


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    command = [_chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Chromium did not finish within {TIMEOUT} s: {' '.join(command)}")
    assert done.returncode == 0, f"Chromium failed ({done.returncode}):\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, source_text: str) -> Path:
    tmp = tmp_path_factory.mktemp("rulebook")
    path = tmp / "rulebook.html"
    path.write_text(rulebook(cdss.load_rules(), source=source_path(), fmt="html"), encoding="utf-8")
    return path


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _keep(path: Path, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / name)


def test_phone_screenshot(page: Path) -> None:
    shot = page.parent / "rulebook.png"
    run_chromium(page.parent, f"--screenshot={shot}", f"--window-size={PHONE}", page.as_uri())
    assert shot.is_file(), "Chromium wrote no screenshot"
    data = shot.read_bytes()
    width, height = _png_size(data)
    assert (width, height) == (390, 844)
    # a blank or unstyled page compresses to a few KB; the rendered rulebook header is far richer
    assert len(data) > 20_000, f"screenshot is only {len(data)} bytes: the page looks empty"
    _keep(shot, "rulebook-phone.png")


def test_dom_has_every_rule_anchor(page: Path) -> None:
    dom = run_chromium(page.parent, "--dump-dom", f"--window-size={PHONE}", page.as_uri()).stdout
    rules = cdss.load_rules()
    assert rules.info.digest in dom
    missing = [r.id for r in rules.rules if f'id="rule-{r.id}"' not in dom]
    assert missing == []
    patient = json.loads((ROOT / "examples" / "patients" / "classic-beginner.json").read_text(encoding="utf-8"))
    for card in rules.evaluate(patient).to_dict()["cards"]:
        assert f'id="rule-{card["rule"]}"' in dom


def test_nothing_but_tables_scrolls_sideways_on_a_phone(page: Path) -> None:
    probe = page.parent / "rulebook-measure.html"
    measured = page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>")
    probe.write_text(FRAME.format(page=html.escape(measured, quote=True)), encoding="utf-8")
    dom = run_chromium(page.parent, "--dump-dom", f"--window-size={PHONE}", probe.as_uri()).stdout
    marker = 'data-measure="'
    assert marker in dom, "the measuring script did not run"
    raw = dom.split(marker, 1)[1].split('"', 1)[0].replace("&quot;", '"').replace("&amp;", "&")
    measure = json.loads(raw)
    assert measure["inner"] == 390
    assert measure["wide"] == [], f"elements wider than the phone screen: {measure['wide']}"
    assert measure["scroll"] <= measure["inner"], measure


def test_print_to_pdf(page: Path) -> None:
    pdf = page.parent / "rulebook.pdf"
    run_chromium(page.parent, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    assert pdf.is_file(), "Chromium wrote no PDF"
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(data) > 50_000, f"PDF is only {len(data)} bytes"
    pages = data.count(b"/Type /Page") - data.count(b"/Type /Pages")
    assert pages >= 10, f"only {pages} pages for {len(cdss.load_rules().rules)} rules"
    _keep(pdf, "rulebook.pdf")
