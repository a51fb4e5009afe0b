"""Ctrl-C and SIGTERM that stop long native work promptly and let cleanups run.

Why: Python delivers a signal as an exception in the main thread between bytecodes. While
llama.cpp quantizes or evaluates, the main thread is inside a C call; the exception then fires
inside whatever ctypes callback runs next (llama.cpp's log callback), where ctypes prints
"Exception ignored" and drops it: Ctrl-C was lost and the job ran to the end. And SIGTERM's
default action kills the process without running any ``finally``, leaving temporaries behind.

So the CLI installs handlers that record the request (`requested`) before raising, callbacks
(imatrix's evaluation callback, its abort callback) poll that record and stop llama.cpp, and a
long native call with no callback at all (llama.cpp's quantizer) runs on a worker thread
(`run_native`) while the main thread waits in short sleeps, so the exception reaches it within a
tenth of a second.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_requested = threading.Event()
_signal: list[int] = []  # the last signal received
_deferred = [0]  # > 0 while native code that calls back into Python runs (see `deferred`)
_native: set[threading.Thread] = set()


def requested() -> bool:
    """Whether Ctrl-C or SIGTERM arrived (a callback that cannot raise should stop)."""
    return _requested.is_set()


def raise_if_requested() -> None:
    """Raise what the signal would have raised (KeyboardInterrupt, or SystemExit(143))."""
    if _requested.is_set():
        raise _exception(_signal[-1] if _signal else signal.SIGINT)


def clear() -> None:
    _requested.clear()


def _exception(signum: int) -> BaseException:
    return SystemExit(128 + signum) if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum, frame) -> None:
    _signal.append(signum)
    _requested.set()
    if _deferred[0]:
        return  # raised by `deferred` when the native call returns (callbacks poll `requested`)
    raise _exception(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Native calls inside this block call back into Python (llama.cpp's log and evaluation
    callbacks), where an exception from the signal handler would be printed and dropped by
    ctypes. So the handler only records the signal here; callbacks poll `requested` to stop
    llama.cpp, and the signal's exception is raised when the block ends."""
    _deferred[0] += 1
    try:
        yield
    finally:
        _deferred[0] -= 1
    raise_if_requested()


def install() -> None:
    """Route SIGINT and SIGTERM through `requested` (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def run_native(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a long native call on a worker thread and wait for it in short sleeps, so a signal
    interrupts the caller within 0.1 s. On an interrupt the worker is abandoned (a daemon
    thread: it dies with the process); the caller's cleanups run as the exception unwinds."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=target, daemon=True, name="edge-llm-native")
    _native.add(t)
    t.start()
    while t.is_alive():  # an exception here leaves t running, and listed in _native
        t.join(0.1)
    _native.discard(t)
    if "error" in box:
        raise box["error"]
    return box["result"]


def native_work_running() -> bool:
    """Whether an abandoned native call still runs (the process should end with os._exit)."""
    return any(t.is_alive() for t in _native)


def hard_exit(code: int) -> None:
    """End the process now (abandoned native threads may hold llama.cpp's state)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe
            pass
    os._exit(code)
