"""Progress of long stages (chunking, encoding, mining), reported as lines a log can keep."""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)


def stage_lines(write: Callable[[str], None], steps: int = 4) -> ProgressCallback:
    """Returns a progress callback that writes ``stage: done/total`` about ``steps`` times per stage and at its end.

    ``write`` is where lines go: ``tqdm.write`` under a trial progress bar, stderr elsewhere.
    """
    reported: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        step = int(steps * done / max(total, 1))
        if reported.get(stage) != step or done == total:
            reported[stage] = step
            write(f"  {stage}: {done}/{total}")

    return progress
