"""Instruction counts of a CUDA kernel's SASS, for estimates made without a GPU.

    python benchmarks/sass_ranges.py DUMP KERNEL            branch skeleton (branches, barriers,
                                                            atomics, Philox multiplies) with addresses
    python benchmarks/sass_ranges.py DUMP KERNEL A-B ...    instructions from address A to B
                                                            (hex, inclusive), by opcode

DUMP is `cuobjdump -sass` of a cubin (`nvcc -cubin -arch=sm_90 ...`; triton's wheel ships a
cuobjdump in triton/backends/nvidia/bin when the toolkit has none); KERNEL is a substring of
the mangled name (e.g. `IfilLb1` for projection_kernel<float, int32_t, int64_t, true>). The
skeleton shows where a loop body starts and ends; the ranges then give the instructions one
path through it executes (benchmarks/RESULTS.md, "Projection kernels' instruction count").
"""
import collections
import re
import sys

_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+((?:@!?U?P\w+\s+)?[A-Z][^;]*);")
_MARK = re.compile(r"\b(BRA|BAR|EXIT|REDG|ATOM|IMAD\.WIDE\.U32 R\d+, R\d+, -0x326172a9)")


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    text = open(argv[1]).read()
    funcs = [f for f in re.split(r"\n\s*Function : ", text)[1:] if argv[2] in f.split("\n", 1)[0]]
    if len(funcs) != 1:
        sys.exit(f"{len(funcs)} kernels match {argv[2]!r}: name exactly one")
    ins = [(int(m.group(1), 16), m.group(2)) for m in _INSTR.finditer(funcs[0])]
    print(f"{funcs[0].split(chr(10), 1)[0]}: {len(ins)} instructions")
    if len(argv) == 3:
        for addr, text_ in ins:
            if _MARK.search(text_):
                print(f"  {addr:#06x} {text_[:72]}")
    for r in argv[3:]:
        lo, hi = (int(x, 16) for x in r.split("-"))
        ops = [re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for a, t in ins if lo <= a <= hi]
        top = ", ".join(f"{k} {v}" for k, v in collections.Counter(ops).most_common(8))
        print(f"  {r}: {len(ops)} ({top})")


if __name__ == "__main__":
    main(sys.argv)
