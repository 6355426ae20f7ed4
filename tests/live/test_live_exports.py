"""The packages' lazily imported public names all resolve (a renamed module must not leave one dangling)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("package", ["tradebot.live", "tradebot.live.adapters.fyers"])
def test_every_public_name_resolves(package):
    import importlib

    pkg = importlib.import_module(package)
    assert pkg.__all__
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(pkg, "nope")
