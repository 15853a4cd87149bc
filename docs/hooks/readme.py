"""mkdocs hooks: the site's home page is the repository's README.md, so it is written once.

Its links into the docs folder (``docs/spec.md``) become links between pages (``spec.md``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

README = Path(__file__).resolve().parents[2] / "README.md"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "index.md", abs_src_path=str(README)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri != "index.md":
        return markdown
    return markdown.replace("](docs/", "](")


_ROLE = re.compile(r":(?:func|mod|class|meth|attr|data|exc):(<code>)")


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    """Docstrings say ``:func:`x``` (Sphinx roles, as the code's readers know them); on the
    site the role's name goes, the code stays."""
    return _ROLE.sub(r"\1", html)
