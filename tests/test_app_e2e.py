"""The App path in a real browser: select 2 samples in the grid, run the detect operator from the
operator browser and from the panel, review, and check the database and what the page shows.

Playwright drives Debian's chromium (no downloaded browser); the App server runs on loopback with
the plugin in the temporary plugins dir. Screenshots go to ``artifacts/app-e2e/`` (or
``$E2E_ARTIFACTS``); with ``E2E_UPDATE_DOCS=1`` the tests also rewrite the docs' screenshots
(``docs/app-panel.jpg``, ``docs/app-review.jpg``, ``docs/app-modal-heatmap.jpg``), so they show
the App as it is.
"""

import os
import re
import shutil
import socket
import time
from pathlib import Path

import fiftyone as fo
import pytest
from fiftyone.utils.iou import compute_ious

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

pytestmark = pytest.mark.slow  # the App in chromium: the full tier only

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts" / "app-e2e"))
PROMPTS = ["yellow circle", "purple circle"]
TYPED = "yellow circle, purple circle"  # what a person types; the run must record exactly PROMPTS
SELECT = (0, 2)  # grid positions clicked
SEARCHED = "yellow cross"  # three of them in the six scenes
OTHER_CLASSES = ["yellow circle", "purple circle", "red star", "blue square"]  # rivals in the panel's re-ranking
TIMEOUT_MS = 120_000
DOCS = Path(__file__).resolve().parents[1] / "docs"

if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (scripts/setup.sh --browser installs it with apt when run as "
                "root or with sudo); the App end-to-end test cannot run", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the playwright package is missing; rerun scripts/setup.sh")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def app(tmp_root, plugin_dir):
    dataset = load_shapes_dataset("app-e2e", 6, tmp_root / "images" / "app-e2e", seed=3, width=320, height=240)
    port = _free_port()
    session = fo.launch_app(dataset, remote=True, address="127.0.0.1", port=port)
    yield dataset, f"http://127.0.0.1:{port}/datasets/{dataset.name}", session
    session.close()
    dataset.delete()


@pytest.fixture()
def page():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def _dismiss_banner(page) -> None:
    """Close the App's banner, if it shows one, and any menu that a click landing while the page was
    still being laid out opened instead (its backdrop would take every later click)."""
    dismiss = page.get_by_text("Dismiss", exact=True)
    try:
        dismiss.click(timeout=10_000)
    except sync_api.TimeoutError:
        pass  # no banner this time
    _close_popovers(page)


def _select_in_grid(page, session, dataset, positions) -> set[str]:
    """Tick the tiles at ``positions`` until the App's selection is exactly their samples; on a
    busy machine a click can land while the grid is still being laid out, or a late load can
    clear it, so missing ones are ticked again. Returns their ids."""
    wanted = [dataset.skip(i).first().id for i in positions]
    page.get_by_text(f"{len(dataset)} samples", exact=True).first.wait_for()
    tiles = page.locator('[data-cy="looker"]')
    checkboxes = page.locator('[title="Click to select sample, Shift+Click to select a range"]')
    checkboxes.first.wait_for(state="attached")
    for _ in range(4):
        missing = [(p, i) for p, i in zip(positions, wanted) if i not in session.selected]
        if not missing:
            break
        _settle_grid(page, [tiles.nth(p) for p in positions])
        for position, sample_id in missing:
            tiles.nth(position).hover()
            checkboxes.nth(position).click(force=True)
            _wait_for(lambda sample_id=sample_id: sample_id in session.selected, 15)
        _wait_for(lambda: sorted(session.selected) != sorted(wanted), 2)  # a late reset of the selection
    assert sorted(session.selected) == sorted(wanted), f"selected {session.selected}, wanted {wanted}"
    return set(wanted)


def _close_popovers(page) -> None:
    """Close any open menu or popover: its invisible backdrop takes the pointer's events."""
    backdrop = page.locator(".MuiPopover-root:visible")
    for _ in range(5):
        if backdrop.count() == 0:
            return
        page.keyboard.press("Escape")
        _wait_for(lambda: backdrop.count() == 0, 2)


def _set_view(session, view) -> None:
    """``session.view = view`` once the session's client is connected: on a loaded machine the App's
    event stream can drop, and the client reconnects within 10 s."""
    deadline = time.monotonic() + 60
    while True:
        try:
            session.view = view
            return
        except RuntimeError as error:
            if "not connected" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def _open_panel(page, session, shown) -> None:
    """``fz.open_panel(session)`` until ``shown`` is visible: on a loaded machine the spaces can be
    sent while the App's client is reconnecting, and are then lost; sending them again is harmless."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        try:
            fz.open_panel(session)  # the README's way: the grid and the panel side by side
        except RuntimeError as error:
            if "not connected" not in str(error) or time.monotonic() > deadline:
                raise
        try:
            shown.wait_for(timeout=20_000)
            return
        except sync_api.TimeoutError:
            if time.monotonic() > deadline:
                raise


def _click(page, locator) -> None:
    """Click ``locator`` once no menu or popover is open: on a loaded machine one can open late,
    from a click that landed while the page was still being laid out."""
    locator.wait_for()
    _close_popovers(page)
    locator.click()


def _settle_grid(page, tiles) -> None:
    """No popover open, and ``tiles`` laid out where they stay (the same boxes twice running)."""
    _close_popovers(page)
    last = None
    for _ in range(30):
        boxes = [tile.bounding_box() for tile in tiles]
        if None not in boxes and boxes == last:
            return
        last = boxes
        time.sleep(0.5)


def _run_detect_operator(page) -> None:
    page.keyboard.press("Backquote")  # the operator browser
    page.get_by_placeholder("Search operations by name...").wait_for()
    page.keyboard.type("detect objects")
    page.keyboard.press("Enter")
    model = page.locator('input[placeholder="Type or select a value"]')
    model.fill("shapes-world")
    model.press("Tab")
    page.locator('input[type="radio"][value="SELECTED_SAMPLES"]').check()
    _type_prompts(page)
    page.screenshot(path=ARTIFACTS / "operator-form.png")
    page.get_by_role("button", name="Execute").click()


def _type_prompts(page) -> None:
    """Type the prompts into the form's one prompts field at normal speed (no pause per key)."""
    field = page.locator("textarea:not([aria-hidden])").first
    field.click()
    field.press_sequentially(TYPED)


def _docs_shot(page, name: str, docs_name: str) -> None:
    """A screenshot in the artifacts; with ``E2E_UPDATE_DOCS=1`` also the docs' JPEG of that view."""
    page.screenshot(path=ARTIFACTS / name)
    if os.environ.get("E2E_UPDATE_DOCS") == "1":
        page.screenshot(path=DOCS / docs_name, type="jpeg", quality=80)


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1)
    return False


