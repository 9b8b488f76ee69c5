#!/usr/bin/env python3
"""fake_firecracker.py: a stand-in for Firecracker in banger's tests.

No Firecracker can run on the host banger's tests were written on (it is not
packaged by Debian and the host cannot download it), so the driver
(worker/firecracker.c) is tested against this.  It takes Firecracker's
command line (--api-sock PATH, --id ID; others ignored) and serves the API
on PATH over HTTP/1.1, checking each request against the published swagger
(src/firecracker/swagger/firecracker.yaml) for the paths banger uses:
required fields, field types, no unknown fields, pre-boot only.  Refusals
are 400 with {"fault_message": ...} as Firecracker answers.  Every request is
appended as one JSON line {method, path, body} to $FAKE_FC_RECORD (default
requests.jsonl next to the API socket).

On InstanceStart it runs `$FAKE_FC_AGENT --listen DIR/fake-agent.sock` (the
agent's test mode) and serves hybrid vsock on the configured uds_path:
accept, read "CONNECT <port>\\n", close unless port is 52 and the agent
listens, else reply "OK 1073741824\\n" and relay bytes both ways.  The guest
"powers off" when the agent exits (its POWEROFF in test mode) or on
SendCtrlAltDel: the fake then exits 0.

$FAKE_FC_MODE: "exit-at-start" (exit 1 at once, saying why on stderr, as a
Firecracker without /dev/kvm does), "reject:PATH" (400 for PUT PATH).
"""
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

SCHEMAS = {
    # path: (required, {field: type})
    "/logger": ([], {"level": str, "log_path": str, "show_level": bool,
                     "show_log_origin": bool, "module": str}),
    "/machine-config": (["mem_size_mib", "vcpu_count"],
                        {"cpu_template": str, "smt": bool, "mem_size_mib": int,
                         "track_dirty_pages": bool, "vcpu_count": int,
                         "huge_pages": str}),
    "/boot-source": (["kernel_image_path"],
                     {"boot_args": str, "initrd_path": str, "kernel_image_path": str}),
    "/drives/": (["drive_id", "is_root_device"],
                 {"drive_id": str, "partuuid": str, "is_root_device": bool,
                  "cache_type": str, "is_read_only": bool, "path_on_host": str,
                  "rate_limiter": dict, "io_engine": str, "socket": str}),
    "/network-interfaces/": (["host_dev_name", "iface_id"],
                             {"guest_mac": str, "host_dev_name": str, "iface_id": str,
                              "mtu": int, "rx_rate_limiter": dict,
                              "tx_rate_limiter": dict}),
    "/vsock": (["guest_cid", "uds_path"],
               {"guest_cid": int, "uds_path": str, "vsock_id": str}),
    "/actions": (["action_type"], {"action_type": str}),
}
ACTIONS = ("FlushMetrics", "InstanceStart", "SendCtrlAltDel")
TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}


class State:
    api_sock = None
    vm_id = "anonymous-instance"
    started = False
    config = {}
    agent = None
    agent_sock = None
    record = None
    mode = os.environ.get("FAKE_FC_MODE", "")
    lock = threading.Lock()


def log(msg):
    sys.stderr.write("fake-firecracker: %s\n" % msg)
    sys.stderr.flush()


def schema_for(path):
    if path in SCHEMAS:
        return SCHEMAS[path], None
    for prefix in ("/drives/", "/network-interfaces/"):
        if path.startswith(prefix) and len(path) > len(prefix) and "/" not in path[len(prefix):]:
            return SCHEMAS[prefix], path[len(prefix):]
    return None, None


