"""The docs run as written: every Python block of ``README.md`` and ``docs/*.md``, in page order,
one fresh interpreter per page with this environment (each block in a namespace of its own),
against a small ``clip-zeroshot-demo`` dataset.
A block marked "needs the hub" must stop with the clear offline error instead, and one marked
"needs GitHub" with FiftyOne's error for an unreachable zoo source (tests/test_zoo.py runs that
path from a loopback archive). Every relative link and anchor between the pages must resolve."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fiftyone_clip_zeroshot.demo import DATASET, DEMO_SEED, PROMPTS
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCED = re.compile(r"```(\w*)\n(.*?)```", re.S)
BLOCKS = [(page, number, code) for page in PAGES
          for number, code in enumerate((c for lang, c in FENCED.findall(page.read_text()) if lang == "python"), 1)]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
NO_APP = """
import fiftyone as fo


class _NoApp:  # the browser tests open the App; here launch_app and wait() return at once
    def wait(self):
        pass


fo.launch_app = lambda *args, **kwargs: _NoApp()
"""
OFFLINE = """
try:
{block}
except Exception as error:
    assert {check}, error
else:
    raise AssertionError("expected the offline error")
"""
CHECKS = {  # marker in a block -> what its offline error must satisfy
    "needs the hub": 'type(error).__name__ == "ModelLoadError" and "Download them once" in str(error)',
    "needs GitHub": '"Failed to retrieve model metadata" in str(error)',
    "needs a Qdrant server": '"qdrant" in str(error).lower()',
}


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCED.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.fixture(scope="module")
def demo_dataset(tmp_root, plugin_dir, zoo_source):
    """The demo's dataset, smaller: its scenes, seed and classes, 4 samples; and the zoo source
    registered, as the demo command does."""
    return load_shapes_dataset(DATASET, 4, tmp_root / "images" / "docs", seed=DEMO_SEED, classes=PROMPTS,
                               persistent=True)


def test_every_page_with_code_has_its_blocks_collected():
    assert sum(page.name == "README.md" for page, _, _ in BLOCKS) >= 3
    assert {page.name for page, _, _ in BLOCKS} >= {"README.md", "python.md", "curate.md", "app.md", "scale-out.md"}


def test_readme_fits_on_a_screen():
    assert len((REPO / "README.md").read_bytes()) <= 12 * 1024


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_relative_links_and_anchors_resolve(page):
    dead = []
    for target in LINK.findall(FENCED.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:: not checked offline
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and anchor not in anchors(linked)):
            dead.append(target)
    assert not dead, f"{page.name}: dead links {dead}"


CODE_PAGES = sorted({page for page, _, _ in BLOCKS}, key=PAGES.index)


def _page_script(page: Path) -> str:
    """Every Python block of ``page``, in order, in one interpreter: each runs in a namespace of
    its own, as when pasted alone, and a failure names its block."""
    blocks = []
    for _, number, code in (block for block in BLOCKS if block[0] == page):
        marker = next((m for m in CHECKS if m in code), None)
        script = OFFLINE.format(block=textwrap.indent(code, "    "), check=CHECKS[marker]) if marker else code
        blocks.append((f"{page.name} block {number}", script))
    return NO_APP + textwrap.dedent(f"""
        for name, script in {blocks!r}:
            print("--- running", name, flush=True)
            exec(compile(script, name, "exec"), {{"__name__": "__main__"}})
    """)


@pytest.mark.slow  # a fresh interpreter per page
@pytest.mark.parametrize("page", CODE_PAGES, ids=[p.relative_to(REPO).as_posix() for p in CODE_PAGES])
def test_python_blocks_run_as_written(page, demo_dataset, tmp_path):
    result = subprocess.run([sys.executable, "-c", _page_script(page)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env=os.environ)
    assert result.returncode == 0, f"{page.name}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
