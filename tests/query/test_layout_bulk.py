"""The bulk decoders the query uses for pages of cells agree with the one-value decoders."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import layout
from shared.errors import Permanent


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
def test_decode_ints_matches_decode_int(numbers: list[int]) -> None:
    cells = [layout.encode_int(n) for n in numbers]
    assert layout.decode_ints(cells).tolist() == [layout.decode_int(c) for c in cells]


@given(st.integers(1, 4).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.lists(st.floats(allow_nan=True), min_size=n, max_size=n), max_size=30))))
def test_decode_vectors_matches_decode_vector(case: tuple[int, list[list[float]]]) -> None:
    n, vectors = case
    cells = [layout.encode_vector(v) for v in vectors]
    expected = np.array([layout.decode_vector(c) for c in cells]).reshape(len(cells), n)
    np.testing.assert_array_equal(layout.decode_vectors(cells, n), expected)


def test_bulk_decoders_refuse_other_cells() -> None:
    with pytest.raises(Permanent):
        layout.decode_vectors([layout.encode_vector([1.0, 2.0, 3.0])], 2)
    with pytest.raises(Permanent):
        layout.decode_ints([layout.encode_vector([1.0])])
    with pytest.raises(Permanent):
        layout.decode_ints([layout.encode_text("1234567890")[:10]])
