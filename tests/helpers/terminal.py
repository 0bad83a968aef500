"""A stream that says it is a terminal (progress bars draw on terminals only)."""

from __future__ import annotations

import io


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True