def _show_field(page, field: str, visible: bool = True) -> None:
    """Tick (or untick) the field's checkbox in the grid's or the modal's sidebar."""
    checkbox = page.locator(f'[data-cy="checkbox-{field}"] input[type="checkbox"]').last
    checkbox.wait_for(state="attached")
    if checkbox.is_checked() != visible:
        checkbox.click(force=True)


def test_detect_operator_from_the_app_on_two_selected_samples(app, page):
    dataset, url, session = app
    page.goto(url)
    _dismiss_banner(page)
    _click(page, page.locator('[title="New panel"]'))  # the panel is offered beside the built-in ones
    page.locator('[data-cy="new-panel-option-clip_zeroshot_panel"]').wait_for()
    page.mouse.click(700, 700)  # on the menu's backdrop: closes it
    page.locator('[data-cy="new-panel-option-clip_zeroshot_panel"]').wait_for(state="detached")
    selected = _select_in_grid(page, session, dataset, SELECT)
    checked = page.locator('input[data-cy="looker-checkbox-input-"]:checked')
    assert _wait_for(lambda: checked.count() == len(SELECT), 30), f"{checked.count()} tiles checked in the grid"

    _run_detect_operator(page)
    def labelled_count() -> int:
        dataset.reload()
        return dataset.count("clip_detections") if dataset.has_field("clip_detections") else 0

    error = page.get_by_text("Error occurred during operator execution")
    done = _wait_for(lambda: labelled_count() == 2 or error.count() > 0, 300)
    page.screenshot(path=ARTIFACTS / "after-run.png")
    if error.count():
        error.first.click()
        pytest.fail(f"the operator failed in the App: {page.locator('body').inner_text()[-3000:]}")
    assert done, "the operator did not label 2 samples within 300 s (see after-run.png)"
    assert set(dataset.exists("clip_detections").values("id")) == selected
    assert dataset.get_run_info("clip_zeroshot_clip_detections").config.prompts == PROMPTS
    heatmap_fields = ["clip_detections_heatmap_yellow_circle", "clip_detections_heatmap_purple_circle"]
    for field in heatmap_fields:
        assert set(dataset.exists(field).values("id")) == selected
        assert {tuple(h.range) for h in dataset.select(list(selected)).values(field)} == {(0, 153)}  # full at 0.6
    labelled = dataset.select(list(selected))
    assert {d.label for d in labelled.values("clip_detections.detections", unwind=True)} <= set(PROMPTS)
    assert labelled.count("clip_detections.detections") > 0

    page.get_by_role("button", name="Done").click()  # the operator's output dialog
    _show_field(page, "clip_detections")
    _show_field(page, "ground_truth", visible=False)
    page.wait_for_timeout(3000)
    page.screenshot(path=ARTIFACTS / "grid-with-detections.png")

    page.locator('[data-cy="looker"]').nth(SELECT[1]).click(position={"x": 150, "y": 120})
    page.get_by_text("clip_detections_heatmap_yellow_circle").first.wait_for()
    _show_field(page, "clip_detections_heatmap_yellow_circle")
    page.wait_for_timeout(3000)
    _docs_shot(page, "modal-heatmap.png", "app-modal-heatmap.jpg")


