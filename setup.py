"""Build hook for the optional C speedups; all other metadata lives in pyproject.toml.

The extension is ``optional``: without a C compiler or Python headers the build skips it
and swarmlog runs its pure-Python path (``swarmlog.streams.speedups`` picks at import).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "swarmlog.streams._speedups",
            sources=["streams/_speedups.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        )
    ]
)
