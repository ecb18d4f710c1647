"""Where one object sits in its file: JSON paths become lines and columns, findings diagnostics.

Shared by the document checks and the schema explanations, which both report
by JSON path; kept apart from both so that neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitsync.model import Diagnostic, Severity, SourceLocation
from gitsync.specs.text import JsonPath, _field
from gitsync.specs.yaml_events import _Document

_ERROR = Severity.ERROR


@dataclass(slots=True)
class _Context:
    """Where one object sits, to turn JSON paths into file positions."""

    document: _Document
    prefix: JsonPath
    display: str
    diagnostics: list[Diagnostic]
    errors: int = 0

    def name(self, path: JsonPath) -> str:
        """The field as people write it, from the document's root: items[1].spec.images[0]."""
        return _field(self.prefix + path)

    def location(self, path: JsonPath, *, key: bool = False) -> SourceLocation:
        full = self.prefix + path
        marks = self.document.marks
        if key:
            mark = self.document.key_marks.get(full)
            if mark is not None:
                return SourceLocation(self.display, mark.line + 1, mark.column + 1)
        # Values inside an alias or a merge have no marks of their own: use the nearest parent's.
        while full and full not in marks:
            full = full[:-1]
        found = marks.get(full, self.document.start)
        return SourceLocation(self.display, found.line + 1, found.column + 1)

    def add(
        self,
        path: JsonPath,
        rule: str,
        message: str,
        *,
        severity: Severity = _ERROR,
        key: bool = False,
        location: SourceLocation | None = None,
    ) -> None:
        if severity is _ERROR:
            self.errors += 1
        self.diagnostics.append(
            Diagnostic(
                location=location or self.location(path, key=key),
                severity=severity,
                rule=rule,
                message=message,
                field=self.name(path) or None,
            )
        )
