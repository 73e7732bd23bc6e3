"""A self-contained HTML page (figures embedded as base64 PNG, inline CSS, no scripts) from report sections."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Table", "Section", "render_page"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; max-width: 900px; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


@dataclass
class Table:
    """A table: ``header`` cells and rows of cells; cells that look like numbers are right-aligned."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """One ``<h2>`` section: paragraphs of text, then tables, then figures ``(png_path, caption)``."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)


def _is_number(text: str) -> bool:
    try:
        float(text.split(" ± ")[0])
    except ValueError:
        return False
    return True


def _cell(text: str, tag: str) -> str:
    attributes = ' class="num"' if tag == "td" and _is_number(text) else ""
    return f"<{tag}{attributes}>{html.escape(text)}</{tag}>"


def _table(table: Table) -> str:
    head = "".join(_cell(h, "th") for h in table.header)
    body = "".join("<tr>" + "".join(_cell(c, "td") for c in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(Path(path).name)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{html.escape(caption)} <code>{alt}</code></figcaption></figure>")


def render_page(title: str, sections: list[Section], intro: list[str] | None = None) -> str:
    """The whole page as a string; every figure file is read and embedded, so the page needs nothing else."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(p)}</p>" for p in intro or []]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        parts += [_table(t) for t in section.tables]
        parts += [_figure(path, caption) for path, caption in section.figures]
    parts.append("</body></html>\n")
    return "\n".join(parts)
