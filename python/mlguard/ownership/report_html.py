"""A self-contained HTML page for an evidence report."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping

from ..verification import stats
from .report import check_evidence


def evidence_html(doc: Mapping, suspect_file: str | os.PathLike | None = None, *,
                  public_key=None) -> str:
    """A self-contained, readable HTML page for an evidence report (all text escaped).

    The page shows the result of check_evidence at the time it was written, and says which
    checks were run and which were not (no suspect file, no owner public key given).
    """
    e = html.escape
    problems = check_evidence(doc, suspect_file, public_key=public_key)
    run = ["the signature is valid for the public key recorded in the report",
           "each verdict's p-value and decision recomputed from its counts, chance and alpha",
           "the listed key commitments and every included opening"]
    not_run = ["the model's answers to the triggers (re-run the command below)"]
    if public_key is not None:
        run.append("the report was signed by the owner's public key given to the check")
    else:
        not_run.append("who signed: no owner public key was given, so the signer may be "
                       "anyone")
    if suspect_file is not None:
        run.append("the suspect file's SHA-256 and weights hash match the report")
    else:
        not_run.append("the suspect file: none was given, so its hashes were not compared")
    status = ("<p class=ok>Checks run: all checks pass.</p>" if not problems
              else "<p class=bad>Problems found:</p><ul>" +
              "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>")
    status += ("<h2>Checks</h2><p>Run:</p><ul>" + "".join(f"<li>{e(c)}</li>" for c in run) +
               "</ul><p>Not run:</p><ul>" + "".join(f"<li>{e(c)}</li>" for c in not_run) +
               "</ul>")
    rows = []
    for v in doc.get("verdicts", []):
        try:
            p = stats.format_p(float(v.get("log_p_value")))
        except (TypeError, ValueError):
            p = "?"
        rows.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in (
            v.get("scheme"), "DETECTED" if v.get("detected") else "not detected",
            f"{v.get('matches')}/{v.get('total')}", v.get("chance"), p, v.get("alpha"),
            v.get("test"), v.get("commitment"), v.get("device"))) + "</tr>")
    suspect = doc.get("suspect", {})
    weights = suspect.get("weights_sha256", suspect.get("state_dict_sha256"))  # older reports
    signer = doc.get("signer", {})
    env = doc.get("environment", {})
    opened = ", ".join(str(o.get("scheme")) for o in doc.get("openings", [])) or "none"
    head = ("scheme", "result", "matches", "chance", "p-value", "alpha (threshold)", "test",
            "key commitment", "device")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlguard evidence report</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}
td,th{{border:1px solid #ccc;padding:.3em;font-size:.9em;word-break:break-all}}
table{{border-collapse:collapse}} .ok{{color:#060}} .bad{{color:#a00}}
pre{{background:#f4f4f4;padding:.5em;white-space:pre-wrap}}</style></head><body>
<h1>mlguard evidence report</h1>
{status}
<h2>Suspect model file</h2>
<p>{e(str(suspect.get('file')))} &mdash; {e(str(suspect.get('size')))} bytes<br>
SHA-256 <code>{e(str(suspect.get('sha256')))}</code><br>
weights hash <code>{e(str(weights))}</code></p>
<h2>Verdicts</h2>
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>
{''.join(rows)}</table>
<p>Key openings included: {e(opened)}</p>
<h2>Re-run the check</h2>
<pre>{e(str(doc.get('rerun', {}).get('command')))}</pre>
<p>in <code>{e(str(doc.get('rerun', {}).get('cwd')))}</code>. Verify this report with
<code>mlguard evidence check REPORT.json --suspect SUSPECT_FILE --public-key OWNER_KEY</code>.</p>
<h2>Environment</h2>
<ul>{''.join(f'<li>{e(str(k))}: {e(str(v))}</li>' for k, v in sorted(env.items()))}</ul>
<h2>Signature</h2>
<p>Created {e(str(doc.get('created')))} with mlguard {e(str(doc.get('mlguard_version')))}.
Signed ({e(str(signer.get('algorithm')))}) by public key
<code>{e(str(signer.get('public_key')))}</code>.</p>
</body></html>
"""
