"""Processes that Ctrl-C can reach, wherever the test suite itself runs.

A shell without job control (a CI script, `pytest &`) starts background jobs with SIGINT
ignored, and every child inherits that: Python then installs no KeyboardInterrupt handler, Ray's
workers ignore a cancellation, and a test's SIGINT is lost while the child keeps running. The
tests that send SIGINT start their processes as a terminal would, with SIGINT at its default."""
import contextlib
import signal
import subprocess


def start_interruptible(args, **kwargs) -> subprocess.Popen:
    """subprocess.Popen(args, **kwargs) with SIGINT at its default in the child."""
    return subprocess.Popen(args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kwargs)


@contextlib.contextmanager
def children_interruptible():
    """Inside, processes started by any library get SIGINT at its default (a Python handler is
    reset to the default at exec; an ignored signal would stay ignored)."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
