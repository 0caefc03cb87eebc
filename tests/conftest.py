"""Suite-wide settings. Hypothesis: derandomized, no example database (nothing is written into
the source tree) unless NEUROMORPH_HYPOTHESIS=random asks for a longer random run:

    NEUROMORPH_HYPOTHESIS=random python -m pytest tests/test_properties.py tests/test_struct_fuzz.py

(`--hypothesis-seed N` repeats a random run; docs/testing.md.)
"""
import os

from hypothesis import settings

RANDOM = os.environ.get("NEUROMORPH_HYPOTHESIS", "") == "random"
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("random", derandomize=False, database=None, deadline=None,
                          print_blob=True)
settings.load_profile("random" if RANDOM else "ci")


def examples(n: int) -> int:
    """A property test's example count: n in CI, 10 n in the opt-in random run."""
    return 10 * n if RANDOM else n
