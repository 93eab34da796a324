"""Small argument checks shared by the fedcore modules."""

import numpy as np

__all__ = ["is_int"]


def is_int(value: object) -> bool:
    """A Python or numpy integer; bool is an int subclass but never a sensible count."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
