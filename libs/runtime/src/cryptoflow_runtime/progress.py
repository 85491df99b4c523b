"""A one-line progress bar for long commands (backfill, replay, rebuild)."""

from __future__ import annotations

import time
from typing import TextIO


class Progress:
    """Redrawn in place on a terminal; at most one plain line a second otherwise (CI logs)."""

    def __init__(self, total: int, out: TextIO, unit: str) -> None:
        self.total = max(total, 1)
        self.out = out
        self.unit = unit
        self.started = time.monotonic()
        self._last_line_at = 0.0

    def show(self, done: int, final: bool = False) -> None:
        share = min(done / self.total, 1.0)
        elapsed = time.monotonic() - self.started
        rate = done / max(elapsed, 1e-9)
        line = f"[{'#' * int(share * 30):<30}] {share:6.1%} {done}/{self.total} {self.unit} {rate:,.0f}/s"
        if final:
            line += f" in {elapsed:.2f}s"
        if self.out.isatty():
            self.out.write("\r" + line + ("\n" if final else ""))
        elif final or time.monotonic() - self._last_line_at >= 1.0:
            self._last_line_at = time.monotonic()
            self.out.write(line + "\n")
        self.out.flush()
