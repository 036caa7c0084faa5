"""Progress bars that behave in a terminal and in a log file alike.

Every bar in minicnn is a tqdm bar on stderr. In a terminal it redraws itself with carriage
returns and escape codes; written into a redirected log those become one unreadable line, so a
bar is only drawn when its stream is a terminal (tqdm's `disable=None`). The lines minicnn
prints between bars (epoch summaries, notes) go to stdout either way.
"""
from __future__ import annotations


def hide_bar(progress: bool) -> bool | None:
    """tqdm's `disable` for a `--progress/--no-progress` flag: hidden when asked, else only
    shown when stderr is a terminal."""
    return True if not progress else None
