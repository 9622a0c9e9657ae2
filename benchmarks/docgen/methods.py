"""Write the adapter-method tables of docs/configuration.md from the method registry.

    python -m benchmarks.docgen.methods            # rewrites the ``methods`` section in place

``tests/adapters/test_registry.py`` fails while the section differs from what this writes, so a new
method module shows up in the docs by running this module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.docgen.sections import update_markdown_section
from terratorch_hsi_peft.adapters.registry import methods_markdown

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
SECTION = "methods"
HEADING = "### Adapter methods and their `peft_config_kwargs`"


def main(argv: list[str] | None = None) -> None:
    """Rewrite the ``methods`` section of the page (default docs/configuration.md)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", nargs="?", type=Path, default=PAGE, help="Markdown page to update")
    args = parser.parse_args(argv)
    update_markdown_section(args.page, SECTION, HEADING, methods_markdown())


if __name__ == "__main__":
    main()
