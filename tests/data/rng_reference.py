#!/usr/bin/env python3
"""rng_reference.py - an independent plain-Python Kiln RNG (runtime/rng.h) that prints the values
tests/unit/test_rng.c pins. Run it to re-derive them; it needs nothing beyond the standard library."""
import math
import struct

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox(ctr, key):
    c, k = list(ctr), list(key)
    for i in range(10):
        if i:
            k = [(k[0] + W0) & MASK, (k[1] + W1) & MASK]
        p0, p1 = M0 * c[0], M1 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK]
    return c


class Rng:
    def __init__(self, seed, stream):
        self.key = [seed & MASK, seed >> 32]
        self.stream = [stream & MASK, stream >> 32]
        self.n, self.buf, self.spare = 0, [], None

    def u32(self):
        if not self.buf:
            self.buf = philox([self.n & MASK, self.n >> 32] + self.stream, self.key)
            self.n += 1
        return self.buf.pop(0)

    def uniform(self):
        a, b = self.u32(), self.u32()
        return ((a << 32 | b) >> 11) * 2.0**-53

    def normal(self):
        if self.spare is not None:
            s, self.spare = self.spare, None
            return s
        u1, u2 = self.uniform(), self.uniform()
        r, t = math.sqrt(-2.0 * math.log(1.0 - u1)), 2 * math.pi * u2
        self.spare = r * math.sin(t)
        return r * math.cos(t)


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_hex(x):
    return "0x%08x" % struct.unpack("<I", struct.pack("<f", x))[0]


def main():
    print("philox(0,0):", " ".join("%08x" % w for w in philox([0] * 4, [0, 0])))
    r = Rng(42, 7)
    print("u32(42,7):", ", ".join("0x%08xu" % r.u32() for _ in range(6)))
    r = Rng(42, 7)
    print("uniform(42,7):", ", ".join(repr(r.uniform()) for _ in range(3)))
    r = Rng(42, 7)
    print("normal(42,7):", ", ".join(repr(r.normal()) for _ in range(3)))
    print("fnv1a64('fc1.w'): 0x%016xull" % fnv1a64("fc1.w"))
    # glorot on fc1.w: f32[3, 4], seed 1: a = sqrt(6 / (3 + 4))
    r, a = Rng(1, fnv1a64("fc1.w")), math.sqrt(6.0 / 7.0)
    print("glorot fc1.w[3,4] seed 1:", ", ".join(f32_hex(-a + 2 * a * r.uniform()) for _ in range(4)))
    # he on conv.w: f32[2, 3, 2, 2], seed 5: fan_in = 3 * 2 * 2
    r, s = Rng(5, fnv1a64("conv.w")), math.sqrt(2.0 / 12.0)
    print("he conv.w[2,3,2,2] seed 5:", ", ".join(f32_hex(s * r.normal()) for _ in range(4)))


if __name__ == "__main__":
    main()
