"""Suite-wide settings.

Hypothesis runs derandomized, with no example database and its caches in a temporary folder,
so CI sees the same examples every run and nothing is written into the source tree. A longer
random run is opt-in:

    NEUROMORPH_HYPOTHESIS=random python -m pytest tests/test_properties.py tests/test_struct_fuzz.py

(`--hypothesis-seed N` repeats a random run; docs/testing.md.)
"""
import atexit
import os
import shutil
import tempfile

from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps caches (e.g. .hypothesis/constants) under the working directory: put them in
# a temporary folder instead, unless the caller chose a place.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    _HOME = tempfile.mkdtemp(prefix="nm-hypothesis-")
    set_hypothesis_home_dir(_HOME)
    atexit.register(shutil.rmtree, _HOME, True)

RANDOM = os.environ.get("NEUROMORPH_HYPOTHESIS", "") == "random"
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("random", derandomize=False, database=None, deadline=None,
                          print_blob=True)
settings.load_profile("random" if RANDOM else "ci")


def examples(n: int) -> int:
    """A property test's example count: n in CI, 10 n in the opt-in random run."""
    return 10 * n if RANDOM else n
