#!/usr/bin/env python3
"""mklayers.py: layer fixtures for tests/integration/t_rootfs.sh (stdlib only).

  mklayers.py synth DIR [--big-mb N]   three layers exercising whiteouts, opaque
                                       directories, hardlinks, symlinks, devices,
                                       fifos, owners, modes, xattrs, mtimes and a
                                       large incompressible file (gzip, zstd and
                                       plain tar), plus DIR/expected.json: the
                                       merged tree, computed by a small reference
                                       merge written independently of banger's C
  mklayers.py bad DIR                  one small layer per unsafe case
  mklayers.py bench DIR [--mb N]       five gzip layers of about N MB in all
                                       (many small files, some large ones,
                                       overwrites and whiteouts): measurements

The reference merge follows the OCI image spec: a layer's whiteouts hide what
the layers below it hold, whatever their position in the tar; then the
layer's entries apply in order; a parent path that is a symlink is followed
(inside the root); a directory over a directory keeps the children.
"""
import hashlib
import io
import json
import os
import random
import struct
import subprocess
import sys
import tarfile

# ---------------------------------------------------------------- entries


class E:
    """One tar entry of a layer."""

    def __init__(self, name, kind, data=b"", mode=None, uid=0, gid=0, mtime=1700000000,
                 target=None, rdev=(0, 0), xattrs=None):
        self.name, self.kind, self.data = name, kind, data
        self.mode = mode if mode is not None else {"dir": 0o755, "sym": 0o777}.get(kind, 0o644)
        self.uid, self.gid, self.mtime = uid, gid, mtime
        self.target, self.rdev, self.xattrs = target, rdev, xattrs or {}


TYPES = {"reg": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
         "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
         "fifo": tarfile.FIFOTYPE}


def write_tar(path, entries, fmt=tarfile.PAX_FORMAT):
    with open(path, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=fmt) as t:
            for e in entries:
                ti = tarfile.TarInfo(e.name)
                ti.type = TYPES[e.kind]
                ti.mode = e.mode
                ti.uid, ti.gid = e.uid, e.gid
                ti.uname = ti.gname = ""
                ti.mtime = e.mtime
                if e.kind in ("sym", "hard"):
                    ti.linkname = e.target
                if e.kind in ("chr", "blk"):
                    ti.devmajor, ti.devminor = e.rdev
                if e.xattrs:
                    ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                                      for k, v in e.xattrs.items()}
                if e.kind == "reg":
                    ti.size = len(e.data)
                    t.addfile(ti, io.BytesIO(e.data))
                else:
                    t.addfile(ti)


def compress(path, how):
    if how == "gzip":
        subprocess.run(["gzip", "-6", "-n", "-f", path], check=True)
        return path + ".gz"
    if how == "zstd":
        subprocess.run(["zstd", "-q", "-f", "--rm", path], check=True)
        return path + ".zst"
    return path


# ---------------------------------------------------------------- reference merge


def norm(p):
    parts = []
    for c in p.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            raise ValueError(p)
        parts.append(c)
    return "/".join(parts)


