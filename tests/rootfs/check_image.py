#!/usr/bin/env python3
"""check_image.py IMAGE EXPECTED.json [--fs-time=N]: compare an ext4 image,
read from outside with debugfs (e2fsprogs), against the merged tree that
mklayers.py computed.  Checks every path (nothing missing, nothing extra),
type, permission bits, owner, mtime (seconds and nanoseconds), size,
contents (sha256 of `debugfs dump`), symlink targets, device numbers,
xattrs (`ea_list`) and hardlinks (shared inode numbers, link counts).

Prints one line per mismatch and exits 1 when there is any; prints
"ok: N entries" and exits 0 otherwise.
"""
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

KINDS = {"regular": "reg", "directory": "dir", "symlink": "sym",
         "character special": "chr", "block special": "blk", "FIFO": "fifo"}


def debugfs(img, cmds):
    """Run cmds in one debugfs process; return {cmd: output bytes}."""
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(b"\n".join(c.encode("utf-8", "surrogateescape") for c in cmds) + b"\n")
        name = f.name
    try:
        out = subprocess.run(["debugfs", "-f", name, img], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, check=True).stdout
    finally:
        os.unlink(name)
    res, cur, buf = {}, None, []
    for line in out.split(b"\n"):
        if line.startswith(b"debugfs: "):
            if cur is not None:
                res[cur] = b"\n".join(buf)
            cur, buf = line[9:].decode("utf-8", "surrogateescape"), []
        else:
            buf.append(line)
    if cur is not None:
        res[cur] = b"\n".join(buf)
    return res


def q(p):
    return '"%s"' % p


def acl_to_disk(v):
    """Linux posix_acl xattr (version 2) -> ext4's on-disk form."""
    out = struct.pack("<I", 1)
    for i in range(4, len(v), 8):
        tag, perm, ident = struct.unpack("<HHI", v[i:i + 8])
        if tag in (0x02, 0x08):
            out += struct.pack("<HHI", tag, perm, ident)
        else:
            out += struct.pack("<HH", tag, perm)
    return out


def parse_ea(text):
    res = {}
    for line in text.decode("utf-8", "surrogateescape").splitlines():
        m = re.match(r"^\s+(\S+) \((\d+)\)(?: = (.*))?$", line)
        if not m:
            continue
        name, n, val = m.group(1), int(m.group(2)), m.group(3) or ""
        if val.startswith('"'):
            data = val[1:-1].encode("utf-8", "surrogateescape")
        else:
            data = bytes(int(x, 16) for x in val.split())
        res[name] = data if len(data) == n else None
    return res


