"""ScanResult: what ``mlguard.scan`` returns, the rows (still a list of dicts) with helpers
for notebooks: ``.rows``, ``.detections``, ``.errors``, ``.to_pandas()``, an HTML view."""

from __future__ import annotations

import html

from ..verification.stats import format_p
from .rows import key_name

_SHOWN = 20  # rows of each kind in the HTML view


class ScanResult(list):
    """The scan's rows, in order (a list, so code that indexed or iterated the old list of
    dicts keeps working), plus the scan's `alpha`."""

    def __init__(self, rows=(), alpha: float | None = None):
        super().__init__(rows)
        self.alpha = alpha

    @property
    def rows(self) -> list[dict]:
        return list(self)

    @property
    def detections(self) -> list[dict]:
        return [r for r in self if r["detected"]]

    @property
    def errors(self) -> list[dict]:
        return [r for r in self if r["error"] is not None]

    def to_pandas(self):
        """A pandas DataFrame of all rows (pandas is optional: install it to use this)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("ScanResult.to_pandas() needs pandas (pip install pandas); "
                              "the rows are plain dicts in .rows") from None
        return pandas.DataFrame(self.rows)

    def _repr_html_(self) -> str:
        files = {r["path"] for r in self}
        keys = {r["commitment"] for r in self}
        bad = {r["path"] for r in self.errors}
        head = (f"<p>scan: {len(files)} models x {len(keys)} keys, {len(self.detections)} "
                f"detections, {len(bad)} files with errors (alpha {self.alpha})</p>")

        def table(rows: list[dict], columns: tuple[str, ...]) -> str:
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in row) + "</tr>"
                for row in rows[:_SHOWN])
            more = f"<p>... and {len(rows) - _SHOWN} more</p>" if len(rows) > _SHOWN else ""
            return ("<table><tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>" +
                    cells + "</table>" + more)

        out = head
        if self.detections:
            out += "<h4>Detections</h4>" + table(
                [(r["path"], key_name(r), r["key_id"], f"{r['matches']}/{r['total']}",
                  format_p(r["log10_adjusted_p_value"] * 2.302585092994046))
                 for r in self.detections], ("file", "key", "key id", "matches", "adjusted p"))
        if self.errors:
            out += "<h4>Errors</h4>" + table(
                [(r["path"], key_name(r), r["key_id"], r["error"]) for r in self.errors],
                ("file", "key", "key id", "error"))
        return f"<div>{out}</div>"
