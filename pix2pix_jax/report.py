"""An HTML results page: a metrics table on top, then one row per image.

`render_page` is a pure function of its arguments (everything it prints is
HTML-escaped); `write_page` writes it. Image paths are relative to the page,
so the page and its images/ folder can be moved or served together.
"""

import dataclasses
import html
import os
from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = ("input", "output", "target")


@dataclasses.dataclass(frozen=True)
class Row:
    """One image: its name, the relative paths of its input/output/target PNGs, its metrics."""

    name: str
    images: tuple[str, str, str]
    metrics: Mapping[str, float]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    return lines + ["</table>"]


_STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:center}"
    "img{image-rendering:pixelated;min-width:128px}"
)


def render_page(title: str, summary: Mapping[str, Any], rows: Sequence[Row]) -> str:
    """The page: `title`, a table of `summary` (name -> value), then one table row per image."""
    metric_names = list(rows[0].metrics) if rows else []
    summary_rows = [(html.escape(str(k)), html.escape(_format(v))) for k, v in summary.items()]
    image_rows = []
    for row in rows:
        cells = [html.escape(row.name)]
        cells += [
            f'<img src="{html.escape(path, quote=True)}" alt="{html.escape(kind, quote=True)}">'
            for kind, path in zip(COLUMNS, row.images, strict=True)
        ]
        cells += [html.escape(_format(row.metrics.get(name, ""))) for name in metric_names]
        image_rows.append(cells)
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *_table(("metric", "value"), summary_rows),
        *_table(("image", *COLUMNS, *metric_names), image_rows),
        "</body></html>",
    ]
    return "\n".join(lines) + "\n"


def write_page(path: str, title: str, summary: Mapping[str, Any], rows: Sequence[Row]) -> None:
    """Write `render_page(title, summary, rows)` to `path`, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_page(title, summary, rows))