class Ref:
    """The merged tree: path -> node (a dict; hardlinks share one dict)."""

    def __init__(self):
        self.t = {"": {"kind": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime": None,
                       "xattrs": {}}}

    def resolve_parent(self, path, create):
        """Return the real path of path's parent, following symlinks."""
        comps = [c for c in path.split("/") if c]
        cur = ""
        hops = 0
        while comps:
            c = comps.pop(0)
            if c == ".":
                continue
            if c == "..":
                cur = cur.rpartition("/")[0]
                continue
            p = c if not cur else cur + "/" + c
            n = self.t.get(p)
            if n is None:
                if not create:
                    return None
                self.t[p] = {"kind": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime": None,
                             "xattrs": {}}
                cur = p
            elif n["kind"] == "sym":
                hops += 1
                assert hops < 40
                tgt = n["target"]
                comps = [x for x in tgt.split("/") if x] + comps
                if tgt.startswith("/"):
                    cur = ""
            elif n["kind"] == "dir":
                cur = p
            else:
                if create:
                    raise ValueError("not a directory: " + p)
                return None
        return cur

    def real(self, path, create):
        path = norm(path)
        if not path:
            return ""
        parent, _, base = path.rpartition("/")
        d = self.resolve_parent(parent, create)
        if d is None:
            return None
        return base if not d else d + "/" + base

    def remove(self, p):
        pre = p + "/"
        for k in [k for k in self.t if k == p or k.startswith(pre)]:
            del self.t[k]

    def apply(self, entries):
        for e in entries:
            base = e.name.rstrip("/").rpartition("/")[2]
            if base == ".wh..wh..opq":
                d = self.real(e.name.rstrip("/").rpartition("/")[0] + "/x", False)
                if d is not None:
                    d = d.rpartition("/")[0]
                    pre = d + "/" if d else ""
                    for k in [k for k in self.t if k and k.startswith(pre) and k != d]:
                        del self.t[k]
            elif base.startswith(".wh.") and not base.startswith(".wh..wh."):
                victim = self.real(e.name.rstrip("/").rpartition("/")[0] + "/" + base[4:], False)
                if victim is not None and victim in self.t:
                    self.remove(victim)
        for e in entries:
            base = e.name.rstrip("/").rpartition("/")[2]
            if base.startswith(".wh."):
                continue
            p = self.real(e.name, True)
            if e.kind == "hard":
                tp = self.real(e.target, False)
                node = self.t[tp]
            else:
                node = {"kind": e.kind, "mode": e.mode, "uid": e.uid, "gid": e.gid,
                        "mtime": e.mtime, "xattrs": dict(e.xattrs)}
                if e.kind == "reg":
                    node["data"] = e.data
                if e.kind == "sym":
                    node["target"] = e.target
                if e.kind in ("chr", "blk"):
                    node["rdev"] = list(e.rdev)
            old = self.t.get(p)
            if old is not None and old is node:
                continue
            if old is not None and old["kind"] == "dir" and node["kind"] == "dir":
                old.update({k: node[k] for k in ("mode", "uid", "gid", "mtime", "xattrs")})
                continue
            if old is not None:
                self.remove(p)
            self.t[p] = node

    def expected(self):
        groups = {}
        out = []
        for p in sorted(self.t):
            n = self.t[p]
            d = {"path": "/" + p, "kind": n["kind"], "mode": n["mode"], "uid": n["uid"],
                 "gid": n["gid"], "mtime": n["mtime"],
                 "xattrs": {k: v.hex() for k, v in n["xattrs"].items()}}
            if n["kind"] == "reg":
                d["size"] = len(n["data"])
                d["sha256"] = hashlib.sha256(n["data"]).hexdigest()
                d["group"] = groups.setdefault(id(n), len(groups))
            if n["kind"] == "sym":
                d["target"] = n["target"]
            if "rdev" in n:
                d["rdev"] = n["rdev"]
            out.append(d)
        counts = {}
        for d in out:
            if "group" in d:
                counts[d["group"]] = counts.get(d["group"], 0) + 1
        for d in out:
            if "group" in d:
                d["nlink"] = counts[d["group"]]
        return out


# ---------------------------------------------------------------- synth


