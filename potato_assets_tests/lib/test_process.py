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


def test_the_definitions_are_built_once_per_process():
    out = run_python(
        """
        import gc
        from potato_assets.definitions import defs
        first = defs()
        frozen = gc.get_freeze_count()
        print(defs() is first, gc.get_freeze_count() == frozen)
        """
    )
    assert out == "True True"


def test_preloading_the_model_libraries_leaves_nothing_for_the_fits_to_import():
    # The gold asset preloads MODEL_LIBRARIES (frozen) before the study's fits import them
    # lazily: a fit that needs another library shows up here, not as a slower run.
    out = run_python(
        """
        import sys
        import numpy as np, pandas as pd
        from potato_assets.defs.gold.assets import MODEL_LIBRARIES
        from potato_assets.lib.process import preload
        from potato_assets.study.models import MODELS
        from potato_assets.study.schema import GROUP_COL, OUTCOME, PREDICTORS, WEEK_COL
        rng = np.random.default_rng(0)
        n_subjects, n_weeks = 30, 8
        frame = pd.DataFrame({
            GROUP_COL: np.repeat(np.arange(n_subjects), n_weeks),
            WEEK_COL: np.tile(np.arange(1, n_weeks + 1), n_subjects),
        })
        fiber, kcal, beans, potato = PREDICTORS
        frame[fiber], frame[kcal] = rng.normal(30, 5, len(frame)), rng.normal(14, 2, len(frame))
        frame[beans], frame[potato] = rng.integers(0, 2, len(frame)), rng.integers(0, 2, len(frame))
        frame[OUTCOME] = frame[list(PREDICTORS)].sum(axis=1) * 0.1 + rng.normal(size=len(frame))
        preload(*MODEL_LIBRARIES)
        before = set(sys.modules)
        from potato_assets.study.sufficient import panel_from_buckets
        panel = panel_from_buckets([frame])
        for spec in MODELS:
            spec.fit_panel(panel)  # what fit_models runs
        heavy = ("statsmodels", "linearmodels", "scipy", "patsy")
        print(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in heavy))
        """
    )
    assert out == "[]"


def test_release_hands_arrows_unused_pages_back(monkeypatch):
    import pyarrow as pa

    from potato_assets.lib import process

    released: list[str] = []

    class Pool:
        def release_unused(self) -> None:
            released.append("arrow")

    monkeypatch.setattr(pa, "default_memory_pool", Pool)
    process.release_freed_memory()
    assert released == ["arrow"]
