"""Crossed groupings at ingest, without a stack: the manifest's pairs become one grouping of the
non-empty combinations (pandas' groupby is the reference), and bad pairs are rejected by name."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pyarrow.csv as pacsv
import pytest

from services.ingest.split import UploadArchive, align_metadata, plan_crossed, plan_metadata, read_manifest
from shared.errors import BadUpload

CSV = """cell_id,cell_type,donor
c0,B,d1
c1,T,d2
c2,T,d2
c3,B,d1
c4,NK,d1
c5,T,d1
"""


def _groupings() -> tuple:
    raw = pacsv.read_csv(io.BytesIO(CSV.encode()), convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    ids = raw.column(0).combine_chunks()
    cells, groupings, _, _ = plan_metadata(align_metadata(raw, ids, "metadata.csv", "matrix.csv"), ids, {"groupings": ["cell_type", "donor"]}, "metadata.csv")
    return cells, groupings


def test_crossed_grouping_holds_the_non_empty_combinations_with_their_sizes() -> None:
    cells, groupings = _groupings()
    (crossed,) = plan_crossed(cells, groupings, [["cell_type", "donor"]])
    frame = pd.read_csv(io.StringIO(CSV), index_col=0)
    sizes = frame.groupby(["cell_type", "donor"]).size()
    assert crossed.name == "cell_type × donor" and crossed.crossed == ["cell_type", "donor"]
    assert crossed.view == "stats_cell_type_by_donor" and crossed.dist_view == "dist_cell_type_by_donor"
    assert crossed.groups == [f"{a} | {b}" for a, b in sizes.index]  # only the combinations that occur
    assert crossed.counts == sizes.tolist()
    by_name = {g.name: g for g in groupings}
    assert [(by_name["cell_type"].groups[a], by_name["donor"].groups[b]) for a, b in crossed.pairs] == list(sizes.index)


def test_crossing_an_unknown_grouping_names_it() -> None:
    cells, groupings = _groupings()
    with pytest.raises(BadUpload, match="crossed grouping 'region' is not a grouping"):
        plan_crossed(cells, groupings, [["cell_type", "region"]])


@pytest.mark.parametrize("crossed", [["cell_type", "donor"], [["cell_type"]], [["donor", "donor"]], "cell_type", [[1, 2]]])
def test_a_malformed_crossed_entry_is_rejected(crossed: object) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("matrix.csv", "cell_id,g1\nc0,1\n")
        archive.writestr("manifest.json", json.dumps({"crossed": crossed}))
    buffer.seek(0)
    archive = zipfile.ZipFile(buffer)
    upload = UploadArchive(archive, {"manifest.json": archive.getinfo("manifest.json")})
    with pytest.raises(BadUpload, match="'crossed' must be a list of pairs"):
        read_manifest(upload)
