"""Hypothesis budgets for the fuzz tests: small by default, larger with ``VISLEARN_FUZZ_EXAMPLES=N``.

The tests pass with the default budget in any environment; the variable only buys more examples
(e.g. ``VISLEARN_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_data.py`` for a night run).
"""

import os

from hypothesis import HealthCheck, settings

DEFAULT_EXAMPLES = 20


def examples(default: int = DEFAULT_EXAMPLES) -> int:
    """The example budget: ``VISLEARN_FUZZ_EXAMPLES`` when set to a positive integer, else ``default``."""
    try:
        n = int(os.environ.get("VISLEARN_FUZZ_EXAMPLES", ""))
    except ValueError:
        return default
    return n if n > 0 else default


def fuzz_settings(default: int = DEFAULT_EXAMPLES) -> settings:
    """Bounded, deadline-free, derandomized (same examples every run) hypothesis settings."""
    return settings(max_examples=examples(default), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
