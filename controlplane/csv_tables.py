"""CSV answers, written one way: spreadsheet-safe cells, and a renderer base for the API's
table answers (the dashboard's downloads use :func:`write_csv` too)."""
from __future__ import annotations

import abc
import csv
import io
from typing import Any, Iterable, Sequence

from rest_framework.renderers import BaseRenderer

#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: Any) -> Any:
    """A text cell that would start a formula, prefixed with ``'`` so it is shown as text.

    Numbers are written as they are: only client-chosen text (names, messages) can carry a
    formula, and a negative number must stay a number.
    """
    if isinstance(cell, str) and cell.startswith(FORMULA_TRIGGERS):
        return "'" + cell
    return cell


def write_csv(out, rows: Iterable[Sequence[Any]]) -> None:
    """Write ``rows`` (the header first) to the file-like ``out``, every cell spreadsheet-safe."""
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([spreadsheet_safe(cell) for cell in row])


class TableCSVRenderer(BaseRenderer, abc.ABC):
    """``?format=csv`` of a table answer: :meth:`rows` turns it into rows; an error answer
    (without ``table_key``) stays readable as its message."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"
    #: The key every table answer has and an error answer lacks.
    table_key: str = ""

    @abc.abstractmethod
    def rows(self, data: dict) -> Iterable[Sequence[Any]]:
        raise NotImplementedError

    def render(self, data, accepted_media_type=None, renderer_context=None) -> str:
        out = io.StringIO()
        if isinstance(data, dict) and self.table_key in data:
            write_csv(out, self.rows(data))
        else:
            detail = data.get("detail", data) if isinstance(data, dict) else data
            write_csv(out, [["error"], [str(detail)]])
        return out.getvalue()
