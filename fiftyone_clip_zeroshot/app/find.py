"""The panel's Find objects section: ``fz.search`` over an object index, its patches shown best first.

The App's own search box (the grid's "sort by similarity") orders patches by the brain's cosine
alone; this section shows ``search``'s order, the nearest patches re-ranked by the model's
probability for the prompt against the negative prompts and the prompts typed in the Run section
(docs/search.md says when each is the right one).
"""

from __future__ import annotations

import fiftyone.operators.types as types

from fiftyone_clip_zeroshot.core.options import parse_prompts
from fiftyone_clip_zeroshot.labeling.object_search.index import object_indexes, search

FIND_K = 10  # patches shown unless the section says otherwise
STATUS = "find_status"
NO_INDEX = ("**Find objects**: no object index on this dataset yet. Build one with the operators *Propose "
            "candidate objects* and *Index objects for text search* (or `fz.propose` and `fz.index_objects`, "
            "docs/search.md); then search its patches here by text.")


class FindSection:
    """Handlers and rendering of the Find objects section, mixed into the panel."""

    def on_find(self, ctx) -> None:
        """Show ``search``'s best patches for the typed text; the Run section's prompts compete with it."""
        state = ctx.panel.state
        text, brain_key = (state.get("find_prompt") or "").strip(), _chosen(object_indexes(ctx.dataset), state)
        if brain_key is None:
            state.set(STATUS, NO_INDEX)
            return
        if not text:
            state.set(STATUS, "Type what to find first, e.g. 'a red circle'.")
            return
        rivals = [p for p in parse_prompts(state.get("prompts")) if p != text]
        try:
            found = search(ctx.dataset, text, k=int(state.get("find_k") or FIND_K), brain_key=brain_key,
                           prompts=rivals)
        except Exception as error:  # noqa: BLE001 - a bad index or model is said in the panel, not as a traceback
            state.set(STATUS, f"Not searched: {error}")
            return
        ctx.ops.set_view(found)
        count = len(rivals)
        against = f", re-ranked against the Run section's {count} prompt{'' if count == 1 else 's'}" if rivals else ""
        state.set(STATUS, f"{len(found)} patches for `{text}`, best first (index `{brain_key}`{against}).")

    def render_find(self, ctx, panel: types.Object) -> None:
        """The section: the index, the text and how many patches, or how to build an index."""
        state, indexes = ctx.panel.state, object_indexes(ctx.dataset)
        chosen = _chosen(indexes, state)
        if chosen is None:
            panel.md(NO_INDEX, name="find_header")
            return
        panel.md("**Find objects**", name="find_header")
        choices = types.Dropdown(label="Object index")
        for key in indexes:
            choices.add_choice(key, label=key)
        panel.enum("find_index", choices.values(), view=choices, default=chosen)
        panel.str("find_prompt", label="What to find", default=state.get("find_prompt") or "",
                  description="Text, e.g. 'a red circle': the index's nearest patches, re-ranked by the model "
                              "(fz.search); the prompts above compete with it")
        panel.int("find_k", label="Patches", min=1, default=state.get("find_k") or FIND_K)
        panel.btn("find", label="Find", on_click=self.on_find)
        if state.get(STATUS):
            panel.md(state.get(STATUS), name=STATUS)


def _chosen(indexes: list[str], state) -> str | None:
    """The object index picked in the section, else the dataset's first (None: it has none)."""
    picked = state.get("find_index")
    return picked if picked in indexes else next(iter(indexes), None)
