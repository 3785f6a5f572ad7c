"""Process tuning, all of it: keeping Python's cyclic garbage collector off the objects that live
as long as the process. Called only from the wiring and the infrastructure (definitions.py, defs/,
lib/, report/); the science under study/ never calls it.

Dagster, GX, statsmodels, MLflow and matplotlib leave ~500k container objects behind once
imported (modules, classes, functions). Every full collection walks all of them, ~0.5 s here, and
a 10k-subject run triggered nine while importing, then as many again at interpreter exit (3.7 s
of a 38 s CLI process was the exit alone). ``gc.freeze()`` moves everything alive at that moment
to a generation the collector skips; reference counting still frees those objects as usual.

What is frozen is never collected as a *cycle*: so freeze right after imports (what is alive then
lives as long as the process), not in the middle of data work. Measured at 10k subjects: in-run
collection 2.4 -> 1.1 s, exit 3.8 -> 0.2 s.

Three tools: `built_once_per_process` for the definitions function, `long_lived_imports` around a
lazy import of a heavy library, `preload` for the libraries another package imports lazily.
"""

from __future__ import annotations

import atexit
import functools
import gc
import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_exit_hook_registered = False


def settle_process() -> None:
    """Freeze what is loaded now, and freeze everything at exit: interpreter shutdown then skips
    its full collections over the whole heap (objects still alive at exit are not guaranteed a
    finaliser by Python either way)."""
    global _exit_hook_registered
    gc.freeze()
    if not _exit_hook_registered:
        atexit.register(gc.freeze)
        _exit_hook_registered = True


@contextmanager
def long_lived_imports() -> Iterator[None]:
    """Wrap a lazy import of a heavy library: when it actually loaded modules, freeze the result.
    A later pass through the same import loads nothing and freezes nothing."""
    before = len(sys.modules)
    yield
    if len(sys.modules) > before:
        gc.freeze()


def preload(*module_names: str) -> None:
    """Import these modules now, freezing what they load: for libraries that code outside the
    infrastructure (the science) imports lazily inside its functions."""
    with long_lived_imports():
        for name in module_names:
            importlib.import_module(name)


def built_once_per_process(build: Callable[[], T]) -> Callable[[], T]:
    """For the `@dg.definitions` function: a run resolves the code location ~6 times, so build the
    definitions once per process; then everything loaded lives as long as the process, so settle
    it (`settle_process`)."""

    @functools.cache
    @functools.wraps(build)
    def once() -> T:
        built = build()
        settle_process()
        return built

    return once


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)  # glibc only


def release_freed_memory() -> None:
    """Give the heap that a data phase freed back to the system: Arrow's allocator (mimalloc in
    pyarrow's wheels) and glibc both keep freed memory for reuse, fragmented, and the next steps'
    peaks stack on it. Measured at 100k subjects after bronze ingest: the process's RSS 730 MB,
    630 MB after a garbage collection and glibc's trim, 514 MB once Arrow's pool released its
    unused pages too. Called in a step between data phases and by the executor after every step.
    glibc's part is a no-op where the C library is not glibc."""
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        arrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
