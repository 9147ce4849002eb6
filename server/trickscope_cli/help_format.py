"""How the commands' help is laid out."""

from __future__ import annotations

import argparse


class ExamplesFormatter(argparse.HelpFormatter):
    """Wraps a one-paragraph description to the terminal, as argparse does, and keeps text with
    line breaks of its own (an epilog of examples, a list of commands) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)
