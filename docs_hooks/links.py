"""MkDocs hook: links from docs/ to files of the repository outside it.

A few pages link to ``../README.md`` or ``../example_project/README.md``, which work when the
Markdown is read in the repository (or the source distribution) but are not pages of the site.
The hook checks that each such target exists (a missing one fails the strict build) and turns
the link into the link text followed by the file's path in the repository, so the site shows
where to find it instead of a broken link.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_OUTSIDE_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>\.\./[^)#\s]+)(?:#[^)]*)?\)")


class LinkOutsideDocsError(Exception):
    """A page links to a file outside docs/ that does not exist."""


def rewrite_outside_links(markdown: str, page_path: Path, docs_dir: Path) -> str:
    """Return ``markdown`` with links that leave ``docs_dir`` rewritten as text and path."""
    root = docs_dir.resolve().parent

    def rewrite(match: re.Match[str]) -> str:
        target = (page_path.parent / match["target"]).resolve()
        if not target.is_relative_to(docs_dir.resolve()):
            if not target.exists() or not target.is_relative_to(root):
                raise LinkOutsideDocsError(
                    f"{page_path.relative_to(docs_dir)} links to {match['target']}, "
                    "which is not a file of the repository"
                )
            return f"{match['text']} (`{target.relative_to(root).as_posix()}` in the repository)"
        return match.group(0)

    return _OUTSIDE_LINK.sub(rewrite, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    docs_dir = Path(config["docs_dir"])
    return rewrite_outside_links(markdown, docs_dir / page.file.src_path, docs_dir)
