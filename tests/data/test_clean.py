"""A file with planted defects and a known answer key: every defect is caught by the right step,
no clean record is touched, and input = kept + removed."""
import json

from tunesmith.config import CleanConfig as CleanOptions
from tunesmith.data.clean import clean_file

TOPICS = [
    "How long does international shipping to Canada usually take",
    "Can I change the delivery address after my order has shipped",
    "What is the warranty period for the cordless drill",
    "Why was my payment declined at checkout yesterday",
    "Do you offer student discounts on annual subscriptions",
    "The mobile app crashes whenever I open the settings page",
    "Is the blue winter jacket available in extra large",
    "How can I export my invoices as a spreadsheet",
    "My loyalty points did not appear after the last purchase",
    "Which plan includes priority phone support",
    "Can I pause my membership during the summer months",
    "The replacement charger stopped working after two days",
    "Where do I find the serial number on the router",
    "Are the ceramic pans safe to use in the dishwasher",
    "I was charged twice for the same concert ticket",
    "How do I add a second driver to my rental booking",
]


def chat(question, answer="Thanks for asking, here is what you need to know about it."):
    return {"messages": [{"role": "user", "content": question + "?"}, {"role": "assistant", "content": answer}]}


def build(tmp_path):
    lines, key = [], {}  # key: line number -> expected step ("modified:personal_data" for redactions)

    def add(item, expect=None):
        lines.append(item if isinstance(item, (str, bytes)) else json.dumps(item))
        if expect:
            key[len(lines)] = expect

    for topic in TOPICS:
        add(chat(topic))                                                   # lines 1-16: clean
    add(chat(TOPICS[0]), "exact_duplicate")
    add(chat(TOPICS[1].upper()), "near_duplicate")                         # case
    add(chat(TOPICS[2].replace(" ", "   ")), "near_duplicate")             # whitespace
    add(chat(TOPICS[3].replace(" at ", ", at ") + "!!"), "near_duplicate")  # punctuation
    add(chat(TOPICS[4].replace("student", "senior")), "near_duplicate")    # one-word edit
    add(chat("Please email me at jane.doe@example.com about the refund"), "personal_data")
    add(chat("Call me back on +44 20 7946 0958 this afternoon please"), "personal_data")
    add(chat("My card 4111 1111 1111 1111 was charged without approval"), "personal_data")
    add(chat("Send the money to GB82 WEST 1234 5698 7654 32 by Friday"), "personal_data")
    add(chat("Our office router has the address 192.168.14.7 on the network"), "personal_data")
    add(chat("For verification my number is 123-45-6789 as requested"), "personal_data")
    add('{"messages": [{"role": "user", "content": "broken', "invalid")
    add(b'{"messages": "\xff\xfe"}', "invalid")
    add({"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "ok then"}]}, "invalid")
    add({"messages": [{"role": "human", "content": "Is the store open on public holidays?"},
                      {"role": "gpt", "content": "Yes, from ten until four."}]}, "invalid")
    add(chat("Tell me everything " + " ".join(f"word{i}" for i in range(300))), "length")
    add(chat("Hello" + "!" * 60), "quality")
    add(chat("@@## $$%% ^^&& **(( )) {{}} [[]] <<>> ~~``"), "quality")
    path = tmp_path / "planted.jsonl"
    path.write_bytes(b"\n".join(l if isinstance(l, bytes) else l.encode() for l in lines) + b"\n")
    return path, key, len(lines)


def test_every_planted_defect_is_caught_and_no_clean_record_is_touched(tmp_path):
    path, key, total = build(tmp_path)
    out = tmp_path / "clean.jsonl"
    summary = clean_file(path, out, CleanOptions(max_tokens=200))
    rejects = [json.loads(line) for line in (tmp_path / "clean.rejects.jsonl").read_text().splitlines()]
    removed = {r["line"]: r["step"] for r in rejects if r["action"] == "removed"}
    modified = {r["line"]: r["reason"] for r in rejects if r["action"] == "modified"}

    expected_removed = {line: step for line, step in key.items() if step != "personal_data"}
    assert removed == expected_removed
    pii_lines = {line for line, step in key.items() if step == "personal_data"}
    assert set(modified) == pii_lines and all(modified[line].startswith("redacted 1 ") for line in pii_lines)
    assert dict(summary.personal_data) == {"email": 1, "phone": 1, "card": 1, "iban": 1, "ip": 1, "national_id": 1}

    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert kept[:16] == [chat(t) for t in TOPICS]                      # clean records untouched
    assert summary.input_records == total == summary.kept + summary.removed
    assert summary.kept == 16 + len(pii_lines)
    redacted = " ".join(r["messages"][0]["content"] for r in kept[16:])
    for placeholder in ("<EMAIL>", "<PHONE>", "<CARD_NUMBER>", "<IBAN>", "<IP_ADDRESS>", "<NATIONAL_ID>"):
        assert placeholder in redacted
    assert "jane.doe" not in out.read_text()
    duplicates = {r["line"]: r.get("duplicate_of") for r in rejects if "duplicate" in r["step"]}
    assert duplicates[17] == 1 and duplicates[18] == 2 and duplicates[21] == 5


def test_fix_roles_maps_aliases_and_drop_mode_removes_personal_data(tmp_path):
    path, key, total = build(tmp_path)
    summary = clean_file(path, tmp_path / "out.jsonl", CleanOptions(fix_roles=True, pii="drop", max_tokens=200))
    rejects = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    alias_line = next(line for line, step in key.items() if step == "invalid" and line == 31)
    assert alias_line not in {r["line"] for r in rejects if r["action"] == "removed"}
    assert summary.removed_by_step["personal_data"] == 6
    assert summary.balanced


def test_classification_conflicts_are_set_aside(tmp_path):
    rows = ["text,label", "where is my card,card_arrival", "cancel my account,terminate",
            "Where is my card?,lost_card", "what is the rate today for euros,exchange_rate",
            "cancel my account,terminate"]
    path = tmp_path / "c.csv"
    path.write_text("\n".join(rows) + "\n")
    summary = clean_file(path, tmp_path / "c.clean.csv", CleanOptions(min_tokens=1))
    rejects = [json.loads(line) for line in (tmp_path / "c.clean.csv.rejects.jsonl").read_text().splitlines()]
    assert {(r["line"], r["step"]) for r in rejects} == {
        (2, "label_conflict"), (4, "label_conflict"), (6, "exact_duplicate")}
    assert (tmp_path / "c.clean.csv").read_text().splitlines() == [
        "text,label", "cancel my account,terminate", "what is the rate today for euros,exchange_rate"]
    assert summary.balanced


def test_records_sharing_a_template_but_two_words_apart_are_kept(tmp_path):
    items = ["debit card", "savings account", "car loan", "pension plan", "home mortgage", "travel insurance"]
    def record(item, place="branch"):
        return chat(f"How do I close my {item} online without visiting a {place}",
                    f"Open the app, choose your {item} and press Close {item}.")

    records = [record(item) for item in items]
    records.append(record("debit card", place="shop"))  # one word from the first: a near-duplicate
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = clean_file(path, tmp_path / "t.out.jsonl")
    assert summary.kept == 6 and summary.removed_by_step == {"near_duplicate": 1}


def test_near_duplicates_with_other_labels_are_kept_and_chains_do_not_drift(tmp_path):
    rows = ["text,label",
            "I think my card is broken and will not work,card_not_working",
            "I think my card is stolen and will not work,lost_or_stolen_card",   # one word, other label: kept
            "I think my card is broken and will not pay,card_not_working",       # one word from line 2: removed
            "When will my new card be delivered to me,card_arrival",
            "When will my card be delivered to me,card_arrival",                 # one word from line 5: removed
            "When will my card be here for me,card_arrival"]                     # two from line 5, one from a removed one: kept
    path = tmp_path / "c.csv"
    path.write_text("\n".join(rows) + "\n")
    clean_file(path, tmp_path / "out.csv", CleanOptions(near_rule="edits"))  # classification's default is cosmetic
    rejects = [json.loads(line) for line in (tmp_path / "out.csv.rejects.jsonl").read_text().splitlines()]
    assert {(r["line"], r["duplicate_of"]) for r in rejects} == {(4, 2), (6, 5)}


def test_intent_data_keeps_one_word_messages_and_paraphrases_by_default_and_drops_cosmetic_copies(tmp_path):
    rows = ["text,label",
            "terminate,terminate_account",                                   # one word: a message, kept
            "yo,greeting",
            "How do I add a card to the app?,card_linking",
            "How do I add a card to my app?,card_linking",                   # a distinct paraphrase: kept
            "how do i add a card to the app,card_linking",                   # case and punctuation only: removed
            "I have a pending cash withdrawal,pending_cash_withdrawal",
            "Why do I have a pending cash withdrawal,pending_cash_withdrawal"]  # kept
    path = tmp_path / "intents.csv"
    path.write_text("\n".join(rows) + "\n")
    summary = clean_file(path, tmp_path / "out.csv")
    assert summary.kept == 6 and summary.removed_by_step == {"near_duplicate": 1}, summary.removed_by_step
    rejects = [json.loads(line) for line in (tmp_path / "out.csv.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["duplicate_of"]) for r in rejects] == [(6, 4)]
    # asked for, the minimum and the one-word rule still apply
    strict = clean_file(path, tmp_path / "strict.csv", CleanOptions(min_tokens=2, near_rule="edits"))
    assert strict.removed_by_step["length"] == 2 and strict.removed_by_step["near_duplicate"] >= 2


def test_a_record_past_the_character_bound_is_too_long_by_default(tmp_path):
    long_text = "This is a pasted log line that goes on. " * 1000  # 40,000 characters
    records = [chat("Please summarise the attached", long_text), chat("How do I reset my PIN?", "In the app.")]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = clean_file(path, tmp_path / "out.jsonl")
    assert summary.removed_by_step == {"length": 1}
    rejects = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and "characters, more than 32,000" in json.dumps(rejects[0]), rejects[0].keys()
    assert clean_file(path, tmp_path / "loose.jsonl", CleanOptions(max_chars=None)).removed_by_step == {}


def test_a_length_window_that_removes_everything_is_refused():
    import pytest

    from tunesmith.config import CleanConfig

    with pytest.raises(ValueError, match="below min_tokens"):
        CleanConfig(min_tokens=10, max_tokens=5)
    assert CleanConfig(min_tokens=5, max_tokens=5).max_tokens == 5
