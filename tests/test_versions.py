"""Which version is newer: lanes refuse older over newer, and supersede older waiting ones, by this."""

from __future__ import annotations

import pytest

from prodline.config.versions import is_older


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9.2", "1.10.0"),
        ("2.0.0-rc.1", "2.0.0"),
        ("2.0.0-rc.2", "2.0.0-rc.10"),
        ("2.0.0-alpha", "2.0.0-beta"),
        ("v1.0", "v1.1"),
        ("1.0.20261202120616", "1.0.20261202120625"),
        ("7.0.0", "7.0.1"),
    ],
)
def test_numbered_versions_are_ordered_as_semver_orders_them(older, newer):
    assert is_older(older, newer) and not is_older(newer, older)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("3f2a9c1b7d0e", "91d6e7afd81c"),  # commit SHAs (CI releases by SHA): neither is older
        ("main-1234", "1.0.0"),
        ("1.0.0+build.2", "1.0.0+build.1"),  # build metadata does not order
        ("1.0.0", "1.0.0"),
    ],
)
def test_versions_that_say_nothing_about_order_are_never_called_older(a, b):
    assert not is_older(a, b) and not is_older(b, a)
