"""The review queue: rated and corrected answers become a validated chat dataset."""
import json

import pytest

from tunesmith.errors import APIError
from tunesmith.jobs import feedback
from tunesmith.jobs.db import Database
from tunesmith.jobs.files import FileStore

ASKED = [{"role": "user", "content": "Where is my card?"}]


@pytest.fixture
def store(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'f.db'}")
    return db, FileStore(db, tmp_path / "files", 1 << 20)


def test_accepted_items_become_a_dataset_with_the_corrected_or_good_answer(store):
    db, files = store
    good = feedback.add(db, {"model": "m", "messages": ASKED, "answer": "It is on its way.", "rating": 1})
    fixed = feedback.add(db, {"model": "m", "messages": ASKED, "answer": "Hello!", "rating": -1})
    bad = feedback.add(db, {"model": "m", "messages": ASKED, "answer": "No idea.", "rating": -1})
    ignored = feedback.add(db, {"model": "m", "messages": ASKED, "answer": "Hi.", "rating": 1})
    for _ in range(9):  # a dataset needs 10 valid examples
        extra = feedback.add(db, {"model": "m", "messages": ASKED, "answer": "Shipped today.", "rating": 1})
        feedback.update(db, extra["id"], {"status": "accepted"})
    feedback.update(db, good["id"], {"status": "accepted"})
    feedback.update(db, fixed["id"], {"status": "accepted", "correction": "Cards arrive in 3-5 working days."})
    feedback.update(db, bad["id"], {"status": "accepted"})  # bad and uncorrected: nothing to learn from
    feedback.update(db, ignored["id"], {"status": "rejected"})

    made = feedback.export(db, files)
    assert (made["examples"], made["skipped"]) == (11, 1)
    assert made["file"]["status"] == "processed"  # validated like an upload
    lines = [json.loads(line) for line in files.path(made["file"]["id"]).read_text().splitlines()]
    answers = [line["messages"][-1]["content"] for line in lines]
    assert "Cards arrive in 3-5 working days." in answers and "It is on its way." in answers
    assert "Hello!" not in answers and "No idea." not in answers and "Hi." not in answers
    assert {f["status"] for f in feedback.list_items(db, None) if f["dataset_file"]} == {"exported"}
    with pytest.raises(APIError):  # nothing accepted is left
        feedback.export(db, files)


@pytest.mark.parametrize("body, param", [({"messages": [], "answer": "a"}, "messages"),
                                         ({"messages": ASKED, "answer": " "}, "answer"),
                                         ({"messages": ASKED, "answer": "a", "rating": 5}, "rating")])
def test_bad_feedback_is_refused(store, body, param):
    db, _ = store
    with pytest.raises(APIError) as e:
        feedback.add(db, body)
    assert e.value.status == 400 and e.value.body()["error"]["param"] == param
