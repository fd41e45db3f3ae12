"""README.md's settings table is the one generated from `Settings`, and every setting is documented."""

from __future__ import annotations

from cli.settings import BEGIN, END, README, markdown_table, settings_rows
from shared.config import Settings


def test_every_setting_has_a_meaning() -> None:
    undocumented = [row["setting"] for row in settings_rows() if not row["meaning"]]
    assert not undocumented, f"give these Settings fields a docstring under them: {undocumented}"


def test_readme_settings_table_is_current() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text
    in_readme = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")
    assert in_readme == markdown_table().strip("\n"), "README.md's settings table is stale: run `wideviews settings --write-readme`"
    # One row per field, each naming its environment variable as pydantic-settings reads it.
    for name in Settings.model_fields:
        assert f"| `{name}` | `WIDEVIEWS_{name.upper()}` |" in in_readme


def test_environment_variable_in_the_table_is_what_settings_read(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The table's claim checked on one field of each kind: the variable named there sets the field.
    monkeypatch.setenv("WIDEVIEWS_CHUNK_FEATURES", "77")
    monkeypatch.setenv("WIDEVIEWS_LOG_LEVEL", "ERROR")
    monkeypatch.setenv("WIDEVIEWS_EMR_CLUSTER_ID", "j-TEST")
    settings = Settings()
    assert (settings.chunk_features, settings.log_level, settings.emr_cluster_id) == (77, "ERROR", "j-TEST")