def check(path, body):
    """None when the body is valid for PUT path, else the fault message."""
    (required, fields), path_id = schema_for(path)
    if not isinstance(body, dict):
        return "Invalid request body: expected a JSON object"
    for k, v in body.items():
        if k not in fields:
            return "An error occurred when deserializing the json body of a request: " \
                   "unknown field `%s`" % k
        t = fields[k]
        ok = isinstance(v, t) and not (t is int and isinstance(v, bool))
        if not ok:
            return "An error occurred when deserializing the json body of a request: " \
                   "invalid type for `%s`, expected %s" % (k, TYPE_NAMES[t])
    for k in required:
        if k not in body:
            return "An error occurred when deserializing the json body of a request: " \
                   "missing field `%s`" % k
    if path_id is not None:
        key = "drive_id" if path.startswith("/drives/") else "iface_id"
        if body[key] != path_id:
            return "The id from the path [%s] does not match the id from the body [%s]!" % (
                path_id, body[key])
    if path == "/machine-config" and not 1 <= body["vcpu_count"] <= 32:
        return "The vCPU number is invalid! The vCPU number can only be 1 or an even number " \
               "when SMT is enabled."
    if path == "/vsock" and body["guest_cid"] < 3:
        return "Invalid guest CID: %d" % body["guest_cid"]
    if path == "/actions" and body["action_type"] not in ACTIONS:
        return "unknown variant `%s`" % body["action_type"]
    if path == "/logger" and not os.path.exists(body.get("log_path", "/")):
        return "Logger error: No such file or directory (os error 2)"
    for k in ("kernel_image_path", "initrd_path", "path_on_host"):
        if k in body and not os.path.exists(body[k]):
            return "Invalid %s: No such file or directory (os error 2): %s" % (k, body[k])
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log(fmt % args)

    def address_string(self):
        return "api"

    def reply(self, code, obj=None):
        data = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(code)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def fault(self, msg):
        self.reply(400, {"fault_message": msg})

    def record(self, method, body):
        with State.lock, open(State.record, "a") as f:
            f.write(json.dumps({"method": method, "path": self.path, "body": body}) + "\n")

    def do_GET(self):
        self.record("GET", None)
        if self.path == "/":
            self.reply(200, {"app_name": "Firecracker", "id": State.vm_id,
                             "state": "Running" if State.started else "Not started",
                             "vmm_version": "0.0.0-fake"})
        elif self.path == "/machine-config" and "/machine-config" in State.config:
            self.reply(200, State.config["/machine-config"])
        else:
            self.fault("Invalid request method and/or path: GET %s." % self.path)

    def do_PATCH(self):
        self.record("PATCH", None)
        self.fault("Invalid request method and/or path: PATCH %s." % self.path)

    def do_PUT(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError as e:
            self.record("PUT", raw.decode(errors="replace"))
            return self.fault("An error occurred when deserializing the json body of a "
                              "request: %s" % e)
        self.record("PUT", body)
        if self.headers.get("Content-Type", "") != "application/json":
            return self.fault("Content-Type is not application/json")
        schema, _ = schema_for(self.path)
        if schema is None:
            return self.fault("Invalid request method and/or path: PUT %s." % self.path)
        if State.mode == "reject:" + self.path:
            return self.fault("fake: %s refused by the test" % self.path)
        err = check(self.path, body)
        if err:
            return self.fault(err)
        if self.path == "/actions":
            return self.action(body["action_type"])
        if State.started:
            return self.fault("The requested operation is not supported after starting the "
                              "microVM.")
        State.config[self.path] = body
        self.reply(204)

    def action(self, what):
        if what == "InstanceStart":
            if State.started:
                return self.fault("The requested operation is not supported after starting "
                                  "the microVM.")
            if "/boot-source" not in State.config:
                return self.fault("Cannot start microvm without kernel configuration.")
            err = start_guest()
            if err:
                return self.fault(err)
            State.started = True
            return self.reply(204)
        if what == "SendCtrlAltDel":
            if not State.started:
                return self.fault("The requested operation is not supported before starting "
                                  "the microVM.")
            self.reply(204)
            threading.Thread(target=lambda: (time.sleep(0.1), power_off("ctrl-alt-del"))).start()
            return None
        return self.reply(204)


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def power_off(why):
    log("guest powered off (%s)" % why)
    print("fake guest: power off (%s)" % why, flush=True)
    if State.agent and State.agent.poll() is None:
        State.agent.kill()
    os._exit(0)


def relay(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def vsock_conn(c):
    line = b""
    while not line.endswith(b"\n") and len(line) < 64:
        d = c.recv(1)
        if not d:
            c.close()
            return
        line += d
    parts = line.decode(errors="replace").split()
    if len(parts) != 2 or parts[0] != "CONNECT" or parts[1] != "52":
        c.close()  # nothing listens on that guest port
        return
    a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        a.connect(State.agent_sock)
    except OSError:
        c.close()  # the guest's agent is not listening yet
        a.close()
        return
    c.sendall(b"OK 1073741824\n")
    threading.Thread(target=relay, args=(c, a), daemon=True).start()
    threading.Thread(target=relay, args=(a, c), daemon=True).start()


def vsock_serve(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=vsock_conn, args=(c,), daemon=True).start()


def start_guest():
    agent = os.environ.get("FAKE_FC_AGENT")
    if not agent or not os.access(agent, os.X_OK):
        return "fake: FAKE_FC_AGENT '%s' is not an executable agent" % agent
    vs = State.config.get("/vsock")
    d = os.path.dirname(State.api_sock)
    State.agent_sock = os.path.join(d, "fake-agent.sock")
    try:
        os.unlink(State.agent_sock)
    except OSError:
        pass
    State.agent = subprocess.Popen([agent, "--listen", State.agent_sock],
                                   stdout=sys.stdout, stderr=sys.stderr)
    print("fake guest: booting %s (%s)" % (State.config["/boot-source"]["kernel_image_path"],
                                           State.config["/boot-source"].get("boot_args", "")),
          flush=True)
    if vs:
        threading.Thread(target=vsock_serve, args=(vs["uds_path"],), daemon=True).start()

    def watch():
        State.agent.wait()
        power_off("the agent exited")
    threading.Thread(target=watch, daemon=True).start()
    return None


def main():
    args = sys.argv[1:]
    i = 0
    while i < len(args):
        if args[i] == "--api-sock" and i + 1 < len(args):
            State.api_sock = args[i + 1]
            i += 2
        elif args[i] == "--id" and i + 1 < len(args):
            State.vm_id = args[i + 1]
            i += 2
        else:
            i += 1
    if State.mode == "exit-at-start":
        log("Error creating KVM object: /dev/kvm: No such file or directory (fake)")
        sys.exit(1)
    if not State.api_sock:
        log("--api-sock is required")
        sys.exit(1)
    State.record = os.environ.get("FAKE_FC_RECORD") or \
        os.path.join(os.path.dirname(State.api_sock), "requests.jsonl")
    signal.signal(signal.SIGTERM, lambda *_: power_off("SIGTERM"))
    srv = UnixServer(State.api_sock, Handler)
    log("api on %s, id %s" % (State.api_sock, State.vm_id))
    srv.serve_forever()


if __name__ == "__main__":
    main()
