#!/usr/bin/env python3
# mkcheckout.py DIR TOTAL_MB NFILES: a synthetic checkout for the benchmark:
# NFILES files in nested directories (about 100 per directory, 3 levels),
# mostly small source-like files plus a few large ones, TOTAL_MB MiB of
# incompressible data in all, fixed mtimes.
import os, sys, random
d, total_mb, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(42)
total = total_mb << 20
big = [total * 3 // 10, total // 10, total // 20]       # 45 %: three large files
rest = total - sum(big)
small = nfiles - len(big)
sizes = [max(1, int(random.expovariate(1.0) * rest / small)) for _ in range(small)]
scale = rest / sum(sizes)
sizes = [max(1, int(s * scale)) for s in sizes] + big
blob = os.urandom(8 << 20)
os.makedirs(d, exist_ok=True)
for i, sz in enumerate(sizes):
    sub = os.path.join(d, "m%02d" % (i // 2000), "p%02d" % ((i // 100) % 20))
    os.makedirs(sub, exist_ok=True)
    p = os.path.join(sub, "f%05d.%s" % (i, "bin" if sz > 1 << 20 else "c"))
    with open(p, "wb") as f:
        left, off = sz, (i * 7919) % (len(blob) - 1)
        while left:
            n = min(left, len(blob) - off)
            f.write(blob[off:off + n])
            left -= n
            off = 0
    os.utime(p, (1714564800, 1714564800))
