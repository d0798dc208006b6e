"""Sphinx directive ``cli-help``: the command line's ``--help``, rendered at build time.

Usage in a page::

    .. cli-help::           (the top-level parser)
    .. cli-help:: lda       (a subcommand)

The text comes from :func:`dask_dpsgd.__main__.build_parsers`, the parsers the command
line itself uses, so the reference cannot drift from the code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

# Wide enough for the help texts to wrap as they do in a typical terminal, narrow
# enough for a literal block on the page.
HELP_COLUMNS = 88


@contextlib.contextmanager
def _plain_terminal(columns: int) -> Iterator[None]:
    """A fixed terminal width and no colour while argparse formats (it reads both
    from the environment), so the page is the same on every machine."""
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR", "FORCE_COLOR")}
    os.environ["COLUMNS"] = str(columns)
    os.environ["NO_COLOR"] = "1"
    os.environ.pop("FORCE_COLOR", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def render_help(command: str | None = None, columns: int = HELP_COLUMNS) -> str:
    """``--help`` of the top-level parser, or of the subcommand ``command``."""
    from dask_dpsgd.__main__ import build_parsers

    with _plain_terminal(columns):
        parser, subs = build_parsers()
        if command is not None:
            if command not in subs:
                raise ValueError(f"no subcommand {command!r}; the parser has "
                                 f"{', '.join(sorted(subs)) or 'none'}")
            parser = subs[command]
        return parser.format_help()


class CLIHelp(SphinxDirective):
    """``.. cli-help:: [subcommand]``: a literal block of that parser's ``--help``."""

    optional_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        command = self.arguments[0] if self.arguments else None
        import dask_dpsgd.__main__ as cli

        # Rebuild the page when the command line changes.
        self.env.note_dependency(cli.__file__)
        try:
            text = render_help(command)
        except ValueError as exc:
            raise self.error(str(exc)) from exc
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    app.add_directive("cli-help", CLIHelp)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
