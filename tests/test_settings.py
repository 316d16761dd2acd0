"""Settings from recs.toml (--config, $RECS_CONFIG or the current folder) and
`recs params`: each value and where it came from, flag over environment over
file over default."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pytest

import engine
from engine.config import PLAIN


def params_of(result) -> dict:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def folder(tmp_path, tiny_dir, monkeypatch):
    """The current folder: the tiny example in ./data, nothing else."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECS_CONFIG", raising=False)
    return tmp_path


def test_without_a_file_every_setting_is_its_default(cli, folder):
    shown = params_of(cli("params", "--json"))
    assert shown["config"] == {"value": None, "source": "none"}
    assert shown["db"] == {"value": "recs.db", "source": "default"}
    assert shown["data_dir"] == {"value": "data", "source": "default"}
    assert shown["max_neighbors"] == {"value": 20, "source": "default"}
    settings = {"config", "db", "data_dir", "delimiter", "encoding", "tune_sample"}
    assert set(shown) == settings | set(engine.ModelParams().as_dict()) | {"tuning"}
    assert shown["tuning"]["value"] == "tune (on every event up to 500,000, above on a sample of 100,000): no tuned parameters to reuse"


def test_flag_beats_environment_beats_file_beats_default(cli, folder, monkeypatch):
    (folder / "recs.toml").write_text('db = "from_file.db"\ndata_dir = "data"\nencoding = "utf-8"\n')
    monkeypatch.setenv("RECS_DB", "from_env.db")
    shown = params_of(cli("--encoding", "latin-1", "params", "--json"))
    assert shown["config"] == {"value": "recs.toml", "source": "current folder"}
    assert shown["db"] == {"value": "from_env.db", "source": "environment RECS_DB"}
    assert shown["data_dir"] == {"value": "data", "source": "file recs.toml"}
    assert shown["encoding"] == {"value": "latin-1", "source": "flag --encoding"}
    assert shown["delimiter"] == {"value": None, "source": "default"}
    shown = params_of(cli("--db", "from_flag.db", "params", "--json"))
    assert shown["db"] == {"value": "from_flag.db", "source": "flag --db"}


def test_config_flag_and_environment_name_the_file(cli, folder, monkeypatch):
    (folder / "a.toml").write_text('db = "a.db"\n')
    (folder / "b.toml").write_text('db = "b.db"\n')
    monkeypatch.setenv("RECS_CONFIG", str(folder / "b.toml"))
    assert params_of(cli("params", "--json"))["config"]["source"] == "environment RECS_CONFIG"
    assert params_of(cli("params", "--json"))["db"]["value"] == "b.db"
    shown = params_of(cli("--config", folder / "a.toml", "params", "--json"))
    assert shown["db"] == {"value": "a.db", "source": f"file {folder / 'a.toml'}"}
    assert shown["config"]["source"] == "flag --config"


def test_model_parameters_of_the_file_pin_the_build(cli, folder):
    (folder / "recs.toml").write_text("[model]\nmax_neighbors = 3\npopularity_prior = 0\n")
    result = cli("popular", "--k", "1", "--json")
    assert result.exit_code == 0, result.stderr
    con = duckdb.connect(str(folder / "recs.db"), read_only=True)
    stored = con.execute("select max_neighbors, popularity_prior from model_params").fetchone()
    source = con.execute("select value from build_info where key = 'params_source'").fetchone()[0]
    assert stored == (3, 0.0) and source == "pinned"
    shown = params_of(cli("params", "--param", "max_neighbors=5", "--json"))
    assert shown["max_neighbors"] == {"value": 5, "source": "flag --param"}
    assert shown["popularity_prior"] == {"value": 0.0, "source": "file recs.toml"}
    assert shown["heavy_threshold"] == {"value": 0.8, "source": "default"}


