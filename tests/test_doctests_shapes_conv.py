"""The docstring examples of gated_jax.shapes and gated_jax.conv run and print what they say."""

from __future__ import annotations

import doctest

import pytest

from gated_jax import conv, shapes


@pytest.mark.parametrize("module", [shapes, conv], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
