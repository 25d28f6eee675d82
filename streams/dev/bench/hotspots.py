"""`python -m streams.dev.bench.hotspots FILE [--top N]`: where a py-spy profile's time went.

Reads py-spy's collapsed stacks (`--format raw`: one "frame;frame;frame count" per line) and
prints, per thread, the functions with the most samples on their stack (inclusive) and at the
top of it (self).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def hotspots(lines: list[str]) -> tuple[int, Counter[str], Counter[str]]:
    total, inclusive, own = 0, Counter[str](), Counter[str]()
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, inclusive, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--grep", default="", help="only stacks containing this text")
    args = parser.parse_args()
    lines = [ln for ln in args.stacks.read_text().splitlines() if args.grep in ln]
    total, inclusive, own = hotspots(lines)
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title} (of {total} samples)")
        for frame, count in counter.most_common(args.top):
            print(f"{100 * count / max(total, 1):5.1f}%  {frame[:150]}")


if __name__ == "__main__":
    main()
