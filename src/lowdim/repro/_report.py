"""The report of a results folder: ``report.html`` (self-contained, figures embedded) and ``report.md``."""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ._registry import registry
from ._runner import load_result, result_paths, software_versions

__all__ = ["collect_results", "write_report"]

_COLORS = {"held": "#1a7f37", "partly": "#9a6700", "did not hold": "#cf222e"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#1f2328;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;width:100%}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}
td:first-child{white-space:nowrap}
th{background:#f6f8fa}.verdict{font-weight:bold;color:#fff;padding:2px 8px;border-radius:10px;
white-space:nowrap}section{border-top:2px solid #d0d7de;margin-top:2em;padding-top:.5em}
img{max-width:100%;border:1px solid #d0d7de}code,pre{background:#f6f8fa;font-size:13px}
pre{padding:8px;overflow-x:auto}.small{color:#59636e;font-size:13px}
"""


def collect_results(out: str | Path) -> list[dict[str, Any]]:
    """Every stored result under ``out``, in registry order (unknown ids last)."""
    known = list(registry())
    found = {p.parent.name for p in Path(out).glob("*/*.json") if p.stem == p.parent.name}
    ids = [i for i in known if i in found] + sorted(found - set(known))
    return [r for r in (load_result(out, i) for i in ids) if r is not None]


def _badge(verdict: str) -> str:
    color = _COLORS.get(verdict, "#59636e")
    return f'<span class="verdict" style="background:{color}">{html.escape(verdict)}</span>'


def _measured(record: dict) -> str:
    return "; ".join(f"{'✔' if c['passed'] else '✘'} {c['name']}: {c['measured']}" for c in record["checks"])


def _summary(record: dict) -> str:
    """``k/n checks held`` and the measured numbers of the checks that did not hold."""
    checks = record["checks"]
    failed = [c for c in checks if not c["passed"]]
    head = f"{len(checks) - len(failed)}/{len(checks)} checks held"
    return head + "".join(f"; ✘ {c['name']}: {c['measured']}" for c in failed)


def _section(out: Path, rec: dict) -> str:
    png, _ = result_paths(out, rec["id"])
    img = ""
    if png.exists():
        b64 = base64.b64encode(png.read_bytes()).decode("ascii")
        img = f'<img alt="{html.escape(rec["id"])}" src="data:image/png;base64,{b64}">'
    checks = "".join(
        f"<li>{'✔' if c['passed'] else '✘'} {html.escape(c['name'])} — {html.escape(c['measured'])}</li>"
        for c in rec["checks"]
    )
    notes = (f"<p class='small'><b>Setting notes:</b> {html.escape(rec['notes'])}</p>"
             if rec.get("notes") else "")
    return (
        f'<section id="{html.escape(rec["id"])}"><h2>{html.escape(rec["id"])} {_badge(rec["verdict"])}</h2>'
        f"<p><b>Caption (paper {html.escape(rec['paper'])}):</b> {html.escape(rec['caption'])}</p>"
        f"<p><b>Claim checked:</b> {html.escape(rec['claim'])}</p><ul>{checks}</ul>{img}{notes}"
        f"<p class='small'>{html.escape(rec['size'])} size, seed {rec['seed']}, "
        f"{rec['seconds']:.1f} s, code {html.escape(rec['code_version'])}, {html.escape(rec['created'])}</p>"
        f"<details><summary>settings</summary><pre>{html.escape(json.dumps(rec['settings'], indent=1))}"
        "</pre></details></section>"
    )


def write_report(out: str | Path, elapsed: float | None = None) -> tuple[Path, Path]:
    """Write ``out/report.html`` and ``out/report.md`` from every stored result; return both paths."""
    out = Path(out)
    records = collect_results(out)
    versions = records[0]["versions"] if records else software_versions()  # what the figures ran with
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = "".join(
        f'<tr><td><a href="#{html.escape(r["id"])}">{html.escape(r["id"])}</a></td>'
        f"<td>{html.escape(r['paper'])}</td><td>{_badge(r['verdict'])}</td><td>{html.escape(r['size'])}</td>"
        f"<td>{r['seconds']:.1f}</td><td>{html.escape(_summary(r))}</td></tr>"
        for r in records
    )
    total = sum(r["seconds"] for r in records)
    timing = f"compute time of the figures: {total:.1f} s" + (
        f"; this run took {elapsed:.1f} s" if elapsed is not None else "")
    vers = ", ".join(f"{k} {html.escape(v)}" for k, v in versions.items())
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>lowdim repro report</title>"
        f"<style>{_CSS}</style></head><body><h1>lowdim: the papers' figures, reproduced</h1>"
        f"<p class='small'>{now} · {timing} · {vers}</p>"
        "<table><tr><th>figure</th><th>paper</th><th>verdict</th><th>size</th><th>seconds</th>"
        f"<th>checks (the ones that did not hold, with their numbers)</th></tr>{rows}</table>"
        + "".join(_section(out, r) for r in records) + "</body></html>\n"
    )
    head = f"# lowdim repro report\n\n{now} · {timing}\n\n"
    md = [head + ", ".join(f"{k} {v}" for k, v in versions.items()),
          "\n\n| figure | paper | verdict | size | seconds | measured |\n|---|---|---|---|---|---|"]
    md += [f"| {r['id']} | {r['paper']} | {r['verdict']} | {r['size']} | {r['seconds']:.1f} | "
           f"{_measured(r).replace('|', '/')} |" for r in records]
    for r in records:
        md.append(f"\n## {r['id']}: {r['verdict']}\n\n{r['caption']}\n\n**Claim:** {r['claim']}\n\n"
                  f"![{r['id']}]({r['id']}/{r['id']}.png)\n")
    html_path = atomic_write_text(out / "report.html", page)
    md_path = atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    return html_path, md_path
