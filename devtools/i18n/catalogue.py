"""Keeping the pages' message catalogue current: ``python -m devtools.i18n.catalogue``.

Runs Babel's extraction over ``hub/`` (Python with ``_``/``gettext``/``N_``, Jinja templates with
``{% trans %}`` and ``_()``), then merges the result into the Japanese catalogue
(``pybabel update``): new strings appear untranslated, vanished ones become obsolete. The unit test
``tests/unit/test_i18n.py`` fails while any string shown on a page has no Japanese.
"""

from __future__ import annotations

import io
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "hub" / "web" / "locale" / "ja" / "LC_MESSAGES" / "messages.po"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}


def extract() -> Catalog:
    """Every message the pages can show, as Babel extracts it (the ``babel.cfg`` mapping)."""
    method_map, options_map = parse_mapping_cfg(io.StringIO((ROOT / "babel.cfg").read_text()))
    catalog = Catalog(project="ittai-hub")
    for filename, lineno, message, comments, context in extract_from_dir(
        ROOT, method_map, options_map, keywords=KEYWORDS
    ):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def japanese() -> Catalog:
    with PO.open("rb") as f:
        return read_po(f, locale="ja")


def update() -> list[str]:
    """Merge freshly extracted messages into the Japanese catalogue; returns the untranslated ones."""
    template = extract()
    ja = japanese()
    template.creation_date = ja.creation_date  # no churn in the header: the file changes with its messages
    ja.update(template, no_fuzzy_matching=True)
    with PO.open("wb") as f:  # file names without line numbers, so edits elsewhere do not touch it
        write_po(f, ja, width=110, sort_output=True, ignore_obsolete=True, include_lineno=False)
    return [str(m.id) for m in ja if m.id and not m.string]


if __name__ == "__main__":
    missing = update()
    print(f"{PO.relative_to(ROOT)}: {len(missing)} untranslated")
    for m in missing:
        print(f"  {m}")
