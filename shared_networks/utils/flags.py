"""The one parser of true/false options (bundle overrides and command-line flags)."""

from __future__ import annotations

import numpy as np

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "as_bool"]

TRUE_WORDS: tuple[str, ...] = ("true", "yes", "1")
FALSE_WORDS: tuple[str, ...] = ("false", "no", "0")


def as_bool(value: object, name: str) -> bool:
    """A true/false option as a bool.

    ``fire`` passes ``--flag false`` as the string ``"false"`` (truthy) and a bundle override may pass ``0``; so
    accepted are ``True``/``False`` (numpy's too), the integers ``0``/``1``, and the strings ``true``/``false``/
    ``yes``/``no``/``1``/``0`` in any case, with surrounding spaces.

    Args:
        value: the option's value.
        name: the option's name, for the error message.

    Raises:
        ValueError: naming ``name`` and ``value`` for anything else.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
    raise ValueError(f"{name} must be true or false (true/false, yes/no, 1/0), got {value!r}.")
