(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("index-data").textContent);
  var cards = Array.prototype.slice.call(document.querySelectorAll(".cards .card"));
  var q = document.getElementById("q"), kind = document.getElementById("kind"), sort = document.getElementById("sort");
  var shown = document.getElementById("shown");

  function filter() {
    var terms = q.value.toLowerCase().split(/\s+/).filter(Boolean), k = kind.value, n = 0;
    cards.forEach(function (c) {
      var hay = c.getAttribute("data-search") || "";
      var ok = (!k || c.getAttribute("data-kind") === k) && terms.every(function (t) { return hay.indexOf(t) >= 0; });
      c.hidden = !ok;
      if (ok) n += 1;
    });
    shown.textContent = n + " of " + cards.length + " shown";
  }
  function order() {
    var parts = sort.value.split("-"), key = parts[0], dir = parts[1] === "desc" ? -1 : 1;
    cards.slice().sort(function (a, b) {
      var x = a.getAttribute("data-" + key) || "", y = b.getAttribute("data-" + key) || "";
      if (!x !== !y) return x ? -1 : 1; // empty values last, whatever the direction
      if (x === y) return (a.getAttribute("data-name") || "").localeCompare(b.getAttribute("data-name") || "");
      return x < y ? -dir : dir;
    }).forEach(function (c) { c.parentNode.appendChild(c); }); // each section keeps its own cards
  }
  q.addEventListener("input", filter);
  kind.addEventListener("change", filter);
  sort.addEventListener("change", order);
  order();
  filter();

  var out = document.getElementById("cmp-out");
  if (!out) return;
  var selA = document.getElementById("cmp-a"), selB = document.getElementById("cmp-b");
  var runs = {};
  data.runs.forEach(function (r) { runs[r.id] = r; });

  function rgb(h) { return [1, 3, 5].map(function (i) { return parseInt(h.substr(i, 2), 16); }); }
  function colour(stops, t) {
    t = Math.max(0, Math.min(1, t));
    var seg = t * (stops.length - 1), i = Math.min(Math.floor(seg), stops.length - 2), f = seg - i;
    var lo = rgb(stops[i]), hi = rgb(stops[i + 1]);
    return "rgb(" + lo.map(function (v, j) { return Math.round(v + (hi[j] - v) * f); }).join(",") + ")";
  }
  var compact = true; // one style per axis, as on the pages: 4K / 1M only when every length allows it
  function lengthLabel(n) {
    if (compact && n >= 1048576 && n % 1048576 === 0) return n / 1048576 + "M";
    if (compact && n >= 1024) return n / 1024 + "K";
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }
  function depthLabel(d) { return String(Math.round(d * 100) / 100); }
  function lookup(r, length, depth) {
    var i = r.depths.indexOf(depth), j = r.lengths.indexOf(length);
    return i < 0 || j < 0 ? null : r.cells[i][j];
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function union(a, b) {
    var s = a.concat(b).filter(function (v, i, all) { return all.indexOf(v) === i; });
    return s.sort(function (x, y) { return x - y; });
  }
  // One grid: value(length, depth) returns [text, background or null, state].
  function grid(title, lengths, depths, value) {
    var wrap = el("div"), t = el("table", "cmp"), head = el("tr");
    wrap.appendChild(el("h3", "", title));
    head.appendChild(el("th", "", "depth"));
    lengths.forEach(function (l) { head.appendChild(el("th", "", lengthLabel(l))); });
    t.appendChild(head);
    depths.forEach(function (d) {
      var tr = el("tr");
      tr.appendChild(el("th", "", depthLabel(d) + "%"));
      lengths.forEach(function (l) {
        var v = value(l, d), td = el("td", v[2] === "error" ? "hatch" : "", v[0]);
        if (v[1]) td.style.background = v[1];
        td.title = lengthLabel(l) + ", depth " + depthLabel(d) + "%: " + v[3];
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
    wrap.appendChild(t);
    return wrap;
  }
  function scoreCell(c) {
    if (!c || c[1] + c[2] === 0) return ["\u00b7", null, "missing", "not run"];
    if (c[0] === null) return ["ERR", null, "error", "all " + c[2] + " trial(s) failed"];
    return [String(Math.round(c[0] * 100)), colour(data.stops.score, c[0]), "ok",
      (c[0] * 100).toFixed(1) + "% over " + c[1] + " trial(s)" + (c[2] ? ", " + c[2] + " failed" : "")];
  }
  function render() {
    var a = runs[selA.value], b = runs[selB.value];
    while (out.firstChild) out.removeChild(out.firstChild);
    if (!a || !b) return;
    var lengths = union(a.lengths, b.lengths), depths = union(a.depths, b.depths), deltas = [];
    compact = lengths.every(function (n) { return n < 1024 || n % 1024 === 0; });
    var grids = el("div", "grids");
    grids.appendChild(grid("A: " + a.name, lengths, depths, function (l, d) { return scoreCell(lookup(a, l, d)); }));
    grids.appendChild(grid("B: " + b.name, lengths, depths, function (l, d) { return scoreCell(lookup(b, l, d)); }));
    grids.appendChild(grid("B \u2212 A (points)", lengths, depths, function (l, d) {
      var x = lookup(a, l, d), y = lookup(b, l, d);
      if (!x || !y || x[1] + x[2] === 0 || y[1] + y[2] === 0) return ["\u00b7", null, "missing", "not run in both"];
      if (x[0] === null || y[0] === null) return ["n/a", null, "error", "failed in at least one run"];
      var delta = y[0] - x[0], pts = Math.round(delta * 100);
      deltas.push(delta);
      return [pts === 0 ? "\u00b10" : (pts > 0 ? "+" : "\u2212") + Math.abs(pts), colour(data.stops.diff, (delta + 1) / 2), "ok",
        "A " + (x[0] * 100).toFixed(1) + "%, B " + (y[0] * 100).toFixed(1) + "%"];
    }));
    var mean = deltas.length ? deltas.reduce(function (s, v) { return s + v; }, 0) / deltas.length : null;
    out.appendChild(el("p", "sub", deltas.length + " cells scored in both runs; mean B \u2212 A: " +
      (mean === null ? "\u2014" : (mean * 100).toFixed(1) + " points") + ". Open a run for its drill-down: "));
    [a, b].forEach(function (r, i) {
      var link = el("a", "", (i ? "B: " : "A: ") + r.name);
      link.href = r.href;
      out.lastChild.appendChild(link);
      out.lastChild.appendChild(document.createTextNode(i ? "." : ", "));
    });
    out.appendChild(grids);
  }
  function fromHash() {
    var m = /^#compare=([^,]+),(.+)$/.exec(window.location.hash);
    if (m && runs[m[1]] && runs[m[2]]) {
      selA.value = m[1];
      selB.value = m[2];
      render();
      document.getElementById("compare").scrollIntoView({ block: "start" });
    }
  }
  selA.addEventListener("change", render);
  selB.addEventListener("change", render);
  document.getElementById("cmp-swap").addEventListener("click", function () {
    var t = selA.value; selA.value = selB.value; selB.value = t; render();
  });
  window.addEventListener("hashchange", fromHash);
  render();
  fromHash();
})();
