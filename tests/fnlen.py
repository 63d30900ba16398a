#!/usr/bin/env python3
"""fnlen: lists the C functions of worker/src at or above a length (issue 14: "no function over about 100 lines
without a reason written above it").

Usage: tests/fnlen.py [MIN_LINES] [FILES...]   (default 100, every worker/src/*/*.c)
A function's length is from the first line of its signature (column 0, the project's "type name(args) {" style,
possibly wrapped) to its closing "}" in column 0. Prints "LINES FILE FUNCTION", longest first; exits 0.
"""
import glob
import os
import re
import sys


def lengths(path):
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
    i = 0
    while i < len(lines):
        l = lines[i]
        if (re.match(r"^[A-Za-z_]", l) and "(" in l and not l.startswith(("typedef", "struct", "enum", "#"))
                and not l.rstrip().endswith(";") and "=" not in l.split("(")[0]):
            j = i
            while j < len(lines) and not lines[j].rstrip().endswith(("{", ";")):
                j += 1
            if j < len(lines) and lines[j].rstrip().endswith("{"):
                k = j + 1
                while k < len(lines) and lines[k] != "}":
                    k += 1
                yield k - i + 1, re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", l).group(1)
                i = k
        i += 1


def main(argv):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    least = int(argv[1]) if len(argv) > 1 else 100
    files = argv[2:] or sorted(glob.glob(os.path.join(repo, "worker/src/*/*.c")))
    rows = [(n, os.path.relpath(f, repo), name) for f in files for n, name in lengths(f)]
    for n, f, name in sorted(rows, reverse=True):
        if n >= least:
            print(f"{n:5d} {f} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