def test_panel_runs_on_two_selected_samples_and_shows_a_histogram(app, page):
    dataset, url, session = app
    page.set_viewport_size({"width": 1400, "height": 1900})  # the whole panel, histogram included
    page.goto(url)
    _dismiss_banner(page)
    selected = _select_in_grid(page, session, dataset, SELECT)
    _open_panel(page, session, page.get_by_role("button", name="Run detection"))
    page.screenshot(path=ARTIFACTS / "panel-open.png")
    page.locator('input[value="shapes-world"]').wait_for()  # offline, the model a newcomer can run at once
    assert sorted(session.selected) == sorted(selected)
    _type_prompts(page)
    _click(page, page.get_by_role("button", name="Run detection"))  # at once: nothing typed may be lost

    def labelled_count() -> int:
        dataset.reload()
        return dataset.count("clip_detections") if dataset.has_field("clip_detections") else 0

    assert _wait_for(lambda: labelled_count() == 2, 300), "the panel's run did not label 2 samples within 300 s"
    assert set(dataset.exists("clip_detections").values("id")) == selected
    assert dataset.get_run_info("clip_zeroshot_clip_detections").config.prompts == PROMPTS
    page.get_by_text(re.compile(r"^Labelled 2 of 2 samples into 'clip_detections' \(")).wait_for()  # the status line
    page.locator(".js-plotly-plot").first.wait_for()
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.wait_for_timeout(2000)
    page.screenshot(path=ARTIFACTS / "panel-histogram.png")


