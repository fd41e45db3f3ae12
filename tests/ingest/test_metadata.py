"""Metadata as it comes, without a stack: integer columns offered as groupings and as numbers, blanks
kept as blanks, and an h5ad's var column of display symbols; pandas (or anndata) is the reference."""

from __future__ import annotations

import io
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from services.compute.views import numeric_values
from services.ingest.hdf5 import read_var_symbols
from services.ingest.split import align_metadata, plan_metadata
from shared.errors import BadUpload

CSV = """cell_id,leiden,n_genes,score,many,label
c0,10,3,0.5,0,B
c1,2,,,1,T
c2,2,7,1.25,2,T
c3,0,3,2,3,B
c4,10,9,,4,NK
c5,1,3,3,5,T
"""


def _plan(text: str, manifest: dict) -> tuple[pa.Table, list, list[str], pd.DataFrame]:
    """plan_metadata over the CSV as ingest reads it (pyarrow: blank integers are nulls), and pandas' frame of it."""
    raw = pacsv.read_csv(io.BytesIO(text.encode()), convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    ids = raw.column(0).combine_chunks()
    cells, groupings, _, numeric = plan_metadata(align_metadata(raw, ids, "metadata.csv", "matrix.csv"), ids, manifest, "metadata.csv")
    return cells, groupings, numeric, pd.read_csv(io.StringIO(text), index_col=0)


def test_integer_columns_without_a_manifest_are_groupings_and_numbers() -> None:
    cells, groupings, numeric, frame = _plan(CSV, {})
    by_name = {g.name: g for g in groupings}
    # leiden: 4 distinct integers; n_genes: 3 and a blank; many: 6 (all under 200): groupings, ordered numerically.
    assert by_name["leiden"].groups == ["0", "1", "2", "10"]
    assert by_name["leiden"].counts == [int((frame.leiden == v).sum()) for v in (0, 1, 2, 10)]
    assert by_name["n_genes"].groups == ["3", "7", "9", "(missing)"]
    assert "label" in by_name and "score" not in by_name
    # ... and numbers: compute reads the staged labels back as the integers, blanks as NaN.
    assert numeric == ["leiden", "n_genes", "score", "many"]
    for name in numeric:
        np.testing.assert_array_equal(numeric_values(cells.column(name)), frame[name].to_numpy(dtype=np.float64), err_msg=name)


def test_a_manifest_grouping_is_a_grouping_only_and_other_integers_numbers_only() -> None:
    cells, groupings, numeric, frame = _plan(CSV, {"groupings": ["leiden"]})
    assert [g.name for g in groupings] == ["leiden"]
    assert numeric == ["n_genes", "score", "many"]
    np.testing.assert_array_equal(numeric_values(cells.column("n_genes")), frame["n_genes"].to_numpy(dtype=np.float64))


def test_integer_columns_with_many_values_are_numbers_only() -> None:
    text = "cell_id,many\n" + "".join(f"c{i},{i * 3}\n" for i in range(250))
    raw = pacsv.read_csv(io.BytesIO(text.encode()))
    ids = raw.column(0).combine_chunks()
    cells, groupings, _, numeric = plan_metadata(raw, ids, {}, "metadata.csv")
    assert [g.name for g in groupings] == ["all"] and numeric == ["many"]
    np.testing.assert_array_equal(numeric_values(cells.column("many")), np.arange(250) * 3.0)


def _h5ad(path: Path, var: pd.DataFrame) -> Path:
    adata = anndata.AnnData(X=np.eye(len(var), dtype=np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(len(var))]), var=var)
    adata.write_h5ad(path)
    return path


def test_h5ad_var_symbols_named_or_found_by_their_usual_names(tmp_path: Path) -> None:
    ids = ["ENSG01", "ENSG02", "ENSG03", "ENSG04"]
    var = pd.DataFrame(
        {
            "gene_symbols": pd.Categorical(["CD3E", "MS4A1", "CD3E", None]),
            "feature_name": ["CD3E-f", "MS4A1-f", "X-f", "Y-f"],
            "n_cells": [1, 2, 3, 4],
        },
        index=ids,
    )
    path = _h5ad(tmp_path / "a.h5ad", var)
    with h5py.File(path, "r") as f:
        # Named in the manifest: that column; a missing symbol is "" (served as null).
        assert read_var_symbols(f["var"], "a.h5ad", ids, "gene_symbols") == ["CD3E", "MS4A1", "CD3E", ""]
        # Unnamed: the first of the usual columns, CELLxGENE's feature_name before gene_symbols.
        assert read_var_symbols(f["var"], "a.h5ad", ids) == list(var["feature_name"])
        assert read_var_symbols(f["var"], "a.h5ad", ids, None) == []
        with pytest.raises(BadUpload, match="'n_cells' .*not text"):
            read_var_symbols(f["var"], "a.h5ad", ids, "n_cells")
        with pytest.raises(BadUpload, match="'symbol' is not a var column"):
            read_var_symbols(f["var"], "a.h5ad", ids, "symbol")


def test_h5ad_symbols_equal_to_the_names_are_dropped(tmp_path: Path) -> None:
    ids = ["A", "B"]
    path = _h5ad(tmp_path / "b.h5ad", pd.DataFrame({"gene_name": ids}, index=ids))
    with h5py.File(path, "r") as f:
        assert read_var_symbols(f["var"], "b.h5ad", ids) == []
