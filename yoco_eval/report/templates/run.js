(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("drill-data").textContent);
  function str(i) { return i === null || i === undefined ? null : data.strings[i]; }
  var body = document.getElementById("drill-body");
  var title = document.getElementById("drill-title");
  var anchors = {};
  Array.prototype.forEach.call(document.querySelectorAll("svg.heatmap a[data-key]"), function (a) {
    anchors[a.getAttribute("data-key")] = a;
  });
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(n) { return n === null || n === undefined ? "\u2014" : String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function pct(s) { return s === null || s === undefined ? "\u2014" : (s * 100).toFixed(1) + "%"; }
  function row(dl, label, value) {
    dl.appendChild(el("dt", "", label));
    var dd = el("dd");
    if (value instanceof Node) dd.appendChild(value); else dd.textContent = value === null || value === undefined || value === "" ? "\u2014" : String(value);
    dl.appendChild(dd);
  }
  // Output with every expected answer highlighted (case-insensitive), built from text nodes only.
  function highlighted(text, expected) {
    var pre = el("pre");
    var lower = text.toLowerCase();
    var marks = [];
    expected.forEach(function (e) {
      if (!e) return;
      var needle = e.toLowerCase(), at = lower.indexOf(needle);
      while (at >= 0) { marks.push([at, at + needle.length]); at = lower.indexOf(needle, at + needle.length); }
    });
    marks.sort(function (a, b) { return a[0] - b[0]; });
    var pos = 0;
    marks.forEach(function (m) {
      if (m[0] < pos) return;
      pre.appendChild(document.createTextNode(text.slice(pos, m[0])));
      pre.appendChild(el("mark", "", text.slice(m[0], m[1])));
      pos = m[1];
    });
    pre.appendChild(document.createTextNode(text.slice(pos)));
    return pre;
  }
  // Where the needles landed: 0..100 % of the prompt, requested depth dashed.
  function strip(needles, depth, promptTokens) {
    var w = 560, h = 44, x0 = 14, x1 = w - 20;
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("class", "strip");
    function add(tag, attrs, tip) {
      var e = document.createElementNS(SVG, tag);
      Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      if (tip) { var t = document.createElementNS(SVG, "title"); t.textContent = tip; e.appendChild(t); }
      svg.appendChild(e); return e;
    }
    function xOf(d) { return x0 + Math.max(0, Math.min(100, d)) / 100 * (x1 - x0); }
    add("rect", { x: x0, y: 12, width: x1 - x0, height: 8, fill: "#e6e9ef", rx: 3 }, "prompt: " + num(promptTokens) + " tokens");
    [0, 50, 100].forEach(function (p) {
      var t = add("text", { x: xOf(p), y: 40, "text-anchor": "middle", "font-size": 10, fill: "#5d6677" });
      t.textContent = p + "%";
    });
    add("line", { x1: xOf(depth), x2: xOf(depth), y1: 4, y2: 28, stroke: "#1c2230", "stroke-dasharray": "3 2" }, "requested depth " + depth + "%");
    needles.forEach(function (n) {
      if (n[4] === null || n[4] === undefined) return;
      add("circle", { cx: xOf(n[4]), cy: 16, r: 5, fill: n[5] ? "#2f6bd9" : "#ffffff", stroke: "#2f6bd9", "stroke-width": 2 },
        (n[5] ? "target" : "distractor") + " needle " + n[0] + " at token " + num(n[3]) + " (depth " + n[4].toFixed(2) + "%)");
    });
    return svg;
  }
  function needleTable(needles) {
    var t = el("table", "data");
    var head = el("tr");
    ["key", "value", "needle text", "token", "depth %", "role"].forEach(function (h) { head.appendChild(el("th", "", h)); });
    t.appendChild(head);
    needles.forEach(function (n) {
      var tr = el("tr");
      tr.appendChild(el("td", "mono", n[0]));
      tr.appendChild(el("td", "mono", n[1]));
      tr.appendChild(el("td", "", n[2]));
      tr.appendChild(el("td", "num", num(n[3])));
      tr.appendChild(el("td", "num", n[4] === null ? "\u2014" : n[4].toFixed(2)));
      tr.appendChild(el("td", "", n[5] ? "target" : "distractor"));
      t.appendChild(tr);
    });
    return t;
  }
  function excerpt(x, needles) {
    var pre = el("pre");
    pre.appendChild(document.createTextNode(x[1]));
    pre.appendChild(el("mark", "needle", typeof x[2] === "number" ? needles[x[2]][2] : x[2]));
    pre.appendChild(document.createTextNode(x[3]));
    var wrap = el("div");
    wrap.appendChild(el("div", "caption", "around token " + num(x[0])));
    wrap.appendChild(pre);
    return wrap;
  }
  function trialBlock(t, cell, open) {
    var d = el("details", "trial");
    d.open = open;
    var s = el("summary");
    s.appendChild(el("b", "", "trial " + t.trial));
    s.appendChild(el("span", "badge " + (t.status === "ok" ? "ok" : "error"), t.status));
    s.appendChild(el("span", "", "score " + (t.score === null ? "\u2014" : t.score.toFixed(3))));
    s.appendChild(el("span", "", num(t.prompt_tokens) + " prompt tokens"));
    s.appendChild(el("span", "", t.duration + " · " + t.tps + " tok/s"));
    d.appendChild(s);
    var box = el("div");
    if (t.error !== null) { box.appendChild(el("h3", "err", "Error")); box.appendChild(el("pre", "err", str(t.error))); }
    var dl = el("dl");
    row(dl, "question", str(t.question));
    var exp = el("div");
    t.expected.forEach(function (e) { exp.appendChild(el("code", "mono", e)); exp.appendChild(document.createTextNode(" ")); });
    row(dl, "expected", t.expected.length ? exp : "\u2014");
    row(dl, "model output", t.output === null ? "\u2014 (no output)" : highlighted(t.output, t.expected));
    row(dl, "metric", str(t.metric));
    row(dl, "seed", t.seed);
    row(dl, "prefill", t.prefill);
    row(dl, "peak memory", t.mem);
    row(dl, "finished (UTC)", str(t.time));
    row(dl, "rank", t.rank);
    row(dl, "row", t.source + " (" + t.cell + ")");
    box.appendChild(dl);
    if (t.needles.length) {
      box.appendChild(el("h3", "", "Needles and where they landed"));
      box.appendChild(strip(t.needles, cell.depth, t.prompt_tokens));
      box.appendChild(needleTable(t.needles));
    }
    if (t.excerpts.length) {
      box.appendChild(el("h3", "", "Prompt around each needle"));
      box.appendChild(el("p", "caption", "Up to " + data.excerpt_chars + " characters on each side; the full prompt is not stored in the report."));
      t.excerpts.forEach(function (x) { box.appendChild(excerpt(x, t.needles)); });
    }
    d.appendChild(box);
    return d;
  }
  var selected = null;
  function show(key, scroll) {
    var cell = data.cells[key];
    while (body.firstChild) body.removeChild(body.firstChild);
    if (selected) selected.classList.remove("selected");
    selected = anchors[key] || null;
    if (selected) selected.classList.add("selected");
    var hint = document.querySelector("#drill .hint");
    if (hint) hint.hidden = true;
    if (!cell) {
      title.textContent = "Cell details";
      body.appendChild(el("p", "hint", "No trials recorded for " + key + "."));
      return;
    }
    var ok = cell.trials.filter(function (t) { return t.status === "ok" && t.score !== null; });
    var mean = ok.length ? ok.reduce(function (a, t) { return a + t.score; }, 0) / ok.length : null;
    title.textContent = num(cell.length) + " tokens, depth " + cell.depth + "%: mean " + pct(mean) + " over " +
      ok.length + " scored trial(s), " + (cell.trials.length - ok.length) + " failed";
    cell.trials.forEach(function (t, i) { body.appendChild(trialBlock(t, cell, i === 0 || cell.trials.length <= 3)); });
    if (scroll) document.getElementById("drill").scrollIntoView({ block: "start" });
  }
  function fromHash(scroll) {
    var m = /^#cell=(.+)$/.exec(window.location.hash);
    if (m) show(decodeURIComponent(m[1]), scroll);
  }
  window.addEventListener("hashchange", function () { fromHash(true); });
  fromHash(false);
})();