def cap_net_raw():
    # struct vfs_cap_data, revision 2, effective bit set, CAP_NET_RAW (13)
    return struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def acl_access():
    # posix_acl_xattr: version 2, then {tag, perm, id}: USER_OBJ rwx,
    # USER 1000 r-x, GROUP_OBJ r-x, MASK r-x, OTHER r--
    ents = [(0x01, 7, 0xFFFFFFFF), (0x02, 5, 1000), (0x04, 5, 0xFFFFFFFF),
            (0x10, 5, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in ents)


def synth(out, big_mb):
    rnd = random.Random(4)
    big = rnd.randbytes(big_mb << 20)
    long_name = "n" * 255
    long_target = "../" + "t" * 100 + "/target"
    L1 = [
        E("./", "dir", mode=0o755, mtime=1600000000),
        E("etc/", "dir"),
        E("etc/passwd", "reg", b"root:x:0:0:root:/root:/bin/sh\n"),
        E("etc/hostname", "reg", b"layer1\n", xattrs={"user.comment": b"hello"}),
        E("etc/motd", "reg", b"old motd\n"),
        E("usr/", "dir"), E("usr/bin/", "dir"), E("usr/lib/", "dir"),
        E("usr/bin/tool", "reg", b"#!/bin/sh\necho tool\n", mode=0o755),
        E("usr/bin/su", "reg", b"\x7fELF fake su", mode=0o4755),
        E("usr/bin/ping", "reg", b"\x7fELF fake ping", mode=0o755,
          xattrs={"security.capability": cap_net_raw()}),
        E("usr/lib/libx.so.1", "reg", b"libx version 1\n"),
        E("usr/lib/libx.so", "sym", target="libx.so.1"),
        E("bin", "sym", target="usr/bin"),
        E("home/", "dir"),
        E("home/user/", "dir", mode=0o700, uid=1000, gid=1000,
          xattrs={"system.posix_acl_default": acl_access()}),
        E("home/user/.profile", "reg", b"export PS1='$ '\n", uid=1000, gid=1000),
        E("home/user/shared", "reg", b"acl\n", uid=1000, gid=1000,
          xattrs={"system.posix_acl_access": acl_access()}),
        E("srv/big", "reg", b"x", uid=70000, gid=70001, mtime=1700000000.123456789),
        E("opt/app/", "dir"), E("opt/app/a", "reg", b"a\n"), E("opt/app/b", "reg", b"b\n"),
        E("opt/app/sub/", "dir"), E("opt/app/sub/c", "reg", b"c\n"),
        E("opt/app2/", "dir"), E("opt/app2/old2", "reg", b"old2\n"),
        E("var/", "dir"), E("var/old/", "dir"), E("var/old/x", "reg", b"x\n"),
        E("var/cache/", "dir"), E("var/cache/f", "reg", b"f\n"),
        E("var/spool", "reg", b"spool file\n"),
        E("data/big.bin", "reg", big),
        E("data/empty", "reg", b""),
        E("dev/", "dir"),
        E("dev/null", "chr", mode=0o666, rdev=(1, 3)),
        E("dev/sda", "blk", mode=0o660, gid=6, rdev=(8, 0)),
        E("dev/huge", "chr", mode=0o600, rdev=(300, 70000)),
        E("run/fifo", "fifo", mode=0o600),
        E("tmp/", "dir", mode=0o1777),
        E("share/doc/orig", "reg", b"original text\n"),
        E("share/doc/hl", "hard", target="share/doc/orig"),
        E("names/" + long_name, "reg", b"long name\n"),
        E("names/caf\u00e9.txt", "reg", b"utf-8 name\n"),
        E("names/with space", "reg", b"space\n"),
        E("names/abs-link", "sym", target="/etc/passwd"),
        E("names/slow-link", "sym", target=long_target),
        E("/abs/file", "reg", b"absolute name\n"),
    ]
    L2 = [
        E("opt/app/.wh..wh..opq", "reg"),
        E("opt/app/new", "reg", b"new\n"),
        E("var/.wh.old", "reg"),
        E("etc/.wh.hostname", "reg"),
        E("etc/passwd", "reg", b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
        E("usr/lib/libx.so.1", "reg", b"libx version 2\n"),
        E("bin/extra", "reg", b"through the bin symlink\n", mode=0o755),
        E("share/doc/hl2", "hard", target="share/doc/orig"),
        E("var/cache", "reg", b"cache is a file now\n"),
        E("var/spool/", "dir", mode=0o750),
        E("var/spool/job", "reg", b"job\n"),
        E("usr/", "dir", mode=0o755, mtime=1650000000),
    ]
    L3 = [
        E("./etc/motd", "reg", b"new motd\n"),
        E("etc/.wh.motd", "reg"),
        E("opt/app2/new2", "reg", b"new2\n"),
        E("opt/app2/.wh..wh..opq", "reg"),
        E(".//usr//bin/./tool2", "reg", b"normalized\n", mode=0o700),
        E("share/doc/orig", "reg", b"replaced: the hardlinks keep the old text\n"),
        E("names/latin1-\udce9t\udce9", "reg", b"a name that is not UTF-8\n"),
    ]
    os.makedirs(out, exist_ok=True)
    ref = Ref()
    paths = []
    for i, (ents, how) in enumerate(((L1, "gzip"), (L2, "zstd"), (L3, "none"))):
        p = os.path.join(out, "l%d.tar" % (i + 1))
        write_tar(p, ents)
        paths.append(compress(p, how))
        ref.apply(ents)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"layers": [os.path.basename(p) for p in paths], "entries": ref.expected()},
                  f, indent=1)
    print("\n".join(paths))


# ---------------------------------------------------------------- bad


