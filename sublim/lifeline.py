"""Worker processes end when the process that started them is gone.

A killed sweep (its parent process SIGKILLed or SIGTERMed, a closed terminal) would otherwise
leave its pool workers, and a stage's own process (`isolate`) under them, running as orphans:
idle, holding memory, on a GPU node holding GPU memory. A daemon thread notices the parent's
exit (the process is re-parented) and ends this process; the cache's lock and atomic publish
make the interrupted stage resume cleanly on the next run.

Ctrl-C reaches every process of the terminal's group at once: the job says once that it was
interrupted, its pool workers end without a stack trace each, and a stage's own process, in a
session of its own (sublim.isolate), is ended by the job or, under a worker, by this watch.
"""
from __future__ import annotations

import os
import signal
import threading
import time


def exit_with_parent(poll_s: float = 1.0) -> None:
    """Start watching this process's parent; exit (status 1) within `poll_s` of its death."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_lifeline() -> None:
    """A pool worker's initializer: it ends with its parent, and at once (status 130) without a
    stack trace on Ctrl-C: the job above it reports the interruption."""
    exit_with_parent()
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # started immune to Ctrl-C (nohup ... &): stay so
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
