"""Rendered pages: escaping of hostile text, no external resources, strict templates, deterministic output."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest

from tests.report.conftest import UNICODE, XSS
from tests.report.pagecheck import Page, is_local_url, json_blocks, urls
from yoco_eval.report import render_all, render_compare, render_lm_eval, render_profile, render_run
from yoco_eval.report.render import ENV, json_script


def _all_pages(root: Path) -> dict[str, str]:
    render_all(root, [(root / "runs" / "alpha", root / "runs" / "beta")])
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.html"))}


def test_every_kind_of_page_is_written(root):
    pages = _all_pages(root)
    assert sorted(pages) == [
        "compare/alpha__vs__beta.html",
        "index.html",
        "lm-eval.html",
        "lm_eval/model-a/results_2026-01-02T10-00-00.000000.html",
        "lm_eval/model-b/results_2026-01-03T10-00-00.000000.html",
        "profile/profile_h100.html",
        "runs/alpha/report.html",
        "runs/beta/report.html",
        "runs/gamma/report.html",
    ]


def test_hostile_text_is_escaped_and_inert_everywhere(root):
    for name, html in _all_pages(root).items():
        for payload in XSS:
            assert payload not in html, f"{name}: raw {payload!r}"
        page = Page(html)
        assert not [t for t, _ in page.tags if t in ("img", "iframe", "object", "embed")], name
        handlers = [(t, k) for t, attrs in page.tags for k in attrs if k.lower().startswith("on")]
        assert handlers == [], f"{name}: inline event handlers {handlers}"
        # script elements are exactly the ones we emit: JSON data and our own code
        kinds = [attrs.get("type") for attrs, _ in page.scripts]
        assert set(kinds) <= {"application/json", None}, name
        for _attrs, body in page.scripts:
            assert "<!--" not in body and "<script" not in body.lower() and "</" not in body, name
    run = _all_pages(root)["runs/alpha/report.html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run  # metadata and the error table, as text
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in run
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in run  # drill-down JSON
    assert UNICODE in run  # non-ASCII stays readable UTF-8, not mangled


def test_json_data_round_trips_the_exact_text(root):
    html = _all_pages(root)["runs/alpha/report.html"]
    (data,) = json_blocks(html)
    trial = data["cells"]["L1024_D50"]["trials"][0]
    assert trial["output"] == XSS[0] + " " + XSS[1] + " " + UNICODE + " <!--"
    assert trial["needles"][0][2] == "Needle <script>alert(1)</script> </script>"
    assert data["strings"][trial["question"]] == "Which number? " + XSS[1]
    assert trial["excerpts"][0][2] == 0  # the excerpt's needle is the first needle's text, stored once
    assert trial["seed"] == "1285"  # as text: real seeds exceed 2**53 and JavaScript numbers would round them


def test_json_script_escapes_breakouts():
    s = str(json_script({"a": "</script><!-- & \u2028 \u2029 <SCRIPT>"}))
    assert "<" not in s and ">" not in s and "&" not in s and "\u2028" not in s and "\u2029" not in s
    with pytest.raises(ValueError):
        json_script({"x": float("nan")})


def test_no_page_references_an_external_resource(root):
    for name, html in _all_pages(root).items():
        bad = [u for u in urls(html) if not is_local_url(u)]
        assert bad == [], f"{name}: {bad}"
        assert not re.search(r"https?://", html.replace("http://www.w3.org/2000/svg", "")), name


def test_url_checker_rejects_external_links():
    html = (
        '<a href="https://cdn.example/x.js">x</a><img src="//host/x.png"><link href="/abs.css">'
        '<div style="background: url(http://x/y.png)"></div><a href="javascript:alert(1)">j</a>'
    )
    assert [u for u in urls(html) if not is_local_url(u)] == [
        "https://cdn.example/x.js",
        "//host/x.png",
        "/abs.css",
        "http://x/y.png",
        "javascript:alert(1)",
    ]
    assert all(is_local_url(u) for u in ["#cell=L1_D0", "data:,", "../runs/a/report.html#cell=L1_D0", "index.html"])


def test_relative_links_point_at_existing_pages(root):
    pages = _all_pages(root)
    for name, html in pages.items():
        for u in urls(html):
            if u.startswith(("#", "data:")):
                continue
            target = (root / name).parent / u.split("#")[0]
            assert target.resolve().is_file(), f"{name} links to missing {u}"


def test_output_is_deterministic_and_has_no_render_time(root, tmp_path):
    first = _all_pages(root)
    again = _all_pages(root)
    assert first == again
    assert "generated" not in first["index.html"].lower() or " at " not in first["index.html"].split("<footer>")[1]
    render_run(root / "runs" / "alpha", generated_at="2030-01-01 00:00 UTC")
    assert "at 2030-01-01 00:00 UTC" in (root / "runs" / "alpha" / "report.html").read_text(encoding="utf-8")


def test_environment_is_strict_and_autoescapes_html_templates():
    assert ENV.undefined is jinja2.StrictUndefined
    assert ENV.autoescape("run.html.j2") is True
    with pytest.raises(jinja2.UndefinedError):
        ENV.from_string("{{ nope }}").render()
    names = ENV.list_templates()
    assert {
        "base.html.j2",
        "run.html.j2",
        "index.html.j2",
        "compare.html.j2",
        "lm_eval.html.j2",
        "profile.html.j2",
    } <= set(names)
    for asset in ("run.js", "index.js", "style.css"):
        src = ENV.loader.get_source(ENV, asset)[0]
        assert "</script" not in src and "</style" not in src and "http" not in src.replace("http://www.w3.org", "")


def test_run_page_shows_failures_as_errors_with_counts(root):
    html = render_run(root / "runs" / "alpha").read_text(encoding="utf-8")
    cell = re.search(r'data-key="L16384_D100">(.*?)</a>', html, re.S).group(1)
    assert ">ERR</text>" in cell and "all 2 trial(s) failed" in cell
    assert "3 failed trials" in html and "CUDA out of memory" in html
    assert "mean 75.0% over 4 trial(s), 2 failed (excluded)" in html  # the 16K column mean


def test_bad_inputs_still_render_with_the_problem_on_the_page(root):
    alpha = root / "runs" / "alpha"
    data = (alpha / "results.jsonl").read_bytes()
    (alpha / "results.jsonl").write_bytes(data[:-25])
    (root / "runs" / "beta" / "run.json").unlink()
    (root / "runs" / "gamma" / "results.jsonl").unlink()
    (root / "profile" / "profile_h100.json").write_text('{"schema": "something-else"}')
    s = render_all(root)
    lines = [str(p) for p in s.problems]
    assert any(x.startswith("runs/alpha/results.jsonl:18: truncated last line") for x in lines)
    assert any(x.startswith("runs/beta/run.json: run.json is missing") for x in lines)
    assert any(x.startswith("runs/gamma/results.jsonl: results.jsonl is missing") for x in lines)
    assert any(x.startswith("profile/profile_h100.json: schema is 'something-else'") for x in lines)
    page = (alpha / "report.html").read_text(encoding="utf-8")
    # the page names files relative to its own folder's parent, whichever root rendered it
    assert "alpha/results.jsonl:18: truncated last line" in page and 'data-key="L1024_D0"' in page
    assert "runs/alpha/results.jsonl" not in page
    gamma = (root / "runs" / "gamma" / "report.html").read_text(encoding="utf-8")
    assert "not run" in gamma  # the planned grid is still drawn
    index = (root / "index.html").read_text(encoding="utf-8")
    assert "input problem" in index and "runs/beta/report.html" in index


def test_lm_eval_table(root):
    a = root / "lm_eval" / "model-a" / "results_2026-01-02T10-00-00.000000.json"
    b = root / "lm_eval" / "model-b" / "results_2026-01-03T10-00-00.000000.json"
    html = render_lm_eval([a, b], root / "lm.html").read_text(encoding="utf-8")
    row = re.search(r"<tr><td[^>]*>\s*- tiny_mc</td><td class=\"mono\">acc</td>.*?</tr>", html, re.S).group(0)
    assert "0.4000" in row and "± 0.1000" in row and 'class="num best"' in row
    niah = re.search(r"<tr><td[^>]*>[^<]*tiny_niah.*?</tr>", html, re.S).group(0)
    assert "N/A" not in niah and "±" not in niah  # "N/A" stderr is simply not shown
    assert '<tr class="group"><td title="tiny_suite">' in html
    assert "2026-01-02 10:00 UTC" in html


def test_lm_eval_bad_file_is_a_problem_not_a_crash(tmp_path):
    bad = tmp_path / "results_x.json"
    bad.write_text('{"results": 3}')
    html = render_lm_eval([bad], tmp_path / "out.html").read_text(encoding="utf-8")
    assert "results_x.json: has no &#39;results&#39; object" in html and "no task results could be read" in html


def test_profile_page_marks_oom_instead_of_plotting_zero(root):
    html = render_profile(root / "profile" / "profile_h100.json", root / "p.html").read_text(encoding="utf-8")
    assert html.count(">✕<title>transformer-3b @ 524,288: OOM</title>") == 4  # one per chart
    assert html.count('<span class="badge error">oom</span>') == 2
    for title in ("Peak GPU memory", "Prefill latency", "Throughput", "Decode latency"):
        assert f">{title}</text>" in html


def test_profile_page_keeps_an_fp8_cache_run_apart(tmp_path):
    import json

    row = {"model": "yoco-3b", "context_length": 524288, "batch": 1, "status": "ok", "error": None, "prefill_s": 3.0,
           "decode_ms_per_token": 13.0, "peak_mem_bytes": 1e10, "throughput_tok_s": 9.3}  # fmt: skip
    doc = {"schema": "yoco-eval/profile/1", "card": "H100", "rows": [{**row, "kv_dtype": "auto"},
           {**row, "kv_dtype": "fp8", "decode_ms_per_token": 10.1}]}  # fmt: skip
    (tmp_path / "profile_x.json").write_text(json.dumps(doc))
    html = render_profile(tmp_path / "profile_x.json", tmp_path / "p.html").read_text(encoding="utf-8")
    assert "<title>yoco-3b (fp8 K/V) @ 524,288: 10.1 ms/token</title>" in html
    assert "<title>yoco-3b @ 524,288: 13 ms/token</title>" in html


def test_compare_page(root):
    out = render_compare(root / "runs" / "alpha", root / "runs" / "beta", root / "cmp" / "x.html")
    html = out.read_text(encoding="utf-8")
    assert 'href="../runs/alpha/report.html#cell=L1024_D0"' in html
    assert "B − A −75 points" in html and "A 100.0%, B 25.0%" in html
    assert ">n/a</text>" in html  # 16K/100 failed in A: no difference is invented
