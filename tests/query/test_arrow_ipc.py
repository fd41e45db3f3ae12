"""The hand-written Arrow IPC stream (the Lambda package has no pyarrow) reads back in pyarrow exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from services.query.arrow_ipc import encode_stream

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@st.composite
def tables(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(0, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = draw(st.lists(texts, min_size=1, max_size=5))
    return {
        "id": [draw(texts) + str(i) for i in range(n)],
        "position": rng.integers(-(2**31), 2**31 - 1, size=n, dtype=np.int32),
        "count": rng.integers(-(2**62), 2**62, size=n, dtype=np.int64),
        "group": [groups[i] for i in rng.integers(0, len(groups), size=n)],
        "x": rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, size=n),
        "value": rng.normal(size=n).astype(np.float32),
        # A blank metadata number is NaN in the reader and null in Arrow.
        "score": np.where(rng.random(n) < draw(st.sampled_from([0.0, 0.3, 1.0])), np.nan, rng.normal(size=n)),
    }


@settings(max_examples=60, deadline=None)
@given(table=tables(), metadata=st.dictionaries(texts, texts, max_size=3))
def test_streams_read_back_in_pyarrow_value_for_value(table: dict[str, object], metadata: dict[str, str]) -> None:
    read = pa.ipc.open_stream(encode_stream(table, metadata)).read_all()
    read.validate(full=True)
    assert read.column_names == list(table)
    for name, values in table.items():
        got = read.column(name)
        if isinstance(values, list):
            assert got.to_pylist() == values, name
        else:
            assert got.type == pa.from_numpy_dtype(values.dtype), name
            blank = np.isnan(values) if values.dtype.kind == "f" else np.zeros(len(values), bool)
            assert got.null_count == int(blank.sum()), name
            assert got.to_pylist() == [None if b else v for b, v in zip(blank, values.tolist())], name
    assert {k.decode(): v.decode() for k, v in (read.schema.metadata or {}).items()} == metadata


def test_repeated_text_is_dictionary_encoded_and_ids_are_not() -> None:
    n = 1000
    stream = encode_stream({"cell_id": [f"c{i}" for i in range(n)], "cell_type": [("B", "T cell")[i % 2] for i in range(n)]})
    schema = pa.ipc.open_stream(stream).schema
    assert schema.field("cell_type").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("cell_id").type == pa.string()
