"""Bad rows, kept with their reasons: the report that makes accepted + quarantined = input."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.errors import TailorMindError


@dataclass
class FileReport:
    """Row counts of one file: how many came in, were accepted, were quarantined and why."""

    input_rows: int
    accepted_rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined_rows(self) -> int:
        """Rows set aside, over all reasons."""
        return sum(self.reasons.values())


@dataclass
class ValidationReport:
    """Per-file counts of a dataset load, printable and JSON-serialisable."""

    files: dict[str, FileReport] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for report.json."""
        return {
            name: {
                "input": r.input_rows,
                "accepted": r.accepted_rows,
                "quarantined": r.quarantined_rows,
                "reasons": dict(r.reasons),
            }
            for name, r in self.files.items()
        }

    def add(self, name: str, counts: FileReport) -> None:
        """Add ``counts`` (of one block of the file) to file ``name``'s."""
        total = self.files.setdefault(name, FileReport(0))
        total.input_rows += counts.input_rows
        total.accepted_rows += counts.accepted_rows
        for reason, count in counts.reasons.items():
            total.reasons[reason] = total.reasons.get(reason, 0) + count

    def summary(self) -> str:
        """One line per file: accepted and quarantined counts with reasons."""
        lines = []
        for name, r in self.files.items():
            why = ", ".join(f"{reason}: {count}" for reason, count in r.reasons.items())
            lines.append(
                f"{name}: {r.accepted_rows} accepted, {r.quarantined_rows} quarantined"
                + (f" ({why})" if why else "")
            )
        return "\n".join(lines)


class RowRejections:
    """Collects reasons for rejecting rows of one table; the first reason found for a row wins."""

    def __init__(self, file_name: str, table: pa.Table, strict: bool):
        self.file_name = file_name
        self.table = table
        self.strict = strict
        self.reason = np.full(table.num_rows, -1, dtype=np.int16)
        self.reason_names: list[str] = []

    def reject(self, mask: np.ndarray | pa.Array, reason: str, column: str) -> None:
        """Mark rows where ``mask`` is true (and not yet rejected) as bad for ``reason``."""
        mask = np.asarray(
            mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else mask, dtype=bool
        )
        new = mask & (self.reason < 0)
        count = int(new.sum())
        if not count:
            return
        if self.strict:
            examples = self.table.filter(pa.array(new)).slice(0, 3).to_pylist()
            raise TailorMindError(
                f"{self.file_name}: {count} row{'s' if count > 1 else ''} with {reason} in column '{column}' "
                f"(strict mode stops at the first kind of bad row); examples: {examples}. "
                "Fix the file, or run without --strict to quarantine these rows and continue."
            )
        if reason not in self.reason_names:
            self.reason_names.append(reason)
        self.reason[new] = self.reason_names.index(reason)

    @property
    def accepted(self) -> np.ndarray:
        """Boolean mask of rows nobody rejected."""
        return self.reason < 0

    def report(self) -> FileReport:
        """Counts of this file."""
        counts = np.bincount(self.reason[self.reason >= 0], minlength=len(self.reason_names))
        reasons = {name: int(n) for name, n in zip(self.reason_names, counts, strict=True) if n}
        return FileReport(self.table.num_rows, int(self.accepted.sum()), reasons)

    def quarantined(self) -> pa.Table | None:
        """The rejected rows, original values plus a ``reason`` column; None when every row passed."""
        bad = ~self.accepted
        if not bad.any():
            return None
        names = np.array(self.reason_names, dtype=object)
        return self.table.filter(pa.array(bad)).append_column(
            "reason", pa.array(names[self.reason[bad]].tolist(), pa.string())
        )

    def write(self, quarantine_dir: Path | None) -> None:
        """Write the rejected rows (``quarantined``) to ``<dir>/<file>``."""
        rows = self.quarantined()
        if quarantine_dir is None or rows is None:
            return
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, quarantine_dir / self.file_name)
