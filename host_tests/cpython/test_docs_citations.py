"""Comments cite the project's own notes (docs/), never ../shared/spec: a clone without ../shared
must still be able to follow every reference. Every `docs/NAME.md "Heading"` citation in the code
names a file and a heading that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("firmware", "host", "tools", "host_tests")
CITE = re.compile(r'docs/([\w-]+\.md)\s+"([^"]+)"')
SPEC = re.compile(r"\bspec/[\w-]+\.md|\bspec(?: section)? \d|\bspec [a-z-]+-protocols|\.\./shared/spec")


def code_files():
    for d in CODE_DIRS:
        for p in sorted((ROOT / d).rglob("*.py")):
            if "__pycache__" not in p.parts and p.name != "test_docs_citations.py":
                yield p


def headings(doc):
    return {m.group(1).strip() for m in re.finditer(r"^#+\s+(.+)$", doc.read_text(), re.M)}


def test_every_docs_citation_resolves():
    missing = []
    count = 0
    for p in code_files():
        for m in CITE.finditer(p.read_text()):
            count += 1
            doc = ROOT / "docs" / m.group(1)
            if not doc.is_file() or m.group(2) not in headings(doc):
                missing.append("%s: docs/%s \"%s\"" % (p.relative_to(ROOT), m.group(1), m.group(2)))
    assert count >= 10
    assert not missing, missing


def test_no_code_cites_the_shared_spec():
    found = []
    for p in code_files():
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if SPEC.search(line):
                found.append("%s:%d: %s" % (p.relative_to(ROOT), i, line.strip()))
    assert not found, "\n".join(found)
