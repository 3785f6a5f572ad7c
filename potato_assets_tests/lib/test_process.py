"""gc.freeze after heavy imports (lib/process.py): frozen when modules were loaded, not otherwise."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_a_lazy_import_that_loads_modules_freezes_them_and_a_repeat_freezes_nothing():
    out = run_python(
        """
        import gc
        from potato_assets.lib.process import long_lived_imports
        start = gc.get_freeze_count()
        with long_lived_imports():
            import decimal, fractions, statistics
        after_first = gc.get_freeze_count()
        scratch = [[i] for i in range(1000)]  # work between imports is not frozen
        with long_lived_imports():
            import statistics
        print(start, after_first > start + 1000, gc.get_freeze_count() == after_first)
        """
    )
    assert out == "0 True True"


def test_loading_the_definitions_freezes_them_and_exit_freezes_the_rest():
    # atexit runs the last-registered handler first: this check, registered before the
    # definitions register their exit freeze, sees the heap after it
    out = run_python(
        """
        import atexit, gc
        state = {}
        atexit.register(lambda: print(state["loaded"] > 100_000, gc.get_freeze_count() - state["loaded"] > 49_000))
        from potato_assets.definitions import defs
        defs()
        state["loaded"] = gc.get_freeze_count()
        garbage = [[i] for i in range(50_000)]
        """
    )
    assert out == "True True"
