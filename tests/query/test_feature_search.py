"""Prefix search over feature names and display symbols against a brute-force scan of the same lists."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.query.reads import FeatureIndex

words = st.text(alphabet="aAbBcC1-ß", min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(words, min_size=1, max_size=40, unique=True),
    symbols=st.lists(st.one_of(st.just(""), words), max_size=40),
    prefix=words,
)
def test_search_finds_exactly_the_features_whose_name_or_symbol_starts_with_the_prefix(names: list[str], symbols: list[str], prefix: str) -> None:
    symbols = (symbols + [""] * len(names))[: len(names)]
    index = FeatureIndex(names, symbols)
    found = index.search(prefix)
    folded = prefix.casefold()
    texts = {i: [t for t in (names[i], symbols[i]) if t] for i in range(len(names))}
    expected = {i for i, ts in texts.items() if any(t.casefold().startswith(folded) for t in ts)}
    assert len(found) == len(set(found)) and set(found) == expected
    # Exact matches (in any case) come before the other matches; an exact match in the same case first of all.
    exact = [any(t.casefold() == folded for t in texts[i]) for i in found]
    assert exact == sorted(exact, reverse=True)
    same_case = [i for i in found if prefix in texts[i]]
    if same_case:
        assert found[0] in same_case


def test_a_symbol_finds_its_feature_id_and_names_still_match() -> None:
    index = FeatureIndex(["ENSG0001", "ENSG0002", "CD3"], ["CD3E", "MS4A1", ""])
    assert [index.names[i] for i in index.search("cd3")] == ["CD3", "ENSG0001"]
    assert [index.names[i] for i in index.search("ms4")] == ["ENSG0002"]
    assert [index.names[i] for i in index.search("ENSG")] == ["ENSG0001", "ENSG0002"]
    assert FeatureIndex(["A"], []).symbols is None
