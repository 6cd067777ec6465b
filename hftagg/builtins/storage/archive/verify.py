"""``hftagg store verify``: check every segment and every archived partition, change nothing.

Segments (format owned by ``store``): the header parses (magic, format version, a known
schema, a record size that matches it), the file holds the records its header counts (a torn
tail is named with the byte where the partial record starts), and the header's ``ts_event``
range and time-order flag agree with the records (a flipped byte in a timestamp shows here;
the first out-of-order record is named by its byte offset).

Partitions: every catalogued file exists, has the catalogued size, CRC32C and row count. When
the CRC differs, every column chunk is read with its page CRCs checked, so the damaged row group
and column are named with their byte offset in the file; a damaged footer is named too. A
Parquet file under a topic that the catalog does not list is reported (the store catalogues it
when it next starts), as is a catalog DuckDB cannot open.

Nothing is repaired here: healing happens when a store opens (see ``catalog.heal``), so this
command is safe to run next to a running pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from hftagg.builtins.storage.archive import segments
from hftagg.builtins.storage.archive.catalog import (
    QUARANTINE_DIR,
    Catalog,
    CatalogUnusable,
)
from hftagg.builtins.storage.archive.parquet import PartitionFile, file_crc32c

__all__ = ["Finding", "VerifyReport", "verify_store"]


@dataclass(frozen=True)
class Finding:
    """One thing wrong: the file, the byte offset (None when it is the whole file), what."""

    file: str
    offset: int | None
    what: str

    def __str__(self) -> str:
        where = f" at byte {self.offset}" if self.offset is not None else ""
        return f"{self.file}{where}: {self.what}"


@dataclass
class VerifyReport:
    segments: int = 0
    segment_records: int = 0
    partitions: int = 0
    partition_rows: int = 0
    problems: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        state = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        return (
            f"{self.segments} segment(s) ({self.segment_records} records), {self.partitions} "
            f"Parquet partition(s) ({self.partition_rows} rows) checked: {state}"
        )


# -- segments ------------------------------------------------------------------------------


def _check_segment_records(info, report: VerifyReport) -> None:
    if info.problems or not info.count or "ts_event" not in (info.schema.dtype.names or ()):
        return  # a torn segment's header describes records it no longer holds
    ts = np.asarray(segments.records(info)["ts_event"])
    name = str(info.path)
    low, high = int(ts.min()), int(ts.max())
    if (info.ts_min, info.ts_max) != (low, high):
        report.problems.append(
            Finding(
                name,
                None,
                f"header ts_event range {info.ts_min}..{info.ts_max} differs from the records' "
                f"{low}..{high}: a damaged header or damaged records",
            )
        )
    if info.ts_ordered and len(ts) > 1:
        back = np.flatnonzero(ts[1:] < ts[:-1])
        if len(back):
            i = int(back[0]) + 1
            offset = info.header_bytes + i * info.record_size
            report.problems.append(
                Finding(
                    name,
                    offset,
                    f"record {i} has ts_event {int(ts[i])} before record {i - 1}'s "
                    f"{int(ts[i - 1])}, but the header says the segment is time-ordered "
                    f"({len(back)} such place(s)): damaged records",
                )
            )


def _verify_segments(root: Path, report: VerifyReport) -> None:
    for path, info, error in segments.all_segments(root):
        report.segments += 1
        if info is None:
            report.problems.append(Finding(str(path), 0, error.removeprefix(f"{path}: ")))
            continue
        report.segment_records += info.count
        for problem in info.problems:
            offset = _byte_in(problem)
            report.problems.append(Finding(str(path), offset, problem.removeprefix(f"{path}: ")))
        if info.record_size != info.schema.itemsize:
            report.problems.append(
                Finding(
                    str(path),
                    0,
                    f"header record size {info.record_size} differs from schema "
                    f"{info.schema.key}'s {info.schema.itemsize}: a damaged header",
                )
            )
            continue
        _check_segment_records(info, report)


def _byte_in(problem: str) -> int | None:
    marker = "byte "
    at = problem.find(marker)
    if at < 0:
        return None
    digits = problem[at + len(marker) :].split()[0].rstrip(",;:)")
    return int(digits) if digits.isdigit() else None


# -- partitions ----------------------------------------------------------------------------


def _locate_damage(path: Path) -> Finding:
    """Read every column chunk with page CRCs checked; name the first that fails."""
    name = str(path)
    size = path.stat().st_size
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except Exception as exc:  # noqa: BLE001 - any failure names the footer
        return Finding(name, max(size - 8, 0), f"the Parquet footer cannot be read: {exc}")
    meta = pf.metadata
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            try:
                pf.read_row_group(g, columns=[chunk.path_in_schema])
            except Exception as exc:  # noqa: BLE001 - the failing chunk is the finding
                start = chunk.dictionary_page_offset or chunk.data_page_offset
                return Finding(
                    name,
                    int(start),
                    f"row group {g}, column {chunk.path_in_schema!r} "
                    f"({chunk.total_compressed_size} bytes from here) is damaged: {exc}",
                )
    return Finding(
        name,
        None,
        "the CRC32C differs from the catalogued one but every page reads: damaged bytes "
        "in metadata or padding",
    )


def _verify_partition(root: Path, part: PartitionFile, report: VerifyReport) -> None:
    path = root / part.file
    report.partitions += 1
    if not path.exists():
        report.problems.append(
            Finding(
                str(path),
                None,
                f"catalogued ({part.topic}, {part.date}, {part.rows} rows) but the file is "
                f"gone; those rows are lost unless a copy exists (the store prunes the entry "
                f"at its next start)",
            )
        )
        return
    size = path.stat().st_size
    crc = file_crc32c(path)
    if size != part.bytes:
        report.problems.append(
            Finding(str(path), None, f"{size} bytes, catalogued as {part.bytes}")
        )
    if crc != part.checksum:
        damage = _locate_damage(path)
        report.problems.append(
            Finding(
                damage.file,
                damage.offset,
                f"CRC32C {crc:08x}, catalogued {part.checksum:08x}; {damage.what}",
            )
        )
        return
    rows = pq.ParquetFile(path).metadata.num_rows
    if rows != part.rows:
        report.problems.append(Finding(str(path), None, f"{rows} rows, catalogued as {part.rows}"))
    report.partition_rows += rows


def _verify_partitions(root: Path, report: VerifyReport) -> None:
    catalog = Catalog(root)
    try:
        parts = catalog.partitions()
    except CatalogUnusable as exc:
        report.problems.append(
            Finding(str(catalog.file), None, str(exc).removeprefix(f"{catalog.file}: "))
        )
        parts = None
    for part in parts or ():
        _verify_partition(root, part, report)
    if parts is None:
        return
    known = {p.file for p in parts}
    stray = [
        path
        for path in sorted(root.glob("*/date=*/*.parquet"))
        if path.relative_to(root).parts[0] != QUARANTINE_DIR
        and path.relative_to(root).as_posix() not in known
    ]
    if stray:  # archived while this ran? ask the catalog again before calling them strays
        known = {p.file for p in catalog.partitions()}
    for path in stray:
        if path.relative_to(root).as_posix() not in known:
            report.problems.append(
                Finding(
                    str(path),
                    None,
                    "not in the catalog (the store catalogues it, or quarantines it if "
                    "unreadable, when it next starts)",
                )
            )


def verify_store(path: str | Path) -> VerifyReport:
    """Check the store at ``path`` (see the module docstring); never changes a file."""
    root = Path(path)
    report = VerifyReport()
    if not root.is_dir():
        report.problems.append(Finding(str(root), None, "no store here (not a folder)"))
        return report
    _verify_segments(root, report)
    _verify_partitions(root, report)
    return report
