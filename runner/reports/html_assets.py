"""The stylesheet and the script that ``report.html`` carries inline (see :mod:`.html` for why nothing
is fetched). The script only sorts, filters and pages rows already on the page; ``__PAGE__`` is replaced
by the number of rows shown at once."""

CSS = """
:root{--fg:#1d2430;--dim:#5b6678;--line:#dde2ea;--bg:#f6f7f9;--card:#fff;--ok:#1a7f37;--bad:#c4302b;
--warn:#9a6700;--run:#0969da}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);
margin:0;padding:24px 28px}
h1{font-size:22px;margin:0 0 2px}
.meta{color:var(--dim);margin:0 0 16px}
.meta a{color:inherit}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:128px}
.card b{display:block;font-size:20px}
.card span{color:var(--dim);font-size:12px}
.chips{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0 10px}
.chip{border:1px solid var(--line);background:var(--card);border-radius:999px;padding:2px 10px;cursor:pointer;
font:inherit}
.chip[aria-pressed=true]{border-color:var(--run);box-shadow:inset 0 0 0 1px var(--run)}
.note{color:var(--dim);font-size:12px;max-width:70em;margin:0 0 14px}
.controls{display:flex;flex-wrap:wrap;align-items:center;gap:14px;margin:0 0 10px}
.controls select,.controls input{font:inherit;padding:3px 6px}
#shown{color:var(--dim)}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line)}
th,td{border-bottom:1px solid var(--line);padding:8px;text-align:left;vertical-align:top}
th{position:sticky;top:0;background:#eef1f5;z-index:1;white-space:nowrap}
th button{all:unset;cursor:pointer;font-weight:600}
th[aria-sort=ascending] button::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending] button::after{content:" \\25BC";font-size:10px}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.sub{color:var(--dim);font-size:12px;font-weight:400;word-break:break-all}
.id{font-weight:600;word-break:break-all;min-width:12em}
.model{font-size:12px;min-width:10em}
.badge{display:inline-block;border-radius:4px;padding:1px 7px;font-size:12px;font-weight:600;
background:#eef1f5}
.s-succeeded{background:#dafbe1;color:var(--ok)}
.s-failed,.s-expired,.s-unknown{background:#ffebe9;color:var(--bad)}
.s-cancelled,.s-held,.s-blocked{background:#fff8c5;color:var(--warn)}
.s-queued,.s-running,.s-collecting,.s-submitting{background:#ddf4ff;color:var(--run)}
.player{width:240px;height:135px;border-radius:6px;background:#222}
video,.media img{width:240px;max-width:100%;border-radius:6px;background:#000;display:block}
.media audio{width:240px;max-width:100%;display:block}
.player.audio{height:40px}
.media{width:256px}
.prompt{white-space:pre-wrap;margin:0 0 6px;max-width:44em}
.params{display:flex;flex-wrap:wrap;gap:4px 12px;margin:0;color:var(--dim);font-size:12px}
.params dt{display:inline;font-weight:600}
.params dd{display:inline;margin:0 0 0 4px}
ol.beats{margin:4px 0 6px 18px;padding:0}
.error{border-left:3px solid var(--bad);background:#fff5f5;padding:6px 10px;max-width:44em}
.error p{margin:2px 0;white-space:pre-wrap}
pre{white-space:pre-wrap;word-break:break-all;font-size:12px;margin:4px 0}
details{margin-top:6px}
summary{cursor:pointer;color:var(--dim)}
table.attempts{font-size:12px;border:0;margin-top:4px}
table.attempts th{position:static;background:none;border-bottom:1px solid var(--line)}
table.attempts td{padding:3px 6px}
"""

JS = """
(function () {
  "use strict";
  var PAGE = __PAGE__;  // rows shown at once: a browser lays out 100 rows fast, 10,000 slowly
  var table = document.getElementById("jobs");
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows).filter(function (r) {
    return r.dataset.id !== undefined;
  });
  var byStatus = document.getElementById("f-status");
  var byModel = document.getElementById("f-model");
  var byText = document.getElementById("f-text");
  var shown = document.getElementById("shown");
  var pager = document.getElementById("pager");
  var pageLabel = document.getElementById("page");
  var chips = Array.prototype.slice.call(document.querySelectorAll(".chip"));
  var matching = rows, page = 0;

  function player(slot) {  // a large report's players are made when their row is first shown
    var media = document.createElement(slot.dataset.kind === "audio" ? "audio" : "video");
    media.src = slot.dataset.src;
    media.controls = true;
    media.preload = "metadata";
    media.playsInline = true;
    media.title = slot.dataset.src;
    slot.replaceWith(media);
  }

  function render() {
    var pages = Math.max(1, Math.ceil(matching.length / PAGE));
    page = Math.min(page, pages - 1);
    var start = page * PAGE, end = Math.min(matching.length, start + PAGE);
    var visible = new Set(matching.slice(start, end));
    rows.forEach(function (row) {
      var on = visible.has(row);
      if (row.hidden === on) { row.hidden = !on; }
      if (on) { Array.prototype.forEach.call(row.querySelectorAll(".player[data-src]"), player); }
    });
    shown.textContent = matching.length + " of " + rows.length + " jobs shown" +
      (pages > 1 ? " (" + (start + 1) + "\u2013" + end + " on this page)" : "");
    pager.hidden = pages < 2;
    pageLabel.textContent = "page " + (page + 1) + " of " + pages;
  }

  function filter() {
    var s = byStatus.value, m = byModel.value, q = byText.value.trim().toLowerCase();
    matching = rows.filter(function (row) {
      return (!s || row.dataset.status === s) && (!m || row.dataset.model === m) &&
        (!q || row.dataset.search.indexOf(q) !== -1);
    });
    chips.forEach(function (chip) { chip.setAttribute("aria-pressed", String(chip.dataset.status === s)); });
    page = 0;
    render();
  }

  function sortBy(th, direction) {
    var key = th.dataset.key, numeric = th.dataset.type === "num";
    var keyed = rows.map(function (row) {
      var raw = row.dataset[key] || "";
      return {row: row, blank: raw === "", value: numeric ? parseFloat(raw) : raw};
    });
    keyed.sort(function (a, b) {
      if (a.blank || b.blank) { return a.blank === b.blank ? 0 : (a.blank ? 1 : -1); }  // blanks last
      if (numeric) { return direction * (a.value - b.value); }
      return direction * a.value.localeCompare(b.value, undefined, {numeric: true, sensitivity: "base"});
    });
    rows = keyed.map(function (k) { return k.row; });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) { fragment.appendChild(row); });
    body.appendChild(fragment);
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    var button = th.querySelector("button");
    if (!button) { return; }
    button.addEventListener("click", function () {
      var direction = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
        other.removeAttribute("aria-sort");
      });
      th.setAttribute("aria-sort", direction === 1 ? "ascending" : "descending");
      sortBy(th, direction);
      filter();
    });
  });
  chips.forEach(function (chip) {
    chip.addEventListener("click", function () {
      byStatus.value = byStatus.value === chip.dataset.status ? "" : chip.dataset.status;
      filter();
    });
  });
  [byStatus, byModel].forEach(function (el) { el.addEventListener("change", filter); });
  byText.addEventListener("input", filter);
  document.getElementById("prev").addEventListener("click", function () {
    page = Math.max(0, page - 1);
    render();
  });
  document.getElementById("next").addEventListener("click", function () { page += 1; render(); });
  filter();
})();
"""
