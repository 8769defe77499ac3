#!/usr/bin/env python3
"""Independent reference implementation of devgate's pkg/ring placement rule.

Python 3 standard library only (xxHash64 is implemented below). It shares no
code with the Go package: it evaluates the rule as written in pkg/ring/doc.go,
for one key at a time, with no bucket table and no shortcuts (it computes the
integer logarithm for every backend, where Go skips it for equal weights).

Usage:
    python3 reference.py [vectors.json]          print the vectors recomputed from their inputs
    python3 reference.py --check [vectors.json]  compare with the expected values; exit 1 on mismatch

The default path is vectors.json next to this script. Output uses the schema
of vectors.json; pkg/ring's TestReferencePython compares it with Go.
"""

import binascii
import functools
import json
import os
import sys

MASK = (1 << 64) - 1

# --- xxHash64, seed 0 (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md) ---
P1 = 0x9E3779B185EBCA87
P2 = 0xC2B2AE3D27D4EB4F
P3 = 0x165667B19E3779F9
P4 = 0x85EBCA77C2B2AE63
P5 = 0x27D4EB2F165667C5


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & MASK


def _round(acc, lane):
    acc = (acc + lane * P2) & MASK
    return (_rotl(acc, 31) * P1) & MASK


def _merge(acc, v):
    acc ^= _round(0, v)
    return (acc * P1 + P4) & MASK


def _u64(b, i):
    return int.from_bytes(b[i:i + 8], "little")


def xxh64(data, seed=0):
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & MASK, (seed + P2) & MASK, seed, (seed - P1) & MASK]
        while i + 32 <= n:
            for k in range(4):
                v[k] = _round(v[k], _u64(data, i + 8 * k))
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & MASK
        for k in range(4):
            h = _merge(h, v[k])
    else:
        h = (seed + P5) & MASK
    h = (h + n) & MASK
    while i + 8 <= n:
        h ^= _round(0, _u64(data, i))
        h = (_rotl(h, 27) * P1 + P4) & MASK
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i:i + 4], "little") * P1) & MASK
        h = (_rotl(h, 23) * P2 + P3) & MASK
        i += 4
    while i < n:
        h ^= (data[i] * P5) & MASK
        h = (_rotl(h, 11) * P1) & MASK
        i += 1
    h ^= h >> 33
    h = (h * P2) & MASK
    h ^= h >> 29
    h = (h * P3) & MASK
    return h ^ (h >> 32)


# --- the placement rule (pkg/ring/doc.go) ---
BUCKET_BITS = 20
FRAC_BITS = 32
DEFAULT_WEIGHT = 100
GAMMA = 0x9E3779B97F4A7C15


def draw(bucket, seed):
    """u: the (bucket+1)-th output of SplitMix64 seeded with seed."""
    z = (seed + (bucket + 1) * GAMMA) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def neg_log2(u):
    """-log2(u / 2^64) in fixed point with FRAC_BITS fractional bits."""
    u = max(u, 1)
    e = u.bit_length() - 1
    y = u >> (e - 30) if e >= 30 else u << (30 - e)
    frac = 0
    for _ in range(FRAC_BITS):
        y = (y * y) >> 30
        bit = y >> 31
        frac = (frac << 1) | bit
        y >>= bit
    return ((64 - e) << FRAC_BITS) - frac


def rank_consistent(backends, key):
    bucket = xxh64(key) >> (64 - BUCKET_BITS)
    cands = []
    for b in backends:
        bid = b["id"].encode("ascii")
        u = draw(bucket, xxh64(bid))
        cands.append((bid, b["weight"] or DEFAULT_WEIGHT, u, neg_log2(u)))

    def cmp(a, b):  # negative: a ranks first
        x, y = a[3] * b[1], b[3] * a[1]  # L_a/w_a vs L_b/w_b, cross-multiplied
        if x != y:
            return -1 if x < y else 1
        if a[2] != b[2]:
            return -1 if a[2] > b[2] else 1  # larger u first
        return -1 if a[0] < b[0] else 1  # smaller ID bytes first

    cands.sort(key=functools.cmp_to_key(cmp))
    return bucket, [c[0].decode("ascii") for c in cands]


def rank_crc32_mod(backends, key):
    first = binascii.crc32(key) % len(backends)
    n = len(backends)
    return [backends[(first + k) % n]["id"] for k in range(n)]


def compute(vec):
    out = json.loads(json.dumps(vec))
    prim = out["primitives"]
    out["bucket_bits"], out["frac_bits"] = BUCKET_BITS, FRAC_BITS
    for p in prim["xxhash64"]:
        p["out"] = "%016x" % xxh64(p["in"].encode("utf-8"))
    for p in prim["draw"]:
        p["out"] = "%016x" % draw(p["bucket"], int(p["seed"], 16))
    for p in prim["neg_log2"]:
        p["out"] = "%016x" % neg_log2(int(p["u"], 16))
    for s in out["sets"]:
        for c in s["cases"]:
            key = c["key"].encode("utf-8")
            c.pop("bucket", None)
            if s["mode"] == "consistent":
                c["bucket"], owners = rank_consistent(s["backends"], key)
            elif s["mode"] == "crc32-mod":
                owners = rank_crc32_mod(s["backends"], key)
            else:
                raise ValueError("unknown mode %r" % s["mode"])
            c["owner"], c["owners"] = owners[0], owners
    return out


def main(argv):
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    path = paths[0] if paths else os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")
    with open(path, encoding="utf-8") as f:
        vec = json.load(f)
    got = compute(vec)
    if not check:
        json.dump(got, sys.stdout, ensure_ascii=False, indent=1)
        print()
        return 0
    bad = 0
    if got["primitives"] != vec["primitives"]:
        print("primitives differ")
        bad += 1
    for ws, gs in zip(vec["sets"], got["sets"]):
        for wc, gc in zip(ws["cases"], gs["cases"]):
            if wc != gc:
                print("set %s key %r: file %s, reference %s" % (ws["name"], wc["key"], wc["owners"], gc["owners"]))
                bad += 1
    n = sum(len(s["cases"]) for s in vec["sets"])
    print("%d keys, %d mismatches" % (n, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