def main():
    img, exp_path = sys.argv[1], sys.argv[2]
    fs_time = 946684800
    for a in sys.argv[3:]:
        if a.startswith("--fs-time="):
            fs_time = int(a.split("=", 1)[1])
    exp = json.load(open(exp_path))["entries"]
    exp.append({"path": "/lost+found", "kind": "dir", "mode": 0o700, "uid": 0, "gid": 0,
                "mtime": None, "xattrs": {}})
    byp = {e["path"]: e for e in exp}
    tmp = tempfile.mkdtemp(prefix="check-image.")
    cmds = []
    for i, e in enumerate(exp):
        p = e["path"] if e["path"] != "/" else "/"
        cmds.append("stat " + q(p))
        cmds.append("ea_list " + q(p))
        if e["kind"] == "dir":
            cmds.append("ls -p " + q(p))
        if e["kind"] in ("reg", "sym"):
            e["_dump"] = os.path.join(tmp, "f%d" % i)
            cmds.append("dump " + q(p) + " " + e["_dump"])
    out = debugfs(img, cmds)
    bad = []
    inos = {}

    def err(p, msg):
        bad.append("%s: %s" % (p, msg))

    for e in exp:
        p = e["path"]
        st = out.get("stat " + q(p), b"").decode("utf-8", "surrogateescape")
        m = re.search(r"Inode: (\d+)\s+Type: (.+?)\s+Mode:\s+(\d+)", st)
        if not m:
            err(p, "missing in the image (%s)" % st.strip()[:80])
            continue
        ino, kind, mode = int(m.group(1)), KINDS.get(m.group(2), m.group(2)), int(m.group(3), 8)
        if kind != e["kind"]:
            err(p, "type %s, expected %s" % (kind, e["kind"]))
            continue
        if mode != e["mode"]:
            err(p, "mode %o, expected %o" % (mode, e["mode"]))
        m = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+).*?Size: (\d+)", st)
        uid, gid, size = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if (uid, gid) != (e["uid"], e["gid"]):
            err(p, "owner %d:%d, expected %d:%d" % (uid, gid, e["uid"], e["gid"]))
        m = re.search(r" mtime: 0x([0-9a-f]+):([0-9a-f]+)", st)
        lo, extra = int(m.group(1), 16), int(m.group(2), 16)
        sec = (lo - (1 << 32) if lo >= 1 << 31 else lo) + ((extra & 3) << 32)
        nsec = extra >> 2
        want = e["mtime"] if e["mtime"] is not None else fs_time
        if sec != int(want) or abs(nsec - round((want - int(want)) * 1e9)) > 1000:
            err(p, "mtime %d.%09d, expected %r" % (sec, nsec, want))
        m = re.search(r"Links: (\d+)", st)
        links = int(m.group(1))
        if e["kind"] == "reg":
            if size != e["size"]:
                err(p, "size %d, expected %d" % (size, e["size"]))
            data = open(e["_dump"], "rb").read() if os.path.exists(e["_dump"]) else b""
            if hashlib.sha256(data).hexdigest() != e["sha256"]:
                err(p, "contents differ (%d bytes dumped)" % len(data))
            if links != e["nlink"]:
                err(p, "%d links, expected %d" % (links, e["nlink"]))
            g = inos.setdefault(e["group"], ino)
            if g != ino:
                err(p, "inode %d, expected the hardlinked inode %d" % (ino, g))
        if e["kind"] == "sym":
            data = open(e["_dump"], "rb").read() if os.path.exists(e["_dump"]) else b""
            m = re.search(r'Fast link dest: "(.*)"', st)
            tgt = m.group(1).encode("utf-8", "surrogateescape") if m else data
            if tgt != e["target"].encode("utf-8", "surrogateescape"):
                err(p, "symlink to %r, expected %r" % (tgt, e["target"]))
        if e["kind"] in ("chr", "blk"):
            m = re.search(r"Device major/minor number: (\d+):(\d+)", st)
            if not m or [int(m.group(1)), int(m.group(2))] != e["rdev"]:
                err(p, "device %s, expected %s" % (m.group(0) if m else "none", e["rdev"]))
        if e["kind"] == "dir":
            ls = out.get("ls -p " + q(p), b"").decode("utf-8", "surrogateescape")
            names = set()
            for line in ls.splitlines():
                f = line.split("/")
                if len(f) >= 7 and f[5] not in (".", ".."):
                    names.add(f[5])
            pre = p.rstrip("/") + "/"
            want_names = {x["path"][len(pre):] for x in exp
                          if x["path"].startswith(pre) and "/" not in x["path"][len(pre):]
                          and x["path"] != p}
            for n in sorted(names - want_names):
                err(pre + n, "in the image but not expected")
            for n in sorted(want_names - names):
                err(pre + n, "expected but not listed in its directory")
            subdirs = sum(1 for n in want_names if byp[pre + n]["kind"] == "dir")
            if links != 2 + subdirs:
                err(p, "%d links, expected %d" % (links, 2 + subdirs))
        ea = parse_ea(out.get("ea_list " + q(p), b""))
        want = {}
        for k, v in e["xattrs"].items():
            v = bytes.fromhex(v)
            want[k] = acl_to_disk(v) if k.startswith("system.posix_acl_") else v
        if ea != want:
            err(p, "xattrs %r, expected %r" % (ea, want))
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    for b in bad:
        print(b)
    if bad:
        sys.exit(1)
    print("ok: %d entries" % len(exp))


if __name__ == "__main__":
    main()
