"""Link this repository into FiftyOne's plugins dir, where the App and ``fiftyone operators list`` find
it, and register its zoo source offline, where ``foz.load_zoo_model`` and the brain find it.

    python -m fiftyone_clip_zeroshot.plugin.install

FiftyOne discovers plugins only under ``fo.config.plugins_dir``, by their ``fiftyone.yml``; a pip
install alone is not found. One symlink is made, ``<plugins_dir>/fiftyone-clip-zeroshot``; anything
else already there under that name is left alone and reported. The zoo source (``zoo/``) is what
``foz.register_zoo_model_source(<repository URL>)`` would download, copied from here instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fiftyone as fo

from fiftyone_clip_zeroshot.core.errors import ClipZeroShotError

LINK_NAME = "fiftyone-clip-zeroshot"
REPO = Path(__file__).resolve().parents[2]


class PluginInstallError(ClipZeroShotError, RuntimeError):
    """The plugin could not be linked into the plugins dir; nothing was changed."""


def install_plugin(plugins_dir: str | Path | None = None) -> Path:
    """Link the repository holding this package into ``plugins_dir`` (default: ``fo.config.plugins_dir``)
    and return the link; already linked is fine.

    Args:
        plugins_dir: FiftyOne's plugins folder (None: ``fo.config.plugins_dir``, ``FIFTYONE_PLUGINS_DIR``).
    """
    if not (REPO / "fiftyone.yml").is_file():
        raise PluginInstallError(
            f"{REPO} holds no fiftyone.yml: this package was installed without its repository. Clone the "
            "repository (or `fiftyone plugins download <repo url>`) and `pip install -e` that folder")
    folder = Path(plugins_dir or fo.config.plugins_dir).expanduser()
    link = folder / LINK_NAME
    if link.is_symlink() and link.resolve() == REPO:
        return link
    if link.exists() or link.is_symlink():
        raise PluginInstallError(f"{link} already exists and is not a link to {REPO}; remove it to link this "
                                 "repository instead, or leave the plugin found there in place")
    folder.mkdir(parents=True, exist_ok=True)
    link.symlink_to(REPO, target_is_directory=True)
    return link


def install_zoo_source() -> str:
    """Register this repository's zoo source (``zoo/``: the localizers and ``clip-zeroshot-embeddings``)
    from the local files, as a download of it would, and return its URL (``file://`` this repository).
    A source of the same name registered before is replaced."""
    manifest_path = REPO / "zoo" / "manifest.json"
    if not manifest_path.is_file():
        raise PluginInstallError(f"{REPO} holds no zoo/manifest.json: this package was installed without its "
                                 "repository; foz.register_zoo_model_source(<repository URL>) instead")
    manifest = json.loads(manifest_path.read_text())
    url = REPO.as_uri()
    folder = Path(fo.config.model_zoo_dir).expanduser().joinpath(*manifest["name"].split("/"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(REPO / "zoo" / "__init__.py", folder / "__init__.py")
    (folder / "manifest.json").write_text(json.dumps({**manifest, "url": url}, indent=4))
    return url


def main() -> None:
    try:
        link = install_plugin()
    except PluginInstallError as error:
        raise SystemExit(f"plugin: not linked: {error}") from None
    print(f"plugin: {link} -> {REPO} (restart the App to see it)")
    print(f"zoo source: {install_zoo_source()} (clip-zeroshot-* models, e.g. for fz.index_objects)")


if __name__ == "__main__":
    main()
