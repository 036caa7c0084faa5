"""Prepare batches ahead in a background thread (`--workers N` keeps up to N ready).

Batch preparation (uint8 -> float, augmentation, normalization) is array work that releases
the GIL, so one thread overlaps it with the training step. Batches come out in the loader's
order, so a run with workers equals the same run without them, bit for bit.
"""
import queue
import threading

_END = object()


def prefetch(batches, depth: int):
    """Iterate `batches`, produced up to `depth` ahead by a daemon thread (depth 0: inline)."""
    if depth == 0:
        yield from batches
        return
    ready = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as error:  # handed to the consumer, which re-raises it
            ready.put(error)

    thread = threading.Thread(target=produce, daemon=True, name="minicnn-prefetch")
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # the consumer stopped (end, error or Ctrl-C): let the producer exit
        stop.set()