def test_a_model_parameter_from_the_environment_comes_between_flag_and_file(cli, folder, monkeypatch):
    (folder / "recs.toml").write_text("[model]\nmax_neighbors = 3\npopularity_prior = 0\n")
    monkeypatch.setenv("RECS_PARAM_MAX_NEIGHBORS", "7")
    shown = params_of(cli("params", "--json"))
    assert shown["max_neighbors"] == {"value": 7, "source": "environment RECS_PARAM_MAX_NEIGHBORS"}
    assert shown["popularity_prior"] == {"value": 0.0, "source": "file recs.toml"}
    assert params_of(cli("params", "--param", "max_neighbors=5", "--json"))["max_neighbors"]["source"] == "flag --param"
    result = cli("popular", "--k", "1", "--json")
    assert result.exit_code == 0, result.stderr
    con = duckdb.connect(str(folder / "recs.db"), read_only=True)
    assert con.execute("select max_neighbors from model_params").fetchone() == (7,)
    con.close()
    monkeypatch.setenv("RECS_PARAM_MAX_NEIGHBOURS", "7")
    result = cli("params")
    assert result.exit_code == 1 and "unknown model parameter in the environment: RECS_PARAM_MAX_NEIGHBOURS" in result.stderr
    monkeypatch.delenv("RECS_PARAM_MAX_NEIGHBOURS")
    monkeypatch.setenv("RECS_PARAM_MAX_NEIGHBORS", "many")
    result = cli("params")
    assert result.exit_code == 1 and "RECS_PARAM_" in result.stderr and "max_neighbors" in result.stderr
    assert "Traceback" not in result.stderr


def test_unpinned_parameters_show_what_recs_db_was_built_with(cli, folder):
    engine.build(folder / "recs.db", folder / "data", PLAIN)
    shown = params_of(cli("params", "--json"))
    assert shown["popularity_prior"] == {"value": 0.0, "source": "recs.db (pinned)"}


def test_params_as_csv_and_as_a_table(cli, folder):
    result = cli("params", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[1] == {"name": "db", "value": "recs.db", "source": "default"}
    table = cli("params")
    assert table.exit_code == 0 and "max_neighbors" in table.stdout and "default" in table.stdout
    assert table.stdout.splitlines()[-1].startswith("The next build's tuning: tune (on every event")


@pytest.mark.parametrize(
    "text, message",
    [
        ('db = recs.db\n', "Error: recs.toml, line 1: Invalid value (column 6)"),
        ('colour = "blue"\n', "Error: recs.toml: unknown setting 'colour'; known: columns, data_dir, db, delimiter, encoding, encodings, files, model"),
        ("db = 3\n", "Error: recs.toml: db must be text in quotes, not 3"),
        ("[model]\nmax_neighbors = -1\n", "Error: recs.toml, [model]: model parameter max_neighbors must be from 0 to 1000, not -1"),
        ("[model]\nmax_neighbours = 3\n", "Error: recs.toml, [model]: unknown model parameter 'max_neighbours'; known: "),
    ],
)
def test_a_bad_settings_file_is_one_error_line_naming_file_and_line(cli, folder, text, message):
    (folder / "recs.toml").write_text(text)
    result = cli("popular")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert not (folder / "recs.db").exists()


def test_a_named_file_that_is_missing_is_an_error(cli, folder, monkeypatch):
    result = cli("--config", "nope.toml", "popular")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: settings file not found: nope.toml (named by --config)"
    monkeypatch.setenv("RECS_CONFIG", "gone.toml")
    assert cli("popular").stderr.strip() == "Error: settings file not found: gone.toml (named by RECS_CONFIG)"


def test_the_files_delimiter_and_encoding_read_the_csvs(cli, folder):
    items = (folder / "data" / "items.csv").read_text().replace(",", ";")
    (folder / "data" / "items.csv").write_bytes(items.replace("Drama Series A", "Drâma Série A").encode("cp1252"))
    (folder / "recs.toml").write_text('encoding = "cp1252"\n')
    result = cli("popular", "--k", "4", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Drâma Série A" in {item["title"] for item in json.loads(result.stdout)["items"]}
