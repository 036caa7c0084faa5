"""The end of every test run says which groups of tests were skipped and how to run them.

Without -rs pytest only counts skips, so a clone without ../shared/ would silently skip every
test that needs the CIFAR-10 files. The hook below prints one line per group (missing data, no
GPU, anything else) under pytest's own summary.
"""
import re

# the phrase each group's skip reasons contain, and what to tell the reader about that group
GROUPS = [
    ("shared/ must sit beside the repository",
     "the CIFAR-10 test data is missing: put the project's shared/ folder beside the repository "
     "(../shared/data/cifar10/prepare.py) to run them"),
    ("no usable GPU",
     "no usable GPU: they run where CuPy ('.[cuda]') sees a CUDA GPU"),
]


def _reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return re.sub(r"^Skipped: ", "", text)


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons = [_reason(report) for report in skipped]
    lines, counted = [], 0
    for phrase, advice in GROUPS:
        count = sum(phrase in reason for reason in reasons)
        if count:
            lines.append(f"{count} skipped: {advice}")
            counted += count
    others = sorted({reason for reason in reasons if not any(phrase in reason for phrase, _ in GROUPS)})
    if others:
        shown = "; ".join(others[:3]) + ("; ..." if len(others) > 3 else "")
        lines.append(f"{len(reasons) - counted} skipped for other reasons ({shown})")
    terminalreporter.write_sep("-", "skipped tests")
    for line in lines:
        terminalreporter.write_line(line)
    terminalreporter.write_line("(pytest -rs lists every skipped test with its reason)")