def bad(out):
    os.makedirs(out, exist_ok=True)
    ok = [E("etc/", "dir"), E("etc/passwd", "reg", b"root\n")]
    cases = {
        "dotdot": ok + [E("../etc/passwd", "reg", b"owned\n")],
        "absdotdot": ok + [E("/../../etc/shadow", "reg", b"owned\n")],
        "hardlink-escape": ok + [E("etc/shadow", "hard", target="../../etc/shadow")],
        "hardlink-missing": ok + [E("etc/shadow", "hard", target="etc/nothere")],
        "hardlink-dir": ok + [E("etc/loop", "hard", target="etc")],
        "longname": ok + [E("etc/" + "x" * 256, "reg", b"too long\n")],
        "emptylink": ok + [E("etc/empty", "sym", target="")],
        "notdir-parent": ok + [E("etc/passwd/inner", "reg", b"x\n")],
        "absolute-symlink-ok": ok + [E("etc/abs", "sym", target="/etc/passwd")],
    }
    for name, ents in cases.items():
        write_tar(os.path.join(out, name + ".tar"), ents)
    # a corrupt gzip layer: a valid one with bytes flipped in the middle
    rnd = random.Random(7)
    write_tar(os.path.join(out, "corrupt.tar"),
              ok + [E("data/r", "reg", rnd.randbytes(1 << 20))])
    p = compress(os.path.join(out, "corrupt.tar"), "gzip")
    with open(p, "r+b") as f:
        f.seek(os.path.getsize(p) // 2)
        f.write(b"\xde\xad\xbe\xef" * 64)
    # truncated zstd
    write_tar(os.path.join(out, "trunc.tar"), ok + [E("data/r", "reg", rnd.randbytes(1 << 20))])
    p = compress(os.path.join(out, "trunc.tar"), "zstd")
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) // 2)


# ---------------------------------------------------------------- bench


def bench(out, mb):
    """Five gzip layers, about mb MB of content: a base of many small
    text-like files, library-like mid-size binaries, a few large blobs, and
    upper layers that overwrite and white out part of what is below."""
    os.makedirs(out, exist_ok=True)
    rnd = random.Random(11)
    words = [("w%d" % i).encode() for i in range(4000)]
    pool = b" ".join(rnd.choice(words) for _ in range(2 << 20))

    def text(n):
        o = rnd.randrange(0, len(pool) - n)
        return pool[o:o + n]

    budget = mb << 20
    shares = [0.40, 0.25, 0.15, 0.12, 0.08]
    paths = []
    for li, share in enumerate(shares):
        ents, used, k = [], 0, 0
        target = int(budget * share)
        if li > 0:
            ents.append(E("usr/share/l%d/d%d/.wh..wh..opq" % (li - 1, li), "reg"))
            for j in range(0, 400, 7):
                ents.append(E("usr/share/l0/d%d/.wh.f%d.txt" % (j % 200, j), "reg"))
        while used < target:
            r = rnd.random()
            if r < 0.975:  # small text-like files
                data = text(rnd.randint(200, 16000))
                name = "usr/share/l%d/d%d/f%d.txt" % (li, k % 200, k)
            elif r < 0.9985:  # shared-library-like: half random
                n = rnd.randint(64 << 10, 1 << 20)
                data = rnd.randbytes(n // 2) + text(n - n // 2)
                name = "usr/lib/l%d/d%d/f%d.so" % (li, k % 40, k)
            else:  # a large blob
                data = rnd.randbytes(rnd.randint(4 << 20, 16 << 20))
                name = "opt/blob%d/b%d.bin" % (li, k)
            ents.append(E(name, "reg", data, mode=0o644))
            used += len(data)
            k += 1
        if li > 0:  # overwrite some of the base layer's files
            for j in range(0, 2000, 13):
                ents.append(E("usr/share/l0/d%d/f%d.txt" % (j % 200, j), "reg", text(3000)))
        p = os.path.join(out, "l%d.tar" % (li + 1))
        write_tar(p, ents)
        paths.append(compress(p, "gzip"))
    print("\n".join(paths))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, out = sys.argv[1], sys.argv[2]
    opt = dict(a.split("=", 1) for a in sys.argv[3:] if "=" in a)
    if cmd == "synth":
        synth(out, int(opt.get("--big-mb", "24")))
    elif cmd == "bad":
        bad(out)
    elif cmd == "bench":
        bench(out, int(opt.get("--mb", "400")))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
