"""The README's promises, checked: its input table says what engine/load.py reads, and its
"bring your own data" example works as written on a MovieLens-shaped export."""

from __future__ import annotations

import json
import re

from conftest import ROOT
from engine import load
from test_own_data import movielens_export

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section_after(marker: str) -> str:
    """The README's text from the comment naming marker to the next blank line after its block."""
    start = README.index(f"<!-- {marker}:")
    return README[start:]


def test_the_schema_table_lists_each_files_required_and_optional_columns():
    table = section_after("schema").split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    found = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        name = re.match(r"`([^`]+)`", cells[0]).group(1)
        found[name] = (
            re.findall(r"`([^`]+)`", cells[1]),
            [column for column in re.findall(r"`([^`]+)`", cells[2]) if column != "play"],
            "(optional file)" in cells[0],
        )
    expected = {
        spec.file: (
            list(spec.needed),
            [column for column in spec.columns if column not in spec.needed],
            spec.optional_file,
        )
        for spec in load.SPECS
    }
    assert found == expected


def test_the_bring_your_own_data_example_runs_as_written(cli, tmp_path, monkeypatch):
    example = section_after("example")
    toml = re.search(r"```toml\n(.*?)```", example, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", example, re.S).group(1).strip()
    folder = re.search(r'data_dir = "([^"]+)"', toml).group(1)
    movielens_export(tmp_path / folder)
    (tmp_path / "recs.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    for command in commands.split(" && "):
        words = command.split()
        assert words[0] == "recs"
        done = cli(*words[1:], "--json") if words[1] == "recommend" else cli(*words[1:])
        assert done.exit_code == 0, (command, done.stdout, done.stderr)
    answer = json.loads(done.stdout)
    genre = commands.split("--genre ")[1].split()[0]
    assert len(answer["items"]) == 5 and not answer["fallback_used"]
    assert all(genre in item["genre"].lower().split("|") for item in answer["items"])
    assert {item["source"] for item in answer["items"]} == {"personalised"}
