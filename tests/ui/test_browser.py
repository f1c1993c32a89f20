"""The web UI in a real browser (Debian's Chromium driven by Playwright) against a live server:
log in, upload a dataset with an error and see its line, start a tiny run and watch its curve
grow, chat with the fine-tuned model. Screenshots go to build/ui-screenshots/ (CI artefacts)."""
import os
import re
import shutil
import threading
import time

import pytest

from tests.conftest import chat_records, write_jsonl
from tests.server.test_openai_sdk import free_port, install_model
from tests.ui.conftest import SHOTS

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.slow



def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model_dir):
    import subprocess
    import sys

    import uvicorn

    from tunesmith import api
    from tunesmith.web.app import ServerSettings, create_app
    from tunesmith.workspace import Workspace

    if not chromium_path():
        pytest.skip("no Chromium (apt-get install chromium)")
    home = tmp_path_factory.mktemp("ui-home")
    workspace = Workspace(home)
    install_model(home, tiny_model_dir)
    secret, _ = api.create_api_key("ui", workspace=workspace)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(workspace, ServerSettings()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    worker = subprocess.Popen([sys.executable, "-m", "tunesmith", "worker", "--poll", "0.2"],
                              env=dict(os.environ, TUNESMITH_HOME=str(home)))
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield browser, f"http://127.0.0.1:{port}", secret
        browser.close()
    worker.kill()
    server.should_exit = True
    thread.join(timeout=10)


def logged_in(browser, url, secret, width=1100):
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.goto(url + "/")
    page.wait_for_selector("#api-key")  # no key yet: the login form
    page.fill("#api-key", secret)
    page.click("button[type=submit]")
    page.wait_for_selector("text=New run")
    return page


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_wrong_key_is_refused(site):
    browser, url, _ = site
    page = browser.new_page()
    page.goto(url + "/ui/#/login")
    page.fill("#api-key", "ts-wrong")
    page.click("button[type=submit]")
    page.wait_for_selector("text=That key was not accepted.")


def test_upload_train_watch_the_curve_and_chat(site, tmp_path):
    browser, url, secret = site
    page = logged_in(browser, url, secret)

    page.goto(url + "/ui/#/datasets")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(line + "\n" for line in [
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}',
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}',
        "not json"]))
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#problems li")
    problems = page.inner_text("#problems")
    assert "bad.jsonl:line 3: invalid JSON" in problems and "/files/file-" not in problems  # the user's name, not a server path
    shot(page, "1-dataset-error")

    good = write_jsonl(tmp_path / "good.jsonl", chat_records(40))
    page.set_input_files("#file-input", str(good))
    page.wait_for_selector("#upload-result .status.processed")
    good_id = page.inner_text("tr:has-text('good.jsonl') td >> nth=0")
    page.click("tr:has-text('good.jsonl') button[data-card]")
    page.wait_for_selector("#card .card-body")
    card = page.inner_text("#card")
    assert "records\t40" in card and "tokens (min / median / p95 / max)" in card  # under tiny-chat's tokenizer
    assert page.locator("#card svg rect").count() >= 1  # the length histogram
    shot(page, "1b-dataset-card")

    page.click("#prepare summary")
    page.select_option("#clean-pii", "redact")
    page.click("#do-clean")
    page.wait_for_selector("#prepare-result >> text=cleaned:")
    assert re.search(r"cleaned: \d+ kept, \d+ removed", page.inner_text("#prepare-result"))
    if page.locator("#show-rejects").count():
        page.click("#show-rejects")
        page.wait_for_selector("#rejects tr")
    page.click("#do-split")
    page.wait_for_selector("#prepare-result td >> text=validation")
    assert [page.inner_text(f"#prepare-result tr:nth-child({i}) td >> nth=0") for i in (1, 2, 3)] == ["train", "validation", "test"]
    assert page.locator("#prepare-result .status.processed").count() == 3  # small validation/test splits are fine
    shot(page, "1c-dataset-clean-split")

    page.goto(url + "/ui/#/runs")
    page.wait_for_selector("#training-file option", state="attached")
    page.select_option("#training-file", label=f"good.jsonl ({good_id})")
    page.select_option("#base-model", "tiny-chat")
    page.fill("#epochs", "8")
    page.select_option("#method-type", "dpo")  # the form follows the recipe: dpo adds its preference settings
    page.wait_for_selector("summary:has-text('preference settings')")
    page.select_option("#method-type", "supervised")
    page.wait_for_selector("summary:has-text('preference settings')", state="detached")
    page.click("summary:has-text('training settings')")  # generated from the sft recipe's schema
    form_text = page.inner_text("#settings")
    assert "Peak learning rate." in form_text and "object" not in form_text  # descriptions are the help text
    assert page.locator("#set-method option").count() == 7  # lora, dora, ia3, qlora, prompt/prefix tuning, full
    page.fill("#set-training-learning_rate", "2")
    page.click("text=Start fine-tuning")
    page.wait_for_selector(".field-error[data-for='training.learning_rate']:not(:empty)")  # inline, beside the field
    shot(page, "2a-run-form-error")
    page.fill("#set-training-learning_rate", "0.01")
    page.click("summary:has-text('lora settings')")
    page.fill("#set-lora-r", "4")
    page.click("#estimate-run")  # will it fit, how long: the same body, probed for a few steps
    page.wait_for_selector("#estimate td >> text=time per epoch", timeout=120_000)
    estimate = page.inner_text("#estimate")
    assert "peak RAM" in estimate and "GiB" in estimate and "It fits in the memory free now." in estimate, estimate
    shot(page, "2b-run-estimate")
    page.click("text=Start fine-tuning")
    page.wait_for_selector("#loss-chart svg")
    seen = []
    deadline = time.time() + 240
    while time.time() < deadline:
        seen.append(page.locator("#loss-chart circle").count())
        if any(word in page.inner_text("#job-facts") for word in ("succeeded", "failed", "cancelled")):
            break
        time.sleep(0.5)
    facts = page.inner_text("#job-facts")
    assert "succeeded" in facts and "tokens/s" in facts and re.search(r"step \d+/\d+", facts)
    assert page.locator("#checkpoints tr").count() >= 2  # a header and a checkpoint per epoch kept
    page.wait_for_function("document.querySelectorAll('#loss-chart circle').length >= %d" % max(seen))
    growth = sorted(set(seen))
    assert len(growth) >= 2 and growth[-1] > growth[0], f"the curve never grew while training: {seen}"
    shot(page, "2-run-curve")

    # Evaluation: pick the run, evaluate it on the test split in the background, read the report, compare.
    page.goto(url + "/ui/#/eval")
    page.wait_for_selector("input[data-run]")
    run_id = page.get_attribute("input[data-run]", "data-run")
    page.check(f"input[data-run='{run_id}']")
    page.click("#compare")
    page.wait_for_selector("#compare-table td")
    assert run_id in page.inner_text("#compare-table")
    page.click(f"#compare-table a:has-text('{run_id}')")
    page.wait_for_selector("#eval-data option", state="attached")
    test_split = next(label for label in page.eval_on_selector_all("#eval-data option", "os => os.map(o => o.textContent)")
                      if label.startswith("good.test.jsonl"))
    page.select_option("#eval-data", label=test_split)
    page.fill("#eval-samples", "2")
    page.uncheck("#eval-baselines")
    page.click("#start-eval")
    page.wait_for_selector("#eval-task .status")
    page.wait_for_selector("#report-frame", timeout=180_000)
    assert "succeeded" in page.inner_text("#eval-task")
    report = page.frame_locator("#report-frame").locator("body").inner_text()
    assert "Metrics side by side" in report and "fine-tuned" in report and "Samples" in report
    shot(page, "2b-evaluation-report")

    page.goto(url + "/ui/#/playground")
    page.wait_for_selector("#prompt")
    fine_tuned = page.eval_on_selector_all(".chat ~ *, select option", "os => os.map(o => o.value)")
    tuned = next(v for v in fine_tuned if v.startswith("ft:"))
    page.select_option(".grid select", tuned)
    page.fill("#prompt", "Which colour is item 3?")
    page.click("text=Send")
    page.wait_for_function("document.querySelector('.answer') && document.querySelector('.answer').textContent.length > 0")
    page.click("text=correct it")
    page.fill(".feedback textarea", "Item 3 is amber.")
    page.click("text=send correction")
    page.wait_for_selector("text=sent for review")
    shot(page, "3-playground")

    # Review: accept the correction (and nine more answers rated good through the API), make a dataset.
    page.evaluate("""async (key) => { for (let i = 0; i < 9; i++) {
        const h = {"Content-Type": "application/json", Authorization: `Bearer ${key}`};
        const made = await (await fetch('/v1/tunesmith/feedback', {method: 'POST', headers: h, body: JSON.stringify(
            {model: 'tiny-chat', messages: [{role: 'user', content: `Which colour is thing ${i}?`}], answer: 'red', rating: 1})})).json();
        await fetch(`/v1/tunesmith/feedback/${made.id}`, {method: 'POST', headers: h, body: JSON.stringify({status: 'accepted'})}); } }""",
                  secret)
    page.goto(url + "/ui/#/review")
    row = "tr:has-text('Which colour is item 3?')"
    page.wait_for_selector(row)
    assert page.input_value(f"{row} textarea") == "Item 3 is amber."
    page.click(f"{row} >> text=accept")
    page.wait_for_selector(f"{row} .status.accepted")
    page.click("#export")
    page.wait_for_selector("#export-result .status.processed")
    assert "10 example(s) written" in page.inner_text("#export-result")
    shot(page, "5-review-export")


def test_pages_fit_a_phone_width(site):
    browser, url, secret = site
    page = logged_in(browser, url, secret, width=390)
    for route, title in (("#/datasets", "Datasets"), ("#/runs", "Runs"), ("#/eval", "Evaluation"),
                         ("#/playground", "Playground"), ("#/review", "Review")):
        page.goto(f"{url}/ui/{route}")
        page.wait_for_selector(f"main h1:text-is('{title}')")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1, route  # no sideways scrolling
        shot(page, f"4-phone-{route[2:]}")
