"""Write the adapter-method tables of docs/configuration.md from the method registry.

    python benchmarks/doc_methods.py            # rewrites the ``methods`` section in place

``tests/peft/test_registry.py`` fails while the section differs from what this writes, so a new
method module shows up in the docs by running this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

from results_md import update_markdown_section

from terratorch_hsi_peft.peft.registry import methods_markdown

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
SECTION = "methods"
HEADING = "### Adapter methods and their `peft_config_kwargs`"


def main(argv: list[str] | None = None) -> None:
    """Rewrite the section of ``argv[0]`` (default docs/configuration.md)."""
    args = sys.argv[1:] if argv is None else argv
    page = Path(args[0]) if args else PAGE
    update_markdown_section(page, SECTION, HEADING, methods_markdown())


if __name__ == "__main__":
    main()
