"""Reads the attack runtimes off the Watermark-Robustness-Toolbox's published bar chart
(outputs/visualization/barcharts/<dataset>_attack_time_barchart.pdf in
github:dnn-security/Watermark-Robustness-Toolbox, the SoK paper's attack-runtime figure).

The chart is vector graphics drawn by matplotlib: each bar is a filled rectangle starting
at x = 0 hours, the x-axis ticks are labelled in hours, and the y-axis labels name the
attacks. A bar's length times (hours per point, from the first and last tick) is the mean
runtime WRT plotted; the dashed vertical line is its "training of an unmarked model".

    python benchmarks/read_wrt_attack_times.py cifar10_attack_time_barchart.pdf
"""

from __future__ import annotations

import re
import sys
import zlib

NUMBER = r"(-?[\d.]+)"


def content(pdf: bytes) -> str:
    """The page's drawing commands: the largest Flate-compressed stream."""
    streams = re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S)
    return max((zlib.decompress(s) for s in streams if s[:2] == b"x\x9c"), key=len).decode("latin1")


def text(tj: str) -> str:
    return "".join(re.findall(r"\((.*?)\)", tj.replace("\\(", "[").replace("\\)", "]")))


def runtimes(pdf: bytes) -> tuple[dict[str, float], float | None]:
    page = content(pdf)
    labels = [(float(x), float(y), text(t)) for x, y, t in re.findall(
        rf"1 0 -0 1 {NUMBER} {NUMBER} cm\nBT /F1 [\d.]+ Tf\n0 0 Td\n\[(.*?)\] TJ", page, re.S)]
    numbers = [(x, y, t) for x, y, t in labels if re.fullmatch(r"[\d.]+", t)]
    tick_y = min(y for _, y, _ in numbers)  # the x tick labels: numbers on the lowest row
    ticks = sorted((x, float(t)) for x, y, t in numbers if abs(y - tick_y) < 0.01)
    grid = sorted({float(x) for x in re.findall(rf"\n{NUMBER} [\d.]+ m\n\1 [\d.]+ l\n", page)})
    # tick label centres are a few points left of their grid line: pair them in order
    positions = [min(grid, key=lambda g: abs(g - x - 8)) for x, _ in ticks]
    hours_per_point = (ticks[-1][1] - ticks[0][1]) / (positions[-1] - positions[0])
    origin = positions[0]
    names = [(y, t) for x, y, t in labels if x < origin and y > tick_y + 5]
    out = {}
    bar = (rf"\n{NUMBER} {NUMBER} m\n{NUMBER} [\d.]+ l\n[\d.]+ {NUMBER} l\n"
           r"[\d.]+ [\d.]+ l\nh\n\nf")
    for x0, y0, x1, y1 in re.findall(bar, page):
        x0, y0, x1, y1 = map(float, (x0, y0, x1, y1))
        if abs(x0 - origin) > 0.01 or y1 - y0 > 50:
            continue  # the page or the axes' background, not a bar
        centre = (y0 + y1) / 2
        name = min(names, key=lambda n: abs(n[0] - centre))[1]
        out[name] = (x1 - x0) * hours_per_point
    dashed = re.search(rf"\[ [\d. ]+\] 0 d.*?\n{NUMBER} [\d.]+ m\n\1 [\d.]+ l", page, re.S)
    unmarked = (float(dashed.group(1)) - origin) * hours_per_point if dashed else None
    return out, unmarked


if __name__ == "__main__":
    found, unmarked = runtimes(open(sys.argv[1], "rb").read())
    for name, hours in found.items():
        print(f"{name:30s} {hours:7.3f} h  {hours * 3600:8.0f} s")
    if unmarked is not None:
        print(f"{'(training an unmarked model)':30s} {unmarked:7.3f} h  {unmarked * 3600:8.0f} s")