def test_review_queue_in_the_panel_accepts_rejects_and_relabels(app, page, shapes_model):
    """Three labels reviewed through the panel's Review section in chromium, checked in the database."""
    dataset, url, session = app
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip_detections", confidence_thresh=0.2,
              heatmaps=False, progress=False)
    assert dataset.count("clip_detections.detections") >= 3
    page.set_viewport_size({"width": 1400, "height": 1900})
    page.goto(url)
    _dismiss_banner(page)
    _open_panel(page, session, page.get_by_role("button", name="Start reviewing"))
    _click(page, page.get_by_role("button", name="Start reviewing"))
    page.get_by_text("Reviewing", exact=False).first.wait_for()
    page.screenshot(path=ARTIFACTS / "review-queue.png")

    def decisions() -> dict[str, int]:
        dataset.reload()
        return dict(dataset.count_label_tags())

    for button, tag in (("Accept", "accepted"), ("Reject", "rejected")):
        page.get_by_role("button", name=button, exact=True).click()
        assert _wait_for(lambda tag=tag: decisions().get(tag) == 1, 60), f"no label {tag}: {decisions()}"
    page.get_by_text("2 of", exact=False).first.wait_for()  # the panel shows the third label
    current = page.get_by_text("Reviewing", exact=False).first.inner_text()
    other = next(prompt for prompt in PROMPTS if prompt not in current)  # relabelling to its own is an accept
    page.get_by_role("combobox").last.click()  # the "Relabel as…" dropdown, the panel's last one
    page.get_by_role("option", name=other, exact=True).click()  # waits for the third label's choices
    page.get_by_role("button", name="Relabel", exact=True).click()
    assert _wait_for(lambda: decisions().get("relabeled") == 1, 60), f"no label relabeled: {decisions()}"
    page.wait_for_timeout(2000)
    _docs_shot(page, "review-after-three.png", "app-review.jpg")
    assert decisions() == {"accepted": 1, "rejected": 1, "relabeled": 1}
    relabeled = [d for d in dataset.values("clip_detections.detections", unwind=True) if "relabeled" in d.tags]
    assert relabeled[0].original_label in PROMPTS and relabeled[0].label != relabeled[0].original_label
    page.get_by_text("3 of", exact=False).first.wait_for()  # the progress line



OVERFLOW_JS = """() => {  // how far the panel's scroll box around the plot overflows sideways
  let box = document.querySelector('.js-plotly-plot');
  while (box && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
  return box ? box.scrollWidth - box.clientWidth : null;
}"""
SCROLL_TOP_JS = OVERFLOW_JS.replace("return box ? box.scrollWidth - box.clientWidth : null;", "box.scrollTop = 0;")
TRACES_JS = "() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => (p.data || []).map(t => t.name))"


def test_panel_as_a_newcomer_meets_it(app, page, shapes_model):
    """At 1600x1000, with another field inspected first: run dense twice from the panel, the second
    time with fewer prompts, then review. The run's dialog closes itself, the Run section says the
    samples are embedded and the rerun encodes no crop, the histogram shows only the new field's
    prompts, the dropped prompt's heatmap field leaves the sidebar, and nothing overflows the
    panel sideways."""
    dataset, url, session = app
    fz.detect(dataset, ["red star", "blue square", "green triangle"], model=shapes_model, method="dense",
              label_field="clip_detections", progress=False)  # the field the panel inspects first
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(url)
    _dismiss_banner(page)
    selected = _select_in_grid(page, session, dataset, SELECT)
    _open_panel(page, session, page.get_by_text("Target (2 samples)", exact=True))
    page.locator('input[type="radio"][value="dense"]').check()
    page.get_by_label("Embed every candidate").check()  # so that no later prompt on these samples encodes a crop
    _type_prompts(page)
    _click(page, page.get_by_role("button", name="Run detection"))
    page.get_by_text(re.compile(r"^Labelled 2 of 2 samples into 'clip_detections_2' \(")).wait_for()
    assert set(dataset.exists("clip_detections_2").values("id")) == selected
    closed = _wait_for(lambda: page.get_by_role("button", name="Done").count() == 0, 10)
    page.screenshot(path=ARTIFACTS / "newcomer-first-run.png")
    assert closed, "the run's progress dialog stayed open over the App"
    assert _wait_for(lambda: page.evaluate(TRACES_JS) == [PROMPTS], 30), page.evaluate(TRACES_JS)

    page.get_by_text("Embedded: 2 of 2 samples under", exact=False).first.wait_for()  # the model's name is code
    page.locator("textarea:not([aria-hidden])").first.fill(PROMPTS[0])
    _click(page, page.get_by_role("button", name="Run detection"))
    assert _wait_for(lambda: page.evaluate(TRACES_JS) == [PROMPTS[:1]], 120), page.evaluate(TRACES_JS)
    page.get_by_text(re.compile(r"^Labelled 2 of 2 samples into 'clip_detections_2' \(0 crops encoded, [\d,]+ read "
                                r"from the embedding store\)")).wait_for()  # a rerun computes no crop
    assert not dataset.has_sample_field("clip_detections_2_heatmap_purple_circle")
    emptied = page.locator('[data-cy="checkbox-clip_detections_2_heatmap_purple_circle"]')
    assert _wait_for(lambda: emptied.count() == 0, 30), "the emptied heatmap field stayed in the sidebar"

    _click(page, page.get_by_role("button", name="Start reviewing"))
    page.get_by_role("button", name="Accept", exact=True).click()
    assert _wait_for(lambda: "accepted" in dict(dataset.count_label_tags()), 60), "no label accepted"
    page.get_by_text("✓ accepted", exact=False).first.wait_for()  # the review report's table
    page.screenshot(path=ARTIFACTS / "newcomer-reviewed.png")
    overflow = page.evaluate(OVERFLOW_JS)
    assert overflow is not None and overflow <= 0, f"the panel overflows sideways by {overflow} px"
    page.set_viewport_size({"width": 1600, "height": 2000})  # the whole panel, from its top, for the docs
    page.evaluate(SCROLL_TOP_JS)
    page.wait_for_timeout(3000)
    _docs_shot(page, "newcomer-panel.png", "app-panel.jpg")


