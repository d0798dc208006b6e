"""Compile the local intersphinx inventories of the documentation from their text sources.

The docs link to scikit-learn, Dask, distributed, gymnasium, NumPy and SciPy through
intersphinx, but the docs are built without network access (CI has none), so
intersphinx cannot download those projects' ``objects.inv``. Instead each project has
a small inventory here, listing only the objects these pages reference, with the real
URLs of that project's documentation site:

``<name>.txt``
    The readable source, committed. Header comments give the project, its version
    and the URL every relative address below is joined to::

        # project: scikit-learn
        # version: stable
        # url: https://scikit-learn.org/stable/

    then one object per line, in Sphinx's own inventory line format::

        name domain:role priority address display-name

    ``address`` is relative to ``url``; a trailing ``$`` in it stands for ``name``
    (``api.html#$``); a display name ``-`` means "the same as name". Other lines
    starting with ``#`` are comments.
``<name>.inv``
    The compiled inventory (Sphinx inventory version 2: four header lines, then the
    object lines compressed with zlib), committed too and read by ``docs/conf.py``
    (``intersphinx_mapping``: the site's URL with this local file as inventory).

Run after editing a ``.txt`` (from the repository root)::

    python docs/_intersphinx/make_inventories.py

``--check`` only verifies that every ``.inv`` matches its ``.txt`` (the docs build
runs the same check and fails on a stale inventory). Adding an object: find its
page on the project's site, and write the page's address and anchor; for Sphinx
sites the anchor of a Python object is its full dotted name.
"""

from __future__ import annotations

import argparse
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Sphinx's own pattern for an inventory line (sphinx.util.inventory).
LINE = re.compile(r"(.+?)\s+(\S+)\s+(-?\d+)\s+?(\S*)\s+(.*)")
HEADER = re.compile(r"#\s*(project|version|url):\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class Source:
    """One project's inventory source."""

    name: str
    project: str
    version: str
    url: str
    lines: tuple[str, ...]

    @property
    def inventory(self) -> Path:
        return HERE / f"{self.name}.inv"


def read_source(path: Path) -> Source:
    """Parse ``path`` (a ``<name>.txt``), checking every object line."""
    meta: dict[str, str] = {}
    lines: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = raw.strip()
        if not text:
            continue
        if text.startswith("#"):
            match = HEADER.match(text)
            if match:
                meta[match.group(1)] = match.group(2)
            continue
        match = LINE.fullmatch(text)
        if match is None or ":" not in match.group(2):
            raise ValueError(f"{path.name}:{number}: not 'name domain:role priority "
                             f"address display-name': {raw!r}")
        lines.append(" ".join(match.groups()))
    missing = {"project", "version", "url"} - set(meta)
    if missing:
        raise ValueError(f"{path.name}: header lacks {', '.join(sorted(missing))}")
    if not meta["url"].endswith("/"):
        raise ValueError(f"{path.name}: the url must end with '/'")
    return Source(path.stem, meta["project"], meta["version"], meta["url"],
                  tuple(sorted(lines)))


def sources() -> list[Source]:
    """Every ``*.txt`` source next to this script, by name."""
    return [read_source(p) for p in sorted(HERE.glob("*.txt"))]


def header(source: Source) -> bytes:
    return (f"# Sphinx inventory version 2\n"
            f"# Project: {source.project}\n"
            f"# Version: {source.version}\n"
            f"# The remainder of this file is compressed using zlib.\n").encode()


def payload(source: Source) -> bytes:
    return "".join(line + "\n" for line in source.lines).encode()


def compile_inventory(source: Source) -> bytes:
    """The bytes of ``<name>.inv``."""
    return header(source) + zlib.compress(payload(source), 9)


def is_current(source: Source) -> bool:
    """Whether the committed ``.inv`` holds exactly what its ``.txt`` says."""
    try:
        data = source.inventory.read_bytes()
    except FileNotFoundError:
        return False
    head = header(source)
    if not data.startswith(head):
        return False
    try:
        return zlib.decompress(data[len(head):]) == payload(source)
    except zlib.error:
        return False


def stale() -> list[str]:
    """Names of the inventories that do not match their sources."""
    return [s.name for s in sources() if not is_current(s)]


def intersphinx_mapping() -> dict[str, tuple[str, str]]:
    """``intersphinx_mapping`` for ``docs/conf.py``: ``{name: (url, local .inv)}``.

    The inventory path is relative to the docs' source directory, as intersphinx
    expects.
    """
    return {s.name: (s.url, f"{HERE.name}/{s.inventory.name}") for s in sources()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that every .inv matches its .txt")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        if bad:
            print(f"stale inventories: {', '.join(bad)}; run python {__file__}")
            return 1
        print("every inventory matches its source")
        return 0
    for source in sources():
        source.inventory.write_bytes(compile_inventory(source))
        print(f"{source.inventory.name}: {len(source.lines)} objects, {source.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
