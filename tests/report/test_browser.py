"""A real browser: headless Chromium opens the run report, the index and a comparison with zero console errors.

Driven over the DevTools protocol through a pipe (tests/report/browser.py, standard library only). Screenshots
go to ``$YOCO_REPORT_SCREENSHOTS`` when set (CI keeps them as artifacts), else to pytest's tmp folder.
Skips, saying why, only when no Chromium binary is found (``apt-get install chromium``; or set YOCO_CHROMIUM).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.report.browser import Chromium, find_chromium
from yoco_eval.report import render_all

BINARY = find_chromium()
pytestmark = pytest.mark.skipif(
    BINARY is None, reason="no chromium binary on PATH (apt-get install -y chromium, or set YOCO_CHROMIUM)"
)

# Open every heatmap cell's drill-down in turn; report how many opened and whether anything hostile got in.
CLICK_ALL_CELLS = """
(async () => {
  const links = Array.from(document.querySelectorAll('svg.heatmap a[data-key]'));
  let opened = 0, trials = 0;
  for (const a of links) {
    a.dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true}));
    await new Promise(r => setTimeout(r, 0));
    const n = document.querySelectorAll('#drill details.trial').length;
    if (n > 0 && a.classList.contains('selected')) { opened += 1; trials += n; }
  }
  location.hash = '#cell=L1024_D50';
  await new Promise(r => setTimeout(r, 50));
  const pre = Array.from(document.querySelectorAll('#drill pre')).map(p => p.textContent);
  return {links: links.length, opened, trials, imgs: document.querySelectorAll('img').length,
          scripts: document.querySelectorAll('script').length,
          hostileShownAsText: pre.some(t => t.includes('<script>alert(1)</script>')),
          title: document.getElementById('drill-title').textContent};
})()
"""

INDEX_INTERACTIONS = """
(async () => {
  const visible = () => Array.from(document.querySelectorAll('.card')).filter(c => !c.hidden).map(c => c.id);
  const q = document.getElementById('q');
  q.value = 'gamma'; q.dispatchEvent(new Event('input'));
  const filtered = visible();
  q.value = ''; q.dispatchEvent(new Event('input'));
  const kind = document.getElementById('kind');
  kind.value = 'lm-eval'; kind.dispatchEvent(new Event('change'));
  const lm = visible().length;
  kind.value = ''; kind.dispatchEvent(new Event('change'));
  const sort = document.getElementById('sort');
  sort.value = 'score-desc'; sort.dispatchEvent(new Event('change'));
  const byScore = visible().slice(0, 3);
  sort.value = 'date-desc'; sort.dispatchEvent(new Event('change'));
  location.hash = '#compare=r0,r2';
  await new Promise(r => setTimeout(r, 50));
  const tables = document.querySelectorAll('#cmp-out table.cmp').length;
  const heads = Array.from(document.querySelectorAll('#cmp-out h3')).map(h => h.textContent);
  return {filtered, lm, byScore, tables, heads, shown: document.getElementById('shown').textContent,
          imgs: document.querySelectorAll('img').length};
})()
"""


@pytest.fixture(scope="module")
def browser():
    with Chromium(BINARY) as b:
        yield b


@pytest.fixture
def shots(tmp_path) -> Path:
    d = os.environ.get("YOCO_REPORT_SCREENSHOTS")
    return Path(d) if d else tmp_path / "screenshots"


@pytest.fixture
def rendered(root) -> Path:
    render_all(root, [(root / "runs" / "alpha", root / "runs" / "beta")])
    return root


def _clean(result, name):
    assert result.errors == [], f"{name}: {result.errors}"
    assert all(u.startswith(("file:", "data:", "about:")) for u in result.requests), result.requests
    assert result.screenshot is not None and result.screenshot.stat().st_size > 10_000


def test_run_report_opens_every_cell_without_errors(browser, rendered, shots):
    r = browser.open_page(rendered / "runs" / "alpha" / "report.html", CLICK_ALL_CELLS, shots / "run_report.png")
    _clean(r, "run report")
    v = r.value
    assert v["links"] == 9 and v["opened"] == 9 and v["trials"] == 18
    assert v["imgs"] == 0 and v["scripts"] == 2  # the payloads stayed text: no <img>, no extra <script>
    assert v["hostileShownAsText"] is True
    assert v["title"].startswith("1,024 tokens, depth 50%")


def test_index_filters_sorts_and_compares(browser, rendered, shots):
    r = browser.open_page(rendered / "index.html", INDEX_INTERACTIONS, shots / "index.png")
    _clean(r, "index")
    v = r.value
    assert v["filtered"] == ["card-r2"] and v["lm"] == 2
    assert v["byScore"] == ["card-r0", "card-r1", "card-r2"]  # 86.7 %, 83.3 %, 50 %
    assert v["tables"] == 3
    assert v["heads"] == [
        "A: alpha",
        'B: gamma <!-- <script>alert(1)</script>"><img src=x onerror=alert(1)>',
        "B − A (points)",
    ]  # hostile run names arrive as text
    assert v["shown"] == "6 of 6 shown" and v["imgs"] == 0


def test_comparison_lm_eval_and_profile_pages(browser, rendered, shots):
    for name, page in [
        ("compare", "compare/alpha__vs__beta.html"),
        ("lm_eval", "lm-eval.html"),
        ("profile", "profile/profile_h100.html"),
        ("run_gamma", "runs/gamma/report.html"),
    ]:
        r = browser.open_page(rendered / page, "document.querySelectorAll('svg').length", shots / f"{name}.png")
        _clean(r, name)
        assert r.value >= (0 if name == "lm_eval" else 1)


def test_page_with_input_problems_still_opens_cleanly(browser, root, shots):
    path = root / "runs" / "alpha" / "results.jsonl"
    path.write_bytes(path.read_bytes()[:-30])
    render_all(root)
    r = browser.open_page(
        root / "runs" / "alpha" / "report.html",
        "document.getElementById('problems').textContent",
        shots / "run_with_problems.png",
    )
    _clean(r, "run with problems")
    assert "results.jsonl:18: truncated last line" in r.value


# --- negative tests: the harness must really see each kind of failure -------------------------------------


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("<script>undefinedFunction();</script>", "uncaught: ReferenceError: undefinedFunction is not defined"),
        ("<script>console.error('boom')</script>", "console.error: boom"),
        ("<script>alert(1)</script>", "dialog (alert): 1"),
        ('<img src="http://192.0.2.1/x.png">', "external request: http://192.0.2.1/x.png"),
        ("<script>setTimeout(() => { null.x; }, 0)</script>", "uncaught: TypeError"),
    ],
    ids=["js-error", "console-error", "alert", "external-image", "async-error"],
)
def test_harness_catches_broken_pages(browser, tmp_path, body, expect):
    page = tmp_path / "bad.html"
    page.write_text(f'<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>{body}</body></html>')
    r = browser.open_page(page, "new Promise(r => setTimeout(() => r(1), 50))", tmp_path / "bad.png")
    assert any(e.startswith(expect) for e in r.errors), r.errors


def test_harness_catches_a_failing_script(browser, tmp_path):
    page = tmp_path / "ok.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>ok</body></html>')
    r = browser.open_page(page, "document.getElementById('nope').click()")
    assert r.errors and r.errors[0].startswith("script failed: TypeError")
    clean = browser.open_page(page, "1 + 1")
    assert clean.errors == [] and clean.value == 2


# --- layout at a desktop and a narrow width: nothing clipped, labels on the line of their values -------------

LAYOUT = """
(() => {
  const vw = document.documentElement.clientWidth, out = {vw, problems: [], heatmaps: 0, pairs: 0};
  const bad = (what) => out.problems.push(what);
  const page = document.documentElement.scrollWidth;
  if (page > vw + 1) bad('page scrolls sideways: ' + page);
  document.querySelectorAll('.scroll').forEach((s, i) => {
    if (s.scrollWidth > s.clientWidth + 1) bad('scroll box ' + i + ' hides ' + (s.scrollWidth - s.clientWidth) + 'px');
  });
  document.querySelectorAll('svg.heatmap').forEach(svg => {
    out.heatmaps += 1;
    const s = svg.getBoundingClientRect(), c = svg.parentElement.getBoundingClientRect();
    if (s.left < c.left - 1 || s.right > c.right + 1 || s.right > vw) bad(svg.id + ': svg outside its container');
    svg.querySelectorAll('rect, text, line').forEach(e => {
      const b = e.getBoundingClientRect();
      if (b.width === 0 && b.height === 0) return;
      const what = e.tagName + ' "' + (e.textContent || '').slice(0, 20) + '"';
      if (b.left < s.left - 1 || b.right > s.right + 1 || b.right > vw) bad(svg.id + ': ' + what + ' clipped');
    });
  });
  const firstLine = (el) => {
    const r = document.createRange();
    r.selectNodeContents(el);
    const rects = Array.from(r.getClientRects()).filter(x => x.height > 0);
    return rects.length ? rects[0] : el.getBoundingClientRect();
  };
  const pair = (label, value) => {
    if (!label || !value || !label.textContent.trim() || !value.textContent.trim()) return;
    out.pairs += 1;
    const a = firstLine(label), b = firstLine(value);
    if (Math.abs(a.bottom - b.bottom) > 4)
      bad('"' + label.textContent.trim() + '" sits ' + Math.round(b.bottom - a.bottom) + 'px from its value');
    if (b.left < a.right - 1) bad('"' + label.textContent.trim() + '" overlaps its value');
  };
  document.querySelectorAll('.meta tr').forEach(tr => pair(tr.querySelector('th'), tr.querySelector('td')));
  document.querySelectorAll('.card dl.facts dt').forEach(dt => pair(dt, dt.nextElementSibling));
  document.querySelectorAll('table.data tr').forEach(tr => pair(tr.querySelector('th'), tr.querySelector('td')));
  return out;
})()
"""


@pytest.fixture(scope="module")
def layout_pages(tmp_path_factory) -> Path:
    """The fixture tree and a copy of the committed examples, each rendered as ``yoco-eval report`` would."""
    from tests.report.conftest import FIXTURE_ROOT

    base = tmp_path_factory.mktemp("layout")
    root = base / "root"
    import shutil

    shutil.copytree(FIXTURE_ROOT, root)
    render_all(root, [(root / "runs" / "alpha", root / "runs" / "beta")])
    ex = base / "examples"
    shutil.copytree(Path(__file__).resolve().parents[2] / "reports" / "examples", ex)
    render_all(ex, [(ex / "yoco-needle-7m", ex / "transformer-needle-7m")])
    return base


@pytest.mark.parametrize("width", [1400, 700])
@pytest.mark.parametrize(
    ("page", "heatmaps"),
    [
        ("root/index.html", 0),
        ("root/runs/alpha/report.html", 1),
        ("root/compare/alpha__vs__beta.html", 3),
        ("examples/index.html", 0),
        ("examples/yoco-needle-7m/report.html", 1),
        ("examples/smollm2-niah/report.html", 1),
    ],
)
def test_layout_has_no_clipping_and_aligned_labels(browser, layout_pages, shots, page, heatmaps, width):
    name = page.replace("/", "_").removesuffix(".html")
    r = browser.open_page(layout_pages / page, LAYOUT, shots / f"layout_{name}_{width}.png", width=width)
    _clean(r, f"{page} at {width}px")
    v = r.value
    assert v["vw"] <= width
    assert v["heatmaps"] == heatmaps
    assert v["pairs"] > 5  # the check looked at real label/value rows
    assert v["problems"] == [], v["problems"]