def test_text_search_over_indexed_candidates_in_the_app(app, page, zoo_source):
    """Index the candidates, open them as patches, type a prompt in the App's similarity search, show
    its results: the first patches are objects of that class (by IoU with the ground truth). Then the
    panel's Find objects over the same index: the grid shows exactly ``fz.search``'s patches, best
    first (so its precision is fz.search's, which the App's cosine order does not reach)."""
    dataset, url, session = app
    fz.propose(dataset, progress=False)
    fz.index_objects(dataset, brain_key="objects", model="shapes-world", progress=False)
    _set_view(session, dataset.to_patches("candidates"))
    page.goto(url)
    _dismiss_banner(page)
    page.get_by_text(f"{dataset.count('candidates.detections')} patches", exact=True).first.wait_for()
    _click(page, page.locator('[data-cy="action-sort-by-similarity"]'))
    search = page.locator('[data-cy="input-Type anything!"]')
    search.fill(f"a photo of a {SEARCHED}")
    search.press("Enter")  # FiftyOne 1.22 runs it in its Similarity Search panel
    page.get_by_text("Completed", exact=True).first.wait_for()
    page.locator('button[aria-label="Show results"]').first.click(force=True)  # its sortable tile says aria-disabled
    assert _wait_for(lambda: "stages.Select" in str(session.view._serialize()), 60), "the results were not shown"
    page.wait_for_timeout(3000)  # the grid redraws in the new order
    _docs_shot(page, "search.png", "app-search.jpg")
    assert _precision(dataset, session.view.limit(3)) >= 2 / 3

    _open_panel(page, session, page.get_by_text("Find objects", exact=True).first)
    page.locator("textarea:not([aria-hidden])").first.fill(", ".join(OTHER_CLASSES))  # the Run section's prompts
    found = page.locator('xpath=//p[normalize-space()="What to find"]/following::input[1]')  # the panel's labels
    found.fill(f"a photo of a {SEARCHED}")
    found.press("Tab")
    _click(page, page.get_by_role("button", name="Find", exact=True))
    page.get_by_text(re.compile(r"^\d+ patches for a photo of a " + SEARCHED)).wait_for()
    expected = fz.search(dataset, f"a photo of a {SEARCHED}", k=10, brain_key="objects", prompts=OTHER_CLASSES)
    assert _wait_for(lambda: session.view is not None and session.view.values("id") == expected.values("id"), 60)
    page.wait_for_timeout(3000)  # the grid redraws in the new order
    _docs_shot(page, "find-objects.png", "app-find-objects.jpg")
    assert _precision(dataset, session.view.limit(3)) >= 2 / 3


def _precision(dataset, patches) -> float:
    """The share of ``patches`` (of the candidates field) that frame a ground-truth ``SEARCHED`` by IoU >= 0.5."""
    hits = [bool(truth) and compute_ious([patch.candidates], truth).max() >= 0.5
            for patch in patches
            for truth in [[d for d in dataset[patch.sample_id].ground_truth.detections if d.label == SEARCHED]]]
    return sum(hits) / max(1, len(hits))
