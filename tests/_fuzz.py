"""What every bad-input fuzz file asserts: one case type and one check, shared."""

from collections.abc import Callable
from typing import NamedTuple

import pytest

from gated_jax._validate import describe


class Bad(NamedTuple):
    """One bad-input category: the call, the argument it must name, how its value shows."""

    category: str
    call: Callable[[], object]
    name: str
    value: str

    def __repr__(self) -> str:
        return self.category


def assert_names_the_argument(case: Bad) -> None:
    """``case.call()`` raises a ValueError/TypeError from gated_jax naming the argument."""
    with pytest.raises((ValueError, TypeError)) as info:
        case.call()
    message = str(info.value)
    assert f"`{case.name}` (=" in message, message
    assert case.value in message, message
    assert "gated_jax" in str(info.traceback[-1].path), info.traceback[-1]


def assert_refused(call: Callable[[], object], name: str, shown: object) -> str:
    """``call()`` raises, from inside gated_jax, one line ``` `name` (=shown) must be ... ```."""
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(f"`{name}` (={describe(shown)}) must be "), msg
    assert "\n" not in msg
    tb = info.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert "/gated_jax/" in tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_filename
    return msg
