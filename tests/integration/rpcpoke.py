#!/usr/bin/env python3
"""rpcpoke.py SOCKET CASE: send hostile or odd frames to bangerd and print
what came back (one line), for t_rpc.sh.  msgpack is written by hand here on
purpose: the point is to send bytes a correct encoder never would."""
import socket
import struct
import sys

sock_path, case = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sock_path)
s.settimeout(5)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def mp_str(t: str) -> bytes:
    b = t.encode()
    return bytes([0xA0 | len(b)]) + b


def request(method: str, rid: int = 1) -> bytes:
    # {"id": rid, "method": method, "params": {}}
    return bytes([0x83]) + mp_str("id") + bytes([rid]) + mp_str("method") + mp_str(method) + \
        mp_str("params") + bytes([0x80])


def read_reply() -> str:
    try:
        hdr = b""
        while len(hdr) < 4:
            chunk = s.recv(4 - len(hdr))
            if not chunk:
                return "closed"
            hdr += chunk
        n = struct.unpack(">I", hdr)[0]
        body = b""
        while len(body) < n:
            chunk = s.recv(n - len(body))
            if not chunk:
                return "truncated"
            body += chunk
        return body.decode("latin-1")
    except socket.timeout:
        return "timeout"


if case == "garbage":
    s.sendall(frame(b"\xc1\xc1\xc1 not msgpack"))
    print(read_reply(), read_reply())
elif case == "oversize":
    s.sendall(struct.pack(">I", 0x7FFFFFFF) + b"x" * 100)
    print(read_reply(), read_reply())
elif case == "zero":
    s.sendall(struct.pack(">I", 0))
    print(read_reply(), read_reply())
elif case == "notmap":
    s.sendall(frame(b"\x93\x01\x02\x03"))
    print(read_reply(), read_reply())
elif case == "truncated":
    s.sendall(struct.pack(">I", 1000) + b"\x83\xa2id")
    s.close()
    print("sent")
elif case == "badparams":
    body = bytes([0x83]) + mp_str("id") + bytes([5]) + mp_str("method") + mp_str("job.show") + \
        mp_str("params") + bytes([0x93, 1, 2, 3])
    s.sendall(frame(body))
    print(read_reply())
elif case == "unknown_then_ping":
    s.sendall(frame(request("no.such.method", 1)))
    first = read_reply()
    s.sendall(frame(request("ping", 2)))
    print(first, "||", read_reply())
elif case == "pipelined":
    s.sendall(frame(request("ping", 1)) + frame(request("ping", 2)) + frame(request("ping", 3)))
    print(read_reply()[:12], read_reply()[:12], read_reply()[:12])
else:
    sys.exit("unknown case " + case)
