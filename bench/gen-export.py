#!/usr/bin/env python3
"""Write an export bundle (the `nix-store --export` / `guix archive --export`
format, see crates/formats/src/export.rs) of N unrelated store items to
stdout: bench/gc.sh's population step, the same stream for Nix and Ferry.

Usage: gen-export.py STORE_DIR N SIZE [SEED]
  each item is a single regular file of SIZE bytes (random, from SEED), at
  STORE_DIR/<random hash>-gcb-<i>; no references, no deriver, no signature.
"""
import hashlib
import random
import struct
import sys

B32 = "0123456789abcdfghijklmnpqrsvwxyz"  # Nix's base-32 alphabet


def s(b):
    if isinstance(b, str):
        b = b.encode()
    pad = (8 - len(b) % 8) % 8
    return struct.pack("<Q", len(b)) + b + b"\0" * pad


def main():
    store, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    rng = random.Random(seed)
    out = sys.stdout.buffer
    head = s("nix-archive-1") + s("(") + s("type") + s("regular") + s("contents")
    tail = s(")")
    seen = set()
    for i in range(n):
        while True:
            h = "".join(rng.choice(B32) for _ in range(32))
            if h not in seen:
                seen.add(h)
                break
        data = rng.randbytes(size) if size > 64 else hashlib.sha256(h.encode()).hexdigest()[:size].encode()
        out.write(struct.pack("<Q", 1))
        out.write(head)
        out.write(s(data))
        out.write(tail)
        out.write(struct.pack("<Q", 0x4558494E))
        out.write(s(f"{store}/{h}-gcb-{i}"))
        out.write(struct.pack("<Q", 0))  # references
        out.write(s(""))  # deriver
        out.write(struct.pack("<Q", 0))  # no signature
    out.write(struct.pack("<Q", 0))


if __name__ == "__main__":
    main()
