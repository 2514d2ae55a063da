"""The lifecycle group ends the suite: whatever the modules are called, stopping the platform comes last."""

from __future__ import annotations


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name == "test_platform_down.py")  # stable: the rest keep their order
