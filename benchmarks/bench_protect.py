"""Throughput of mlguard.protect: file encryption and decryption, and loading an encrypted
checkpoint against loading the same checkpoint unencrypted.

Everything is single-threaded (cryptography's AES-GCM runs on the calling thread). Files
live in a temporary folder that is deleted at the end; they are freshly written, so reads
come from the page cache, and writes include an fsync (as encrypt_file does). Baselines:
raw AES-256-GCM on 1 MiB buffers in memory (the ceiling), a plain copy of the file with an
fsync (the I/O floor), torch.load(weights_only=True) and safetensors.torch.load_file.
Checkpoint loads are timed alone and followed by a copy into preallocated tensors (what
model.load_state_dict does; it also makes safetensors' lazily mapped data really be read),
plain and encrypted runs alternating. Correctness is checked before anything is timed.
Prints a table; --json writes the figures.

    python benchmarks/bench_protect.py                      # 1 GB file, ~150 MB checkpoint
    python benchmarks/bench_protect.py --size-mb 256 --ckpt-mb 50 --repeat 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import safetensors.torch
import torch
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mlguard import protect
from mlguard.files import container

MB = 1 << 20


def median_time(fn, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_median_times(a, b, repeat: int) -> tuple[float, float]:
    """Median times of a and b, run alternately (after one warm-up each) so that both see the
    same page cache and malloc state: torch.load's speed depends a lot on whether freed
    memory is reused or freshly faulted in, and alternating keeps that state equal."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeat):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


class _Discard:
    def write(self, data) -> int:
        return len(data)


def encrypt_discard(path: str, key: bytes) -> None:
    """Reads and seals every chunk; the ciphertext is dropped: no output I/O."""
    with open(path, "rb") as f:
        container.encrypt_stream(f, _Discard(), key=key)


def write_random(path: str, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MB)
            f.write(os.urandom(n))
            left -= n


def sha256(path: str) -> str:
    return protect.file_sha256(path)


def copy_with_fsync(src: str, dst: str) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, MB)
        fout.flush()
        os.fsync(fout.fileno())


def decrypt_discard(path: str, key: bytes) -> None:
    """Authenticates and decrypts every chunk into one reused buffer: no output I/O."""
    with container.DecryptingReader(path, key=key) as reader:
        buf = bytearray(reader.chunk_size)
        while reader.readinto(buf):
            pass
        reader.verify_all()


