"""Audit trails exported for an auditor or a court: CSV and PDF from the index's audit log. No HTTP.

A trail is every record matching one search (per evidence: the object id; per user: the actor),
oldest first, each with its hash-chain link, so a reader can check it against ``bodycam-hq audit
verify``. The PDF is made with ReportLab (the long-standing BSD-licensed PDF library; its
Platypus tables split a long trail over pages and repeat the header row).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Mapping
from dataclasses import replace

from hq.index import Index
from hq.records import AuditQuery, AuditRecord

MAX_ROWS = 100_000  # an export larger than this is refused: narrow the search
MAX_PDF_ROWS = 20_000  # a PDF is laid out in memory: about 400 pages at most
PAGE = 1000
CSV_COLUMNS = ("id", "time_utc", "component", "event_type", "user", "object", "outcome", "detail",
               "prev_sha256", "sha256")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class TrailError(Exception):
    """An export that cannot be made (too many records); ``str`` says what to do."""


def utc_text(utc_ns: int) -> str:
    """ISO 8601 UTC with milliseconds, as auditors read the trail."""
    when = dt.datetime.fromtimestamp(utc_ns / 1e9, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def collect(index: Index, query: AuditQuery, max_rows: int = MAX_ROWS) -> list[AuditRecord]:
    """Every record the search matches, oldest first; TrailError past ``max_rows``."""
    found: list[AuditRecord] = []
    page = replace(query, before_id=None, limit=PAGE)
    while True:
        batch = index.audit_search(page)
        found.extend(batch)
        if len(found) > max_rows:
            raise TrailError(f"more than {max_rows} records match: narrow the search (a time range, a user)")
        if len(batch) < PAGE or batch[-1].id is None:
            break
        page = replace(page, before_id=batch[-1].id)
    found.reverse()
    return found


def _cell(text: str) -> str:
    """A spreadsheet never runs a cell as a formula (OWASP CSV injection): a leading quote."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _row(r: AuditRecord) -> list[str]:
    return [str(r.id), utc_text(r.utc_ns), r.component, r.event_type, r.actor, r.target, r.outcome,
            json.dumps(r.detail, sort_keys=True, ensure_ascii=False), r.prev_sha256 or "", r.sha256 or ""]


def to_csv(records: list[AuditRecord]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow([_cell(v) for v in _row(r)])
    return out.getvalue().encode("utf-8")


def to_pdf(records: list[AuditRecord], title: str, filters: Mapping[str, str], generated_by: str,
           generated_ns: int) -> bytes:
    """A landscape A4 report: what was searched, by whom and when, then one row per record."""
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7, leading=8.5, alignment=TA_LEFT)
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm,
                            topMargin=12 * mm, bottomMargin=12 * mm, title=title, author="bodycam headquarters")
    searched = ", ".join(f"{k}={v}" for k, v in filters.items()) or "all records"
    head = [Paragraph(escape(title), styles["Title"]),
            Paragraph(escape(f"Search: {searched}. {len(records)} record(s), oldest first. Generated "
                             f"{utc_text(generated_ns)} by {generated_by}. Each record's sha256 chains to the "
                             "one before (prev_sha256); `bodycam-hq audit verify` checks the whole log."),
                      styles["BodyText"]),
            Spacer(1, 4 * mm)]

    def para(text: str) -> Paragraph:
        return Paragraph(escape(text), small)

    rows: list[list[object]] = [[para(h) for h in ("#", "Time (UTC)", "Component", "Event", "User", "Object",
                                                    "Outcome", "Detail", "SHA-256")]]
    for r in records:
        cells = _row(r)
        rows.append([para(c) for c in (*cells[:8], (r.sha256 or "")[:16] + "…")])
    widths = [x * mm for x in (12, 34, 18, 26, 24, 38, 15, 78, 26)]
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle([
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e9edf2")),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9aa3ad")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    doc.build([*head, table])
    return out.getvalue()
