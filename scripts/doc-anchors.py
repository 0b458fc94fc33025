#!/usr/bin/env python3
"""Checks that every link from palisade's docs to a heading (`page#some-heading`) finds it.

rustdoc checks that an intra-doc link names an item, but not the `#fragment` after it: a
heading renamed or removed leaves links to it that open the page at the top. Run after
`cargo doc --workspace --no-deps`; exits 1 and lists the broken links if there are any.

    python3 scripts/doc-anchors.py [target/doc]
"""
import html
import os
import re
import sys

# Fragments rustdoc makes for items and page sections rather than for headings in the docs.
GENERATED = re.compile(
    r"(variant|method|structfield|tymethod|associatedconstant|associatedtype|impl-|"
    r"trait-impl|synthetic|blanket|implementations|required|provided|deref|foreign|"
    r"implementors|fields|variants|object-safety|dyn-compat|search|main-content|"
    r"settings|help)"
)


def main() -> int:
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "doc")
    ids = {}

    def ids_of(path):
        if path not in ids:
            try:
                with open(path, encoding="utf8") as f:
                    ids[path] = set(re.findall(r'id="([^"]+)"', f.read()))
            except OSError:
                ids[path] = None
        return ids[path]

    broken = set()
    pages = 0
    for krate in sorted(d for d in os.listdir(root) if d.startswith("palisade")):
        for folder, _, files in os.walk(os.path.join(root, krate)):
            for name in files:
                if not name.endswith(".html"):
                    continue
                page = os.path.join(folder, name)
                pages += 1
                with open(page, encoding="utf8") as f:
                    text = f.read()
                for href in re.findall(r'href="([^"]+)"', text):
                    href = html.unescape(href)
                    if "#" not in href or re.match(r"[a-z]+:", href) or "src/" in href:
                        continue
                    path, fragment = href.split("#", 1)
                    if not fragment or GENERATED.match(fragment):
                        continue
                    # rustdoc writes every link it resolves to a page as `*.html`; another
                    # (a dependency's doc text shown on a blanket impl, such as tracing's
                    # `dispatcher#...`) is that crate's to fix.
                    if path and not path.endswith(".html"):
                        continue
                    target = os.path.normpath(os.path.join(folder, path)) if path else page
                    found = ids_of(target)
                    # Pages outside palisade's crates (dependencies' docs, not built with
                    # --no-deps) are not checked.
                    if found is None:
                        if os.path.basename(os.path.dirname(target)).startswith("palisade"):
                            broken.add((os.path.relpath(page, root), href, "no such page"))
                        continue
                    if fragment not in found:
                        broken.add((os.path.relpath(page, root), href, "no such heading"))
    for page, href, why in sorted(broken):
        print(f"{page}: {href}: {why}")
    print(f"doc-anchors: {pages} pages, {len(broken)} broken heading link(s)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
