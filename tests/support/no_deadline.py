"""pytest plugin (``-p tests.support.no_deadline``): hypothesis without per-example deadlines.

For test runs started from inside another test (``test_speedups`` re-runs modules with
``SWARMLOG_SPEEDUPS=0``): on a loaded machine a first example can exceed the 200 ms
default deadline while proving nothing about the code.
"""

from hypothesis import settings

settings.register_profile("no-deadline", deadline=None)
settings.load_profile("no-deadline")
