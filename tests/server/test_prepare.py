"""`data clean` and `data split` on uploaded files: outputs become new files."""
import json

import pytest

from tests.conftest import chat_records
from tunesmith.errors import APIError
from tunesmith.jobs.db import Database
from tunesmith.jobs.files import FileStore
from tunesmith.web import prepare


@pytest.fixture
def files(tmp_path):
    return FileStore(Database(f"sqlite:///{tmp_path / 'p.db'}"), tmp_path / "files", 1 << 20)


def stored(files, records, name="support.jsonl"):
    return files.save_bytes(name, "".join(json.dumps(r) + "\n" for r in records).encode())


def test_clean_files_the_cleaned_data_and_its_rejects(files):
    records = chat_records(30)
    records[3]["messages"][0]["content"] = "mail me at jo@example.com please"
    records.append(records[5])  # an exact duplicate
    result = prepare.clean(files, stored(files, records)["id"], {"pii": "redact", "dedup_near": False})
    assert result["file"]["filename"] == "support.clean.jsonl" and result["file"]["status"] == "processed"
    assert (result["card"]["kept"], result["card"]["removed"]) == (30, 1)
    rejects = [json.loads(line) for line in files.path(result["rejects_file"]["id"]).read_text().splitlines()]
    assert {r["action"] for r in rejects} == {"removed", "modified"}  # the duplicate, and the redacted e-mail
    assert "jo@example.com" not in files.path(result["file"]["id"]).read_text()


def test_unknown_options_and_bad_ratios_are_400s_naming_them(files):
    file_id = stored(files, chat_records(30))["id"]
    with pytest.raises(APIError) as e:
        prepare.clean(files, file_id, {"pii": "redact", "dedupe": True})
    assert "dedupe" in e.value.body()["error"]["message"]
    with pytest.raises(APIError) as e:
        prepare.split(files, file_id, {"ratios": "0.8,0.8"})
    assert "ratios" in e.value.body()["error"]["message"]


def test_split_files_each_split_and_small_validation_splits_are_valid(files):
    result = prepare.split(files, stored(files, chat_records(40))["id"], {"ratios": "0.8,0.1,0.1", "seed": 0})
    assert list(result["files"]) == ["train", "validation", "test"]
    assert [f["status"] for f in result["files"].values()] == ["processed"] * 3
    assert sum(files.path(f["id"]).read_text().count("\n") for f in result["files"].values()) == 40
