"""How result objects display: a one-screen ``repr``, ``format_table()`` and ``to_pandas()``.

A result class mixes in :class:`Tabular` and defines ``_columns()`` (column name -> one
value per row) and ``_headline()`` (one line). Then

- ``repr(result)`` is the headline and the first rows of the table, at most
  :data:`REPR_LINES` lines of at most :data:`REPR_WIDTH` characters (one screen);
- ``result.format_table()`` is the whole table as fixed-width text (classes with their own
  table, such as ``FitResult``, keep it);
- ``result.to_pandas()`` is a ``pandas.DataFrame`` of the same columns (pandas is imported
  on use; it is not a dependency of the package).

The columns of every result are listed in docs/api.md ("Results as tables"). This module
imports nothing of the package and nothing heavy.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["REPR_LINES", "REPR_WIDTH", "Tabular", "import_pandas", "text_table"]

#: most lines of a result's repr
REPR_LINES = 16
#: most characters of a line of a result's repr
REPR_WIDTH = 100


def import_pandas() -> Any:
    """``pandas``, or an ImportError that says how to install it."""
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - pandas is installed in the test env
        raise ImportError(
            "to_pandas() needs pandas, which scalespace_mk does not install: pip install pandas"
        ) from exc
    return pandas


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}"
    try:  # numpy scalars
        import numbers

        if isinstance(value, numbers.Integral):
            return str(int(value))
        if isinstance(value, numbers.Real):
            return _cell(float(value))
    except Exception:  # pragma: no cover
        pass
    return str(value)


def text_table(columns: dict[str, list[Any]], max_rows: int | None = None) -> list[str]:
    """Fixed-width lines (header, rule, rows) of ``columns``; ``max_rows`` rows at most."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    shown = n if max_rows is None else min(n, max_rows)
    cells = {k: [_cell(v) for v in columns[k][:shown]] for k in names}
    width = {k: max([len(k), *(len(c) for c in cells[k])]) for k in names}
    head = " ".join(f"{k:>{width[k]}}" for k in names)
    lines = [head, "-" * len(head)]
    for i in range(shown):
        lines.append(" ".join(f"{cells[k][i]:>{width[k]}}" for k in names))
    return lines


class Tabular:
    """Mixin: ``__repr__``, ``format_table()`` and ``to_pandas()`` from ``_columns()``."""

    def _columns(self) -> dict[str, list[Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _headline(self) -> str:  # pragma: no cover - overridden
        return type(self).__name__

    def _n_rows(self) -> int:
        cols = self._columns()
        return len(next(iter(cols.values()))) if cols else 0

    def format_table(self, max_rows: int | None = None) -> str:
        """The result as a fixed-width text table (one line per row).

        Parameters
        ----------
        max_rows : int, optional
            Show at most this many rows (default: all).

        Returns
        -------
        str
            A title line, the header, a rule and the rows; the columns are those of
            :meth:`to_pandas` (docs/api.md, "Results as tables").
        """
        lines = [self._headline(), *text_table(self._columns(), max_rows)]
        n = self._n_rows()
        if max_rows is not None and n > max_rows:
            lines.append(f"... {n - max_rows} more rows")
        return "\n".join(lines)

    def to_pandas(self) -> Any:
        """The result as a ``pandas.DataFrame``, one row per line of :meth:`format_table`.

        Returns
        -------
        pandas.DataFrame
            Columns as documented in docs/api.md ("Results as tables").

        Raises
        ------
        ImportError
            If pandas is not installed (``pip install pandas``).
        """
        return import_pandas().DataFrame(self._columns())

    def __repr__(self) -> str:
        body = self.format_table().splitlines()
        lines = body[:REPR_LINES]
        if len(body) > REPR_LINES:
            more = self._n_rows() - (REPR_LINES - 4)  # title, header, rule, this line
            lines[-1] = f"... {max(more, 1)} more rows: format_table() or to_pandas() for all"
        out = [
            line if len(line) <= REPR_WIDTH else line[: REPR_WIDTH - 3] + "..." for line in lines
        ]
        return f"<{type(self).__name__}: " + "\n".join(out) + ">"
