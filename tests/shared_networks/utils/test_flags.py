"""The one true/false parser (:func:`shared_networks.utils.flags.as_bool`)."""

from __future__ import annotations

import numpy as np
import pytest

from shared_networks.utils.flags import as_bool


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        (np.bool_(True), True),
        (1, True),
        (0, False),
        (np.int64(1), True),
        ("true", True),
        ("True", True),
        (" TRUE ", True),
        ("yes", True),
        ("Yes", True),
        ("1", True),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("NO", False),
        ("0", False),
    ],
)
def test_accepted_words(value: object, expected: bool) -> None:
    assert as_bool(value, "resume") is expected


@pytest.mark.parametrize("value", ["maybe", "", "on", "off", "none", 2, -1, 0.5, 1.0, None, [True]])
def test_anything_else_names_the_option_and_the_value(value: object) -> None:
    with pytest.raises(ValueError, match=rf"read_data must be true or false .*got {value!r}".replace("[", r"\[")):
        as_bool(value, "read_data")
