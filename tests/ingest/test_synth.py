"""`wideviews synth`: the streamed ZIP holds the numbers the generator says it holds, read back by pandas."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from cli.synth import SynthData, SynthSpec, write_synth_zip


def test_synth_zip_matches_its_blocks_and_metadata(tmp_path: Path) -> None:
    # Blocks of 3 rows: the ZIP is assembled from many row blocks, as for a large upload.
    data = SynthData(SynthSpec(n_cells=301, n_features=53, density=0.15, n_groups=7, seed=5, block_entries=160))
    path = write_synth_zip(data, tmp_path / "s.zip")
    with zipfile.ZipFile(path) as archive:
        matrix = pd.read_csv(archive.open("matrix.csv"), index_col=0)
        metadata = pd.read_csv(archive.open("metadata.csv"), index_col=0)
        manifest = json.loads(archive.read("manifest.json"))
    expected = np.vstack([data.block_values(start, n) for start, n in data.blocks()])
    assert matrix.shape == (301, 53)
    assert list(matrix.columns) == data.spec.feature_names()
    assert list(matrix.index) == [data.spec.cell_id(i) for i in range(301)]
    np.testing.assert_array_equal(matrix.to_numpy(), expected)
    assert 0.10 < np.count_nonzero(expected) / expected.size < 0.20
    # Metadata rows in another order, one per cell; 7 uneven cell types, donors, an embedding.
    assert list(metadata.index) != list(matrix.index) and sorted(metadata.index) == list(matrix.index)
    sizes = metadata["cell_type"].value_counts()
    assert len(sizes) == 7 and sizes.max() > 2 * sizes.min()
    assert metadata["donor"].nunique() == 8
    assert metadata[["umap_1", "umap_2"]].notna().all().all()
    assert manifest["groupings"] == ["cell_type", "donor"] and manifest["embedding"] == "umap"


def test_synth_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    spec = SynthSpec(n_cells=40, n_features=11, seed=9, block_entries=33)
    a = SynthData(spec)
    b = SynthData(spec)
    other = SynthData(SynthSpec(n_cells=40, n_features=11, seed=10, block_entries=33))
    assert len(list(a.blocks())) == 14  # 3 rows a block
    values = [np.vstack([d.block_values(s, n) for s, n in d.blocks()]) for d in (a, b, other)]
    np.testing.assert_array_equal(values[0], values[1])
    assert not np.array_equal(values[0], values[2])
    assert a.matrix_csv_block(3, 3) == b.matrix_csv_block(3, 3)


def test_synth_command_writes_an_upload_zip(tmp_path: Path) -> None:
    out = tmp_path / "cli.zip"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "synth", "--cells", "120", "--features", "30", "--density", "0.3", "--groups", "4", "--out", str(out), "--values", "counts"],
        capture_output=True, text=True, check=True,
    )
    assert "120 cells x 30 features" in done.stderr
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "matrix.csv", "metadata.csv"]
        matrix = pd.read_csv(archive.open("matrix.csv"), index_col=0)
    assert matrix.shape == (120, 30)
    values = matrix.to_numpy()
    assert np.array_equal(values, np.round(values)) and values.max() >= 2  # integer counts
