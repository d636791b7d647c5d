"""The memory cap of a test process that runs JAX cases (see :class:`MemoryCap`); the
limit itself is conftest's ``JAX_WORKER_MB``."""

from __future__ import annotations

import ctypes
import gc
import os
import sys


class MemoryCap:
    """Keeps a test process near ``limit_mb`` of resident memory. JAX keeps every program it
    compiled (about 1.4 MB each, native memory; one eager operation per shape and dtype is
    one program, and a JAX case of test_ops compiles dozens): past the limit, after a test,
    JAX's caches are dropped and the freed memory is handed back (one /proc read per test;
    the drop costs a recompile of what the next test needs). The JAX cases run one after
    another on one worker (the ``jax`` group), so the limit is set to let them share most of
    their programs (at 700 MB they were recompiled so often that they took twice the
    processor time; what is dropped is read back from the persistent cache conftest sets up); when
    that worker leaves the group its programs are dropped at once."""

    def __init__(self, limit_mb: float):
        self.limit = self.floor = limit_mb

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):  # not Linux: nothing to watch
            return 0.0

    @staticmethod
    def trim() -> None:
        """Hand the memory glibc keeps free back to the system."""
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass

    def after_test(self, leaving_jax: bool, leaving_module: bool) -> None:
        if "jax" not in sys.modules or (self.rss_mb() <= self.limit and not leaving_jax):
            if leaving_module:  # what a module's tests freed, glibc keeps unless asked (30-50 MB)
                self.trim()
            return
        sys.modules["jax"].clear_caches()
        gc.collect()
        self.trim()
        # what stays is not JAX's: do not drop its caches again until it grows past that
        self.limit = max(self.floor, self.rss_mb() + 100)
