"""An import raises the cyclic collector's threshold while it runs, and the process's is back after."""

from __future__ import annotations

import gc

import pytest

from producers.adapters import service


def test_the_threshold_is_raised_while_imports_run_and_restored_after_the_last() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with service._few_collections():
            assert gc.get_threshold() == (service._IMPORT_GC_THRESHOLD, 10, 10)
            with service._few_collections():  # a second import at the same time
                pass
            assert gc.get_threshold()[0] == service._IMPORT_GC_THRESHOLD  # the first still runs
        assert gc.get_threshold() == (700, 10, 10)
        with pytest.raises(RuntimeError), service._few_collections():
            raise RuntimeError("an import that fails")
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)
