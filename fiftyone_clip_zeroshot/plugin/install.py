"""Link this repository into FiftyOne's plugins dir, where the App and ``fiftyone operators list`` find it.

    python -m fiftyone_clip_zeroshot.plugin.install

FiftyOne discovers plugins only under ``fo.config.plugins_dir``, by their ``fiftyone.yml``; a pip
install alone is not found. One symlink is made, ``<plugins_dir>/fiftyone-clip-zeroshot``; anything
else already there under that name is left alone and reported.
"""

from __future__ import annotations

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


def main() -> None:
    try:
        link = install_plugin()
    except PluginInstallError as error:
        raise SystemExit(f"plugin: not linked: {error}") from None
    print(f"plugin: {link} -> {REPO} (restart the App to see it)")


if __name__ == "__main__":
    main()
