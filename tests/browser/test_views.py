"""The explorer's views beyond the 12 statistics, in headless chromium against the live stack: violins
drawn from the distributions view (widths proportional to its histogram, the box its quartiles and
1.5 IQR whiskers, both equal to numpy's on the uploaded CSV), a group's marker genes listed as the API
ranks them and added to the plot with one click, "Split by" offering exactly the crossed pairs the
dataset describes (`by=`; a pair not crossed is listed disabled, and a link asking one is refused
with a message, not a 404), and the embedding drawn from the density-aware sample (by default above
the cell-count threshold) and coloured by a gene's values at the sampled cells."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from cli.sample import sample_frames, write_upload_zip
from shared.config import Settings
from tests.browser.conftest import wait_idle, wait_until
from tests.browser.test_explorer import Demo, no_console_errors, open_page, plotted_dots, state  # noqa: F401 - the autouse fixture applies here too
from tests.e2e.reference import Reference, cli

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def crossed_demo(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo's synthetic data, 2,000 cells x 120 genes, with cell_type crossed with donor."""
    matrix, metadata = sample_frames(2000, 120, seed=8)
    manifest = {"groupings": ["cell_type", "donor", "region"], "crossed": [["cell_type", "donor"]], "embedding": "umap", "title": "explorer views"}
    path = write_upload_zip(tmp_path_factory.mktemp("views") / "views.zip", matrix, metadata, manifest)
    dataset_id = f"browser-views-{uuid.uuid4().hex[:8]}"
    done = cli(stack, "upload", str(path), "--dataset", dataset_id, "--wait", "--timeout", "900")
    assert done.returncode == 0, done.stderr
    return Demo(dataset_id, f"http://{stack.query_host}:{stack.query_port}", Reference.from_zip(path))


def api(demo: Demo, path: str, params: list[tuple[str, str]]) -> Any:
    with urllib.request.urlopen(demo.base + path + "?" + urllib.parse.urlencode(params), timeout=60) as answer:
        return json.loads(answer.read())


def numpy_box(values: np.ndarray) -> dict[str, float]:
    """Quartiles (linear) and the 1.5 IQR whiskers clipped to the data, as numpy computes them."""
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    low, high = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    return {"q1": q1, "median": median, "q3": q3, "lo": values[values >= low].min(), "hi": values[values <= high].max()}


