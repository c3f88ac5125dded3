#!/usr/bin/env python3
"""The shape of src/: the longest functions, the widest types, and where
each type's methods live.

Run by scripts/test.sh, it fails when the routing core loses its shape
again (docs/architecture.md, "Services and ports"):

- no struct in src/routing/ has more than MAX_FIELDS fields;
- no type's `impl` blocks are spread over more than MAX_IMPL_FILES files.

With --report it prints the tables the closing notes quote (the ten
longest functions, the ten widest structs, the ten types with the most
methods) and passes. The parsing is deliberately simple: braces are
matched outside strings, chars and comments, which is enough for this
code base (rustfmt layout).
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")
MAX_FIELDS = 10
MAX_IMPL_FILES = 3


def code_only(text):
    """The text with comments, strings and char literals blanked (same
    length, newlines kept), so that braces can be counted."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 8]) and (i == 0 or not text[i - 1].isalnum()):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:i + 4])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(code, open_at):
    """Index just past the brace block that opens at `open_at`."""
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def rust_files():
    for root, _, files in os.walk(SRC):
        for name in sorted(files):
            if name.endswith(".rs"):
                yield os.path.join(root, name)


FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")
STRUCT = re.compile(r"\bstruct\s+([A-Za-z_][A-Za-z0-9_]*)[^;{(]*\{")
IMPL = re.compile(r"^\s*impl\b([^{;]*)\{", re.M)


def impl_target(header):
    """`Router` of `impl Router`, `impl<'a> Session<'a>`, `impl X for Router`."""
    header = re.sub(r"^\s*<[^>]*>", "", header.strip())
    if " for " in header:
        header = header.split(" for ", 1)[1]
    header = header.split(" where ")[0].strip()
    m = re.match(r"([A-Za-z_][A-Za-z0-9_:]*)", header)
    return m.group(1).split("::")[-1] if m else None


def scan():
    functions, structs = [], []
    impl_files = defaultdict(set)
    methods = defaultdict(int)
    for path in rust_files():
        text = open(path, encoding="utf-8").read()
        code = code_only(text)
        # Unit tests are not the shape of the product.
        cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests", code)
        if cut:
            code = code[:cut.start()]
        rel = os.path.relpath(path, ROOT)
        line_of = lambda at: code.count("\n", 0, at) + 1
        for m in FN.finditer(code):
            brace = code.find("{", m.end())
            semi = code.find(";", m.end())
            if brace < 0 or (0 <= semi < brace):
                continue  # a declaration without a body
            end = block_end(code, brace)
            functions.append((line_of(end) - line_of(m.start()) + 1, m.group(1), f"{rel}:{line_of(m.start())}"))
        for m in STRUCT.finditer(code):
            end = block_end(code, m.end() - 1)
            body = code[m.end():end - 1]
            depth, fields = 0, 0
            for part in re.split(r"(\{|\}|\(|\)|<|>|,)", body):
                if part in "{(<":
                    depth += part != ""
                elif part in "})>":
                    depth -= part != ""
                elif depth == 0 and re.search(r"\b[a-z_][a-z0-9_]*\s*:", part):
                    fields += 1
            structs.append((fields, m.group(1), f"{rel}:{line_of(m.start())}"))
        for m in IMPL.finditer(code):
            target = impl_target(m.group(1))
            if not target or " for " in m.group(1):
                continue  # trait impls are the trait's shape, not the type's
            impl_files[target].add(rel)
            end = block_end(code, m.end() - 1)
            methods[target] += len(FN.findall(code[m.end():end]))
    return functions, structs, impl_files, methods


def main():
    functions, structs, impl_files, methods = scan()
    report = "--report" in sys.argv
    if report:
        print("Longest functions (lines, brace to brace):")
        for lines, name, where in sorted(functions, reverse=True)[:10]:
            print(f"  {lines:4}  {name:32} {where}")
        print("Widest structs (fields):")
        for fields, name, where in sorted(structs, reverse=True)[:10]:
            print(f"  {fields:4}  {name:32} {where}")
        print("Types with the most methods (inherent impls: methods, files):")
        for name in sorted(methods, key=lambda t: -methods[t])[:10]:
            print(f"  {methods[name]:4}  {name:32} {len(impl_files[name])} file(s)")
    problems = []
    for fields, name, where in structs:
        if where.startswith(os.path.join("src", "routing")) and fields > MAX_FIELDS:
            problems.append(f"{where}: struct {name} has {fields} fields (at most {MAX_FIELDS} in src/routing/)")
    for name, files in impl_files.items():
        if len(files) > MAX_IMPL_FILES:
            problems.append(f"impl blocks of {name} are spread over {len(files)} files "
                            f"(at most {MAX_IMPL_FILES}): {', '.join(sorted(files))}")
    if problems and not report:
        print("check-shape: the code lost its shape:", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        sys.exit(1)
    if report and problems:
        print("Would fail:")
        for p in problems:
            print("  " + p)
    elif not report:
        print(f"check-shape: {len(structs)} structs, {len(impl_files)} types with methods; "
              f"routing structs within {MAX_FIELDS} fields, impls within {MAX_IMPL_FILES} files")


if __name__ == "__main__":
    main()
