"""The public facade exposes every documented name, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import swarmlog


@pytest.mark.parametrize("name", sorted(n for n in swarmlog.__all__ if n != "__version__"))
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(swarmlog, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        swarmlog.does_not_exist  # noqa: B018


def test_import_swarmlog_does_not_load_kafka_clients() -> None:
    code = "import sys, swarmlog; print('confluent_kafka' in sys.modules, 'faust' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