def aes_in_memory(size: int) -> None:
    aead, nonce, block = AESGCM(os.urandom(32)), os.urandom(12), os.urandom(MB)
    for _ in range(size // MB):
        aead.encrypt(nonce, block, b"")


def checkpoint(size_mb: int) -> dict[str, torch.Tensor]:
    """A state_dict of about size_mb MB: ResNet-like 3x3 convs plus a large linear layer."""
    g = torch.Generator().manual_seed(0)
    sd, total, i = {}, 0, 0
    while total < size_mb * MB:
        shape = (512, 512, 3, 3) if i % 4 else (1000, 2048)
        sd[f"layer{i}.weight"] = torch.randn(shape, generator=g)
        sd[f"layer{i}.bias"] = torch.randn(shape[0], generator=g)
        total += sd[f"layer{i}.weight"].nbytes
        i += 1
    return sd


def copy_into(target: dict, sd: dict) -> None:
    """What model.load_state_dict does with the loaded tensors: copy every byte into place
    (this also makes lazily memory-mapped safetensors data really be read)."""
    for k, t in sd.items():
        target[k].copy_(t)


def same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the large file (MiB)")
    ap.add_argument("--ckpt-mb", type=int, default=150, help="size of the checkpoint (MiB)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ckpt-repeat", type=int, default=21,
                    help="repetitions of each checkpoint load (they are short and noisy)")
    ap.add_argument("--dir", default=None, help="parent of the temporary folder")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    key = protect.new_file_key()
    size = args.size_mb * MB
    rows: list[dict] = []
    checkpoint_rows: list[dict] = []

    def row(name: str, seconds: float, nbytes: int, baseline: float | None = None) -> None:
        rows.append({"step": name, "median_s": seconds, "GB_per_s": nbytes / seconds / 1e9,
                     "vs_baseline": None if baseline is None else seconds / baseline})

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-protect-") as tmp:
        src, enc, dec, cp = (os.path.join(tmp, n) for n in ("src", "enc", "dec", "copy"))
        write_random(src, size)
        protect.encrypt_file(src, enc, key=key)
        protect.decrypt_file(enc, dec, key=key)
        assert sha256(dec) == sha256(src), "decryption does not give back the file"

        row("AES-256-GCM in memory, 1 MiB buffers (ceiling)",
            median_time(lambda: aes_in_memory(size), args.repeat), size)
        t_copy = median_time(lambda: copy_with_fsync(src, cp), args.repeat)
        row("plain copy + fsync (I/O floor)", t_copy, size)
        row("encrypt_file (raw key)", median_time(
            lambda: protect.encrypt_file(src, enc, key=key), args.repeat), size, t_copy)
        row("decrypt_file (raw key)", median_time(
            lambda: protect.decrypt_file(enc, dec, key=key), args.repeat), size, t_copy)
        row("encrypt, no output (read + seal)", median_time(
            lambda: encrypt_discard(src, key), args.repeat), size)
        row("decrypt + authenticate, no output", median_time(
            lambda: decrypt_discard(enc, key), args.repeat), size)
        for p in (src, enc, dec, cp):
            os.unlink(p)

        sd = checkpoint(args.ckpt_mb)
        nbytes = sum(t.nbytes for t in sd.values())
        pt, st = os.path.join(tmp, "m.pt"), os.path.join(tmp, "m.safetensors")
        torch.save(sd, pt)
        safetensors.torch.save_file(sd, st)
        for p in (pt, st):
            protect.encrypt_file(p, p + ".enc", key=key)
            assert same(protect.load_encrypted(p + ".enc", key=key), sd)

        target = {k: torch.empty_like(v) for k, v in sd.items()}  # the "model"
        del sd
        loaders = {
            "torch.save": (lambda: torch.load(pt, weights_only=True),
                           lambda: protect.load_encrypted(pt + ".enc", key=key)),
            "safetensors": (lambda: safetensors.torch.load_file(st),
                            lambda: protect.load_encrypted(st + ".enc", key=key)),
        }
        for fmt, (plain, encrypted) in loaders.items():
            for into in (False, True):
                run = (lambda f: (lambda: copy_into(target, f()))) if into else (lambda f: f)
                t_plain, t_enc = paired_median_times(run(plain), run(encrypted),
                                                     args.ckpt_repeat)
                what = " + copy into model" if into else ""
                checkpoint_rows.append({"format": fmt, "step": "load" + what,
                                        "plain_s": t_plain, "encrypted_s": t_enc,
                                        "ratio": t_enc / t_plain})
        scrypt_s = median_time(lambda: container.file_key(
            container.new_header(b"pw", MB, container.DEFAULT_SCRYPT), b"pw", None, "bench"),
            args.repeat, warmup=0)

    print(f"mlguard.protect, {args.size_mb} MiB file (median of {args.repeat}), "
          f"{nbytes / MB:.0f} MiB checkpoint (median of {args.ckpt_repeat}), 1 thread, "
          f"torch {torch.__version__}")
    print(f"{'step':<50} {'median s':>9} {'GB/s':>7} {'vs baseline':>12}")
    for r in rows:
        ratio = "" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}x"
        print(f"{r['step']:<50} {r['median_s']:>9.3f} {r['GB_per_s']:>7.2f} {ratio:>12}")
    print(f"\n{'checkpoint':<12} {'step':<28} {'plain s':>8} {'encrypted s':>12} {'ratio':>7} "
          f"{'extra ms':>9}")
    for r in checkpoint_rows:
        print(f"{r['format']:<12} {r['step']:<28} {r['plain_s']:>8.3f} {r['encrypted_s']:>12.3f} "
              f"{r['ratio']:>6.2f}x {1e3 * (r['encrypted_s'] - r['plain_s']):>9.1f}")
    print(f"scrypt key derivation (N=2^17, r=8, p=1), once per passphrase load: {scrypt_s:.3f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(), "machine": platform.machine(),
                       "torch": torch.__version__, "size_mb": args.size_mb,
                       "checkpoint_bytes": nbytes, "repeat": args.repeat,
                       "ckpt_repeat": args.ckpt_repeat, "rows": rows,
                       "checkpoint": checkpoint_rows,
                       "scrypt_s": scrypt_s}, f, indent=2)


if __name__ == "__main__":
    main()
