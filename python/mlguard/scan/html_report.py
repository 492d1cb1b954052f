"""The HTML scan report: one self-contained page that works offline.

It holds the heatmap (PNG, inline), the detections, the errors grouped by key (how many
files failed for each key and the first distinct reasons), and a table of all rows that a
small inline script sorts by any column (click a header) and filters (a text box, and a
"detections and errors only" switch). Keys are named by rows.key_name and their files.

File names, key labels and error messages come from users or hostile files: every one is
escaped, none is ever placed inside the script, and the page's Content-Security-Policy
allows only the page's own script (by its hash), its inline styles and the inline image,
so nothing is loaded from anywhere and nothing injected could run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from pathlib import Path

from .._version import __version__
from ..verification.stats import format_p
from .heatmap import heatmap_png
from .rows import key_name

ERROR_REASONS_SHOWN = 5  # distinct reasons listed per key
_LN10 = math.log(10.0)

# Sorts the table by a header's column (numbers by data-v), filters by the text box and the
# switch. Reads only the page's own DOM; no data is placed inside it.
_SCRIPT = """
(function () {
  var table = document.getElementById("all-rows"), body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var text = document.getElementById("filter"), only = document.getElementById("only");
  var count = document.getElementById("count"), order = {};
  function value(row, i) {
    var cell = row.cells[i], v = cell.getAttribute("data-v");
    return v === null ? cell.textContent.toLowerCase() : parseFloat(v);
  }
  function filter() {
    var words = text.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
    rows.forEach(function (row) {
      var hay = row.textContent.toLowerCase();
      var ok = (!only.checked || row.className !== "") &&
        words.every(function (w) { return hay.indexOf(w) >= 0; });
      row.style.display = ok ? "" : "none";
      shown += ok ? 1 : 0;
    });
    count.textContent = shown + " of " + rows.length + " rows shown";
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    th.addEventListener("click", function () {
      var up = order[i] = !order[i];
      rows.sort(function (a, b) {
        var x = value(a, i), y = value(b, i);
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  text.addEventListener("input", filter);
  only.addEventListener("change", filter);
  filter();
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_CSP = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{_SCRIPT_HASH}'")
_STYLE = """body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}
#all-rows th{cursor:pointer;background:#f4f4f4}tr.detected td{background:#fde0e0}
tr.error td{color:#666;background:#f2f2f2}code{font-size:12px}"""


def write_html(rows: list[dict], path, alpha: float) -> None:
    """Writes the report page for `rows` (a scan's rows) at `path`."""
    png = base64.b64encode(heatmap_png(rows, alpha)).decode("ascii")
    detections = [r for r in rows if r["detected"]]
    error_files = {r["path"] for r in rows if r["error"] is not None}
    files = len({r["path"] for r in rows})
    keys = len({r["commitment"] for r in rows})
    page = f"""<!doctype html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>mlguard scan report</title><style>{_STYLE}</style></head>
<body><h1>mlguard scan</h1>
<p>{_n(files, "model file")} &times; {_n(keys, "key")}; {_n(len(detections), "detection")};
{_n(len(error_files), "file")} could not be checked. Detected means the Bonferroni-adjusted
p-value (over all tested pairs) is below alpha = {alpha:g}. mlguard {_e(__version__)}.</p>
<img alt="heatmap of -log10 p over model files and keys" src="data:image/png;base64,{png}">
<h2>Detections</h2>
{_detections(detections)}
<h2>Errors by key</h2>
{_errors_by_key(rows)}
<h2>All rows</h2>
<p><input id="filter" type="search" placeholder="filter: file, key, error..." size="40">
<label><input id="only" type="checkbox"> detections and errors only</label>
<span id="count">{len(rows):,} rows</span> (click a column header to sort)</p>
{_all_rows(rows)}
<script>{_SCRIPT}</script>
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _key_cells(r: dict) -> str:
    return (f"<td>{_e(key_name(r))} <code>{_e(r['key_id'])}</code></td>"
            f"<td>{_e(r.get('key_path') or '-')}</td>")


def _p(log10_p: float | None) -> str:
    """A p-value from its log10, exact below the double range (e.g. 3.2e-512)."""
    return "-" if log10_p is None else format_p(log10_p * _LN10)


def _detections(detections: list[dict]) -> str:
    if not detections:
        return "<p>None.</p>"
    body = "".join(
        f"<tr><td>{_e(r['path'])}</td>{_key_cells(r)}<td>{_e(r['scheme'])}</td>"
        f"<td>{r['matches']}/{r['total']}</td><td>{_p(r['log10_p_value'])}</td>"
        f"<td>{_p(r['log10_adjusted_p_value'])}</td>"
        f"<td><code>{_e(r['file_sha256'])}</code></td></tr>" for r in detections)
    return ("<table><tr><th>file</th><th>key</th><th>key file</th><th>scheme</th>"
            "<th>matches</th><th>p</th><th>adjusted p</th><th>file SHA-256</th></tr>"
            f"{body}</table>")


def _errors_by_key(rows: list[dict]) -> str:
    """Per key: how many files could not be checked, and the first distinct reasons (each
    with its count of files and the first of them)."""
    by_key: dict[str, list[dict]] = {}
    for r in rows:
        if r["error"] is not None:
            by_key.setdefault(r["commitment"], []).append(r)
    if not by_key:
        return "<p>None: every file was checked against every key.</p>"
    out = []
    for failed in by_key.values():
        reasons: dict[str, list[str]] = {}
        for r in failed:
            reasons.setdefault(r["error"], []).append(r["path"])
        first = failed[0]
        items = "".join(
            f"<tr><td>{_e(reason)}</td><td>{len(paths):,}</td><td>{_e(paths[0])}</td></tr>"
            for reason, paths in list(reasons.items())[:ERROR_REASONS_SHOWN])
        more = len(reasons) - ERROR_REASONS_SHOWN
        more = (f"<p>... and {more:,} other reasons (filter the table of all rows)</p>"
                if more > 0 else "")
        out.append(
            f"<h3>key {_e(key_name(first))} <code>{_e(first['key_id'])}</code></h3>"
            f"<p>key file: {_e(first.get('key_path') or '-')}; {_n(len(failed), 'file')} "
            "could not be checked.</p>"
            "<table><tr><th>problem</th><th>files</th><th>first file</th></tr>"
            f"{items}</table>{more}")
    return "\n".join(out)


def _all_rows(rows: list[dict]) -> str:
    """Every row; numeric cells carry data-v so that the script sorts them as numbers."""
    def num(value, shown: str) -> str:  # a row that was not tested sorts last
        return f'<td data-v="{"Infinity" if value is None else repr(value)}">{shown}</td>'

    body = []
    for r in rows:
        kind = "detected" if r["detected"] else "error" if r["error"] is not None else ""
        cls = f' class="{kind}"' if kind else ""
        matches = "-" if r["matches"] is None else f"{r['matches']}/{r['total']}"
        body.append(
            f"<tr{cls}><td>{_e(r['path'])}</td>{_key_cells(r)}<td>{_e(r['scheme'])}</td>"
            f"{num(r['matches'], matches)}"
            f"{num(r['log10_p_value'], _p(r['log10_p_value']))}"
            f"{num(r['log10_adjusted_p_value'], _p(r['log10_adjusted_p_value']))}"
            f"<td>{'yes' if r['detected'] else 'no'}</td><td>{_e(r['error'] or '')}</td></tr>")
    return ('<table id="all-rows"><thead><tr><th>file</th><th>key</th><th>key file</th>'
            "<th>scheme</th><th>matches</th><th>p</th><th>adjusted p</th><th>detected</th>"
            "<th>error</th></tr></thead><tbody>" + "\n".join(body) + "</tbody></table>")
