"""report.html: the evaluation report as one self-contained page (every image inlined as a data URI).

It shows the same blocks as report.md (`fgclip.eval.report_content.report_blocks`): the comparison table,
per-class AUC, the spatial metric, setup, coverage, ROC and per-class plots, heat strips, and the
score curve of every test video (folded, one `<details>` per video). No scripts, no external
files: it opens from a mail attachment or a copied folder as it does in place.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from fgclip.eval.report_content import Block, report_blocks, report_title

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 0.6em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
.headline { font-weight: bold; background: #f7f7e8; padding: 0.6em; border-left: 4px solid #c9b800; }
details { margin: 0.2em 0; } summary { cursor: pointer; }
"""

_NUMBER = re.compile(r"^[+-]?\d[\d,.]*( \([\d.]+.*\))?$|^n/a$")


def _inline(text: str) -> str:
    """Escaped text with the markdown subset the report uses: `code` and **bold**."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _image(out_dir: Path, relative: str, alt: str) -> str:
    path = out_dir / relative
    if not path.is_file():
        return f"<p>(missing image: {html.escape(relative)})</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(block: Block) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in block.header)
    rows = []
    for row in block.rows:
        cells = "".join(f'<td class="num">{_inline(c)}</td>' if _NUMBER.match(c) else f"<td>{_inline(c)}</td>"
                        for c in row)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _list(items: list[str]) -> str:
    parts, nested = ["<ul>"], False
    for item in items:
        if item.startswith("  ") and not nested:
            parts[-1] = parts[-1].removesuffix("</li>")
            parts.append("<ul>")
            nested = True
        elif not item.startswith("  ") and nested:
            parts.append("</ul></li>")
            nested = False
        parts.append(f"<li>{_inline(item.strip())}</li>")
    parts.append("</ul></li></ul>" if nested else "</ul>")
    return "".join(parts)


def render_html(report: dict, out_dir: Path) -> str:
    """The page for `report`, with the PNGs under `out_dir` embedded."""
    out_dir = Path(out_dir)
    title = report_title(report)
    body = [f"<h1>{html.escape(title)}</h1>", f'<p class="headline">{_inline(report["headline"])}</p>']
    for block in report_blocks(report):
        if block.kind == "heading":
            body.append(f"<h2>{_inline(block.text)}</h2>")
        elif block.kind == "text":
            body.append(f"<p>{_inline(block.text)}</p>")
        elif block.kind == "table":
            body.append(_table(block))
        elif block.kind == "list":
            body.append(_list(block.items))
        elif block.kind == "image":
            body.append(_image(out_dir, block.path, block.text))
        elif block.kind == "gallery":
            body.append(f"<h2>Score curves ({len(block.images)} videos)</h2>")
            body += [f"<details><summary>{html.escape(alt)}</summary>{_image(out_dir, path, alt)}</details>"
                     for alt, path in block.images]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
