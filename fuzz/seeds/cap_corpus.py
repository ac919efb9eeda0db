#!/usr/bin/env python3
"""Keeps at most N inputs of a minimised corpus: a greedy set cover over the coverage edges
in a libFuzzer merge control file (the inputs that add the most edges first, smaller first on a
tie), so a corpus that needs more inputs for full coverage keeps the most coverage N can hold.

usage: cap_corpus.py CONTROL_FILE N [MAX_BYTES]   (prints the paths to keep, one a line)
"""
import sys

control, limit = sys.argv[1], int(sys.argv[2])
budget = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 60
lines = open(control, encoding="utf-8", errors="replace").read().splitlines()
n = int(lines[0])
paths = lines[2 : 2 + n]
size, cov = {}, {}
for line in lines[2 + n :]:
    parts = line.split()
    if len(parts) >= 2 and parts[0] == "STARTED":
        size[int(parts[1])] = int(parts[2]) if len(parts) > 2 else 0
    elif parts and parts[0] == "COV":
        cov[int(parts[1])] = set(parts[2:])
covered, keep = set(), []
while len(keep) < limit:
    fits = [i for i in cov if size.get(i, 0) <= budget]
    best = max(fits, key=lambda i: (len(cov[i] - covered), -size.get(i, 0)), default=None)
    if best is None or not cov[best] - covered:
        break
    covered |= cov.pop(best)
    budget -= size.get(best, 0)
    keep.append(best)
print("\n".join(paths[i] for i in keep))
