import json

from tunesmith import reports


def test_a_bundle_is_the_forms_given_side_by_side_and_nothing_else(tmp_path):
    files = reports.write_bundle(tmp_path / "out", "compare", data={"run": "é → ü", "n": 3}, markdown="# t\n")
    assert files == {"json": str(tmp_path / "out" / "compare.json"), "markdown": str(tmp_path / "out" / "compare.md")}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["compare.json", "compare.md"]  # no temp file left
    text = (tmp_path / "out" / "compare.json").read_text(encoding="utf-8")
    assert text == '{\n  "run": "é → ü",\n  "n": 3\n}\n' and json.loads(text)["n"] == 3
    assert (tmp_path / "out" / "compare.md").read_text() == "# t\n"  # text as given


def test_csv_rows_by_position_or_by_header_name(tmp_path):
    path = reports.write_csv(tmp_path / "t.csv", ["a", "b"], [[1, None], {"b": "x,y", "ignored": 0}])
    assert path.read_bytes() == b'a,b\r\n1,\r\n,"x,y"\r\n'  # what csv.writer writes to a file opened newline=""


def test_a_figure_becomes_png_bytes_and_is_closed():
    figure = reports.new_figure(2, 1)
    figure.add_subplot().plot([0, 1], [1, 0])
    png = reports.figure_png(figure)
    assert png.startswith(b"\x89PNG") and figure.number not in reports.pyplot().get_fignums()