def test_violins_are_the_distributions_views_histograms(browser: Any, crossed_demo: Demo, screenshot: Any) -> None:
    matrix = crossed_demo.ref.matrix
    gene = str((matrix != 0).sum().idxmax())  # the most often expressed gene: violins with a shape
    open_page(browser, crossed_demo, grouping="cell_type", g=[gene, "GENE00002"], color=gene, plot="violin", order="server")
    traces = browser.execute_script(
        "return document.getElementById('plot').data.map((d) => ({type: d.type, fill: d.fill || null, x: Array.from(d.x), y: d.y ? Array.from(d.y) : null,"
        " q1: d.q1 ? Array.from(d.q1) : null, median: d.median ? Array.from(d.median) : null, q3: d.q3 ? Array.from(d.q3) : null,"
        " lo: d.lowerfence ? Array.from(d.lowerfence) : null, hi: d.upperfence ? Array.from(d.upperfence) : null}))"
    )
    dist = api(crossed_demo, f"/v1/datasets/{crossed_demo.dataset_id}/distributions", [("grouping", "cell_type"), ("feature", gene)])
    entry = dist["features"][0]
    violins = [t for t in traces if t["type"] == "scatter" and t["fill"] == "toself"]
    with_values = [g for g, counts in enumerate(entry["hist"]) if sum(counts) > 0]
    assert len(violins) == len(with_values)
    edges = np.array(entry["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    labels = crossed_demo.ref.metadata["cell_type"].astype(str)
    column = crossed_demo.ref.matrix[gene]
    for violin, g in zip(violins, with_values):
        half = len(violin["x"]) // 2
        widths = np.array(violin["x"][:half]) - g  # groups as listed: violin g is centred on x = g
        counts = np.array(entry["hist"][g], dtype=float)
        # The right half's widths are the histogram's counts scaled to the group's widest bin.
        np.testing.assert_allclose(widths, 0.42 * counts / counts.max(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(violin["y"][:half], centres, rtol=1e-12)
        # And that histogram is numpy's of the group's non-zero values on the shared edges.
        values = column[labels == dist["groups"][g]].to_numpy()
        np.testing.assert_array_equal(counts, np.histogram(values[values != 0], bins=edges)[0])
    box = next(t for t in traces if t["type"] == "box")
    for i, group in enumerate(dist["groups"]):
        want = numpy_box(column[labels == group].to_numpy())
        for key in ("q1", "median", "q3", "lo", "hi"):
            assert box[key][i] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (group, key)
    text = browser.find_element(By.ID, "plot").text
    assert f"{gene} by cell_type" in text and "1.5 IQR" in text
    screenshot("violin")


def test_marker_genes_are_listed_and_added_with_one_click(browser: Any, crossed_demo: Demo, screenshot: Any) -> None:
    open_page(browser, crossed_demo, grouping="cell_type", g=["GENE00001"], order="server")
    assert browser.find_element(By.ID, "markers-panel").is_displayed()
    group = crossed_demo.ref.metadata["cell_type"].value_counts().index[0]
    Select(browser.find_element(By.ID, "marker-group")).select_by_value(group)
    wait_idle(browser)
    body = api(crossed_demo, f"/v1/datasets/{crossed_demo.dataset_id}/markers", [("grouping", "cell_type"), ("group", group), ("n", "10")])
    ranked = [m["feature"] for m in body["groups"][0]["markers"]]
    wait_until(browser, f"return document.querySelectorAll('#markers li').length === {len(ranked)}", what="the marker list")
    listed = browser.execute_script("return Array.from(document.querySelectorAll('#markers li')).map((li) => li.dataset.feature)")
    assert listed == ranked
    browser.find_element(By.CSS_SELECTOR, f"#markers li[data-feature='{ranked[0]}'] button").click()
    wait_until(browser, f"return window.wvExplorer.state.genes.includes({json.dumps(ranked[0])})")
    wait_idle(browser)
    browser.find_element(By.ID, "add-markers").click()
    wait_until(browser, "return window.wvExplorer.state.genes.length >= 10")
    wait_idle(browser)
    genes = state(browser)["genes"]
    assert genes[0] == "GENE00001" and set(ranked[:10]) <= set(genes)
    assert set(plotted_dots(browser)["x"]) == set(genes)
    # A marker is higher in its group than elsewhere: the mean the plot shows says so too.
    _, expected = crossed_demo.ref.group_stats("cell_type")
    assert expected["mean"][ranked[0]].idxmax() == group
    screenshot("markers")


def split_by_options(browser: Any) -> tuple[list[str], list[str]]:
    """The "Split by" choices: the values offered (enabled) and the ones listed as unavailable."""
    options = browser.execute_script("return Array.from(document.getElementById('by').options).map((o) => [o.value, o.textContent, o.disabled])")
    disabled = [value for value, text, off in options if off]
    assert all(text.endswith("(not crossed)") for value, text, off in options if off), options
    return [value for value, _, off in options if not off], disabled


def test_split_by_offers_only_the_crossed_pairs(browser: Any, crossed_demo: Demo, screenshot: Any) -> None:
    described = api(crossed_demo, f"/v1/datasets/{crossed_demo.dataset_id}", [])
    crossed = {(c["grouping"], c["by"]) for c in described["crossed"]}
    assert crossed == {("cell_type", "donor")}  # what the manifest asked for
    groupings = list(described["groupings"])
    open_page(browser, crossed_demo, grouping="cell_type", g=["GENE00026"], order="server")
    assert browser.find_element(By.ID, "by-label").is_displayed()
    for grouping in groupings:
        Select(browser.find_element(By.ID, "grouping")).select_by_value(grouping)
        wait_until(browser, f"return window.wvExplorer.state.grouping === '{grouping}'")
        wait_idle(browser)
        offered, unavailable = split_by_options(browser)
        assert offered == [""] + [b for a, b in sorted(crossed) if a == grouping], grouping
        assert sorted(unavailable) == sorted(g for g in groupings if g != grouping and (grouping, g) not in crossed), grouping
    # A link asking a pair that is not crossed: no split, a message naming the crossed pairs, no failed request.
    open_page(browser, crossed_demo, grouping="region", by="donor", g=["GENE00026"], order="server")
    assert state(browser)["by"] == ""
    status = browser.find_element(By.ID, "status").text
    assert "region is not crossed with donor" in status and "cell_type × donor" in status, status
    assert browser.execute_script("return window.wvExplorer.plotted.groups") == api(crossed_demo, f"/v1/datasets/{crossed_demo.dataset_id}/aggregates", [("grouping", "region"), ("features", "GENE00026")])["groups"]
    assert "by=" not in browser.current_url
    screenshot("not-crossed")


def test_crossed_grouping_splits_the_groups(browser: Any, crossed_demo: Demo, screenshot: Any) -> None:
    open_page(browser, crossed_demo, grouping="cell_type", by="donor", g=["GENE00026", "GENE00002"], order="server")
    assert browser.find_element(By.ID, "by-label").is_displayed()
    assert state(browser)["by"] == "donor"
    body = api(crossed_demo, f"/v1/datasets/{crossed_demo.dataset_id}/aggregates", [("grouping", "cell_type"), ("by", "donor"), ("features", "GENE00026,GENE00002"), ("stats", "mean,frac_expressing")])
    assert browser.execute_script("return window.wvExplorer.plotted.groups") == body["groups"]
    assert "groups of cell_type | donor" in browser.find_element(By.CSS_SELECTOR, "#dotplot canvas").get_attribute("aria-label")
    meta = crossed_demo.ref.metadata
    pairs = meta["cell_type"].astype(str) + " | " + meta["donor"].astype(str)
    for gene, group, colour in zip(*(plotted_dots(browser)[k] for k in ("x", "y", "colour"))):
        assert colour == body["stats"]["mean"][body["features"].index(gene)][body["groups"].index(group)]
        assert colour == pytest.approx(crossed_demo.ref.matrix.loc[(pairs == group).to_numpy(), gene].mean(), rel=1e-9)
    href = browser.find_element(By.ID, "download").get_attribute("href")
    assert "by=donor" in href
    screenshot("crossed")


def test_sample_is_the_default_above_the_threshold(browser: Any, crossed_demo: Demo, screenshot: Any) -> None:
    n_cells = len(crossed_demo.ref.matrix)
    n_sampled = api(crossed_demo, f"/v1/datasets/{crossed_demo.dataset_id}/embedding/sample", [("limit", "1")])["n_sampled"]
    assert n_sampled < n_cells
    # The page's threshold (250,000 cells) lowered for this 2,000-cell dataset, as a host page may set it.
    for threshold, sampled in ((n_cells, False), (n_cells - 1, True)):
        config = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": f"window.wvExplorerConfig = {{sampleAbove: {threshold}}};"})
        try:
            open_page(browser, crossed_demo, grouping="cell_type", g=["GENE00026"])
            wait_until(browser, "return window.wvExplorer.embedding && window.wvExplorer.embedding.kind === 'grouping'", what="the embedding")
            wait_idle(browser)
        finally:
            browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": config["identifier"]})
        drawn = browser.execute_script("const e = window.wvExplorer.embedding; return {n: e.n, sample: e.sample}")
        assert drawn == {"n": n_sampled if sampled else n_cells, "sample": sampled}, threshold
        assert Select(browser.find_element(By.ID, "points")).first_selected_option.get_attribute("value") == ("sample" if sampled else "all")
        title = browser.find_element(By.ID, "embedding-title").text
        expected = f"a density-aware sample of {n_sampled:,} of {n_cells:,} cells" if sampled else f"of {n_cells:,} cells"
        assert expected in title, title
    # Above the threshold, every cell on request: the sample stays drawn while the pages arrive.
    Select(browser.find_element(By.ID, "points")).select_by_value("all")
    wait_until(browser, f"return window.wvExplorer.embedding && window.wvExplorer.embedding.n === {n_cells}", what="every cell")
    wait_idle(browser)
    assert "points=all" in browser.current_url
    browser.execute_script("document.getElementById('embedding-panel').scrollIntoView()")
    screenshot("all-cells")


def test_embedding_from_the_density_aware_sample(browser: Any, crossed_demo: Demo, screenshot: Any) -> None:
    gene = "GENE00026"
    open_page(browser, crossed_demo, grouping="cell_type", g=[gene], color=gene, points="sample")
    wait_until(browser, f"return window.wvExplorer.embedding && window.wvExplorer.embedding.gene === '{gene}' && window.wvExplorer.embedding.sample")
    wait_idle(browser)
    positions: list[int] = []
    cursor = None
    while True:
        page = api(crossed_demo, f"/v1/datasets/{crossed_demo.dataset_id}/embedding/sample", [("limit", "500")] + ([("cursor", cursor)] if cursor else []))
        positions += page["positions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    drawn = browser.execute_script("const e = window.wvExplorer.embedding; return {n: e.n, values: Array.from(e.values)};")
    assert drawn["n"] == len(positions) == page["n_sampled"] < len(crossed_demo.ref.matrix)
    column = crossed_demo.ref.matrix[gene].to_numpy()
    np.testing.assert_array_equal(np.array(drawn["values"], dtype=np.float32), column[np.array(positions)].astype(np.float32))
    assert "density-aware sample" in browser.find_element(By.ID, "embedding-title").text
    browser.execute_script("document.getElementById('embedding-panel').scrollIntoView()")
    screenshot("sample")
