#!/usr/bin/env python3
"""Interop check: a Fala signaling client written only from docs/PROTOCOL.md.

Usage: fala_client.py HOST:PORT

Runs a multi-connection scenario against a running fala-server, checks every
reply as the protocol document describes it, prints one line per step and
exits 0 only if everything matched (1 on the first mismatch).
Needs the standard library plus `msgpack` and `cryptography` (Ed25519).
"""
import hashlib
import os
import socket
import struct
import sys

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

TIMEOUT = 5.0  # seconds; no read ever waits longer than this
PRESENCE = {"user_joined", "user_left", "user_status"}
ANY = object()  # field must be present, any value


class Mismatch(Exception):
    pass


def fail(what, expected, got):
    raise Mismatch(f"{what}\n  expected: {expected}\n  got:      {got}")


class Conn:
    """One signaling connection. Presence events are set aside in `presence`
    (they may interleave with replies and call messages); every other message
    must come exactly in the order the scenario expects."""

    def __init__(self, label, addr, key=None):
        self.label = label
        self.sock = socket.create_connection(addr, timeout=TIMEOUT)
        self.sock.settimeout(TIMEOUT)
        self.presence = []
        self.key = key or Ed25519PrivateKey.generate()
        self.identity = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.challenge = None

    def send(self, msg):
        body = msgpack.packb(msg, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def read_exactly(self, n, timeout=TIMEOUT):
        self.sock.settimeout(timeout)
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                raise TimeoutError(f"{self.label}: nothing within {timeout} s")
            if not chunk:
                raise EOFError(f"{self.label}: connection closed by the server")
            buf += chunk
        return buf

    def recv(self, timeout=TIMEOUT):
        n = struct.unpack(">I", self.read_exactly(4, timeout))[0]
        if not 1 <= n <= 65536:
            fail(f"{self.label}: frame length", "1..65536", n)
        msg = msgpack.unpackb(self.read_exactly(n, timeout), raw=False)
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            fail(f"{self.label}: frame body", "map with a `type` string", msg)
        return msg

    def expect(self, mtype, **fields):
        """Next non-presence message must be `mtype` with these fields."""
        try:
            while True:
                msg = self.recv()
                if msg["type"] in PRESENCE:
                    self.presence.append(msg)
                    continue
                check(self.label, msg, mtype, fields)
                return msg
        except (TimeoutError, EOFError) as e:
            fail(f"{self.label}: waiting for {mtype}", fmt(mtype, fields), e)

    def expect_presence(self, events):
        """The next presence events are exactly `events` (list of (type, fields)),
        in any order between users but in the listed order for one user; non-presence messages are not allowed."""
        want = list(events)
        while want:
            if not self.presence:
                try:
                    msg = self.recv()
                except (TimeoutError, EOFError) as e:
                    fail(f"{self.label}: waiting for presence", want, e)
                if msg["type"] not in PRESENCE:
                    fail(f"{self.label}: unexpected message while awaiting presence", want, msg)
                self.presence.append(msg)
            msg = self.presence.pop(0)
            for i, (t, f) in enumerate(want):
                earlier = {who(f2) for _, f2 in want[:i]}
                if matches(msg, t, f) and who(f) not in earlier:  # per user: in order
                    del want[i]
                    break
            else:
                fail(f"{self.label}: unexpected presence event", want, msg)

    def expect_quiet(self, wait=0.3):
        """Nothing else has arrived (and nothing arrives within `wait` s)."""
        if self.presence:
            fail(f"{self.label}: leftover presence event", "nothing", self.presence)
        try:
            msg = self.recv(timeout=wait)
        except TimeoutError:
            return
        except EOFError as e:
            fail(f"{self.label}: connection state", "still open", e)
        fail(f"{self.label}: unexpected message", "nothing", msg)

    def expect_closed(self):
        try:
            msg = self.recv()
        except EOFError:
            return
        except TimeoutError as e:
            fail(f"{self.label}: after bye", "connection closed", e)
        fail(f"{self.label}: after bye", "connection closed", msg)

    def hello(self):
        self.send({"type": "hello", "version": 2, "agent": "py-interop"})
        w = self.expect("welcome", version=2, server=ANY, heartbeat_ms=ANY, idle_timeout_ms=ANY,
                        challenge=lambda c: isinstance(c, bytes) and len(c) == 32)
        self.challenge = w["challenge"]
        for k in ("heartbeat_ms", "idle_timeout_ms"):
            if not isinstance(w[k], int) or w[k] <= 0:
                fail(f"{self.label}: welcome.{k}", "positive int", w[k])
        if not isinstance(w["server"], str):
            fail(f"{self.label}: welcome.server", "string", w["server"])

    def register(self, name, media):
        """register, signed as PROTOCOL.md says: label, challenge, name bytes."""
        signed = b"fala register v2\0" + self.challenge + name.encode("utf-8")
        self.send({"type": "register", "name": name, "media": media,
                   "identity": self.identity, "signature": self.key.sign(signed)})

    def sign_call_key(self, call_id, side, key):
        """The identity signature on a media key: side is b"r" (caller) or b"e" (callee)."""
        return self.key.sign(b"fala call key v2\0" + struct.pack(">Q", call_id) + side + key)

    def close(self):
        self.sock.close()


def verify_call_key(identity, call_id, side, key, signature):
    signed = b"fala call key v2\0" + struct.pack(">Q", call_id) + side + key
    Ed25519PublicKey.from_public_bytes(identity).verify(signature, signed)  # raises if bad


def commitment(key):
    return hashlib.sha256(b"fala commit v2\0" + key).digest()


def fmt(mtype, fields):
    shown = {k: ("<any>" if v is ANY else v) for k, v in fields.items()}
    return {"type": mtype, **shown}


def matches(msg, mtype, fields):
    if msg.get("type") != mtype:
        return False
    for k, v in fields.items():
        if v is ANY:
            if k not in msg:
                return False
        elif callable(v):
            if not v(msg.get(k)):
                return False
        elif msg.get(k) != v:  # absent and nil are the same for optional fields
            return False
    return True


def check(label, msg, mtype, fields):
    if not matches(msg, mtype, fields):
        fail(f"{label}: reply", fmt(mtype, fields), msg)


def who(fields):
    return fields["user"]["name"] if "user" in fields else fields["name"]


def user(conn, name, status="available"):
    return {"name": name, "status": status, "identity": conn.identity}


def status(name, st):
    return ("user_status", {"name": name, "status": st})


def step(n, text):
    print(f"step {n:>2} ok: {text}", flush=True)


def scenario(addr):
    ana_media, bob_media, cris_media = "127.0.0.1:40000", "127.0.0.1:40002", "127.0.0.1:40004"

    # 1. register with 0.0.0.0: the server fills in the IP it sees.
    a = Conn("A", addr)
    a.hello()
    a.register("Py Ana", "0.0.0.0:40000")
    a.expect("registered", name="Py Ana", media=ana_media)
    step(1, "A registered 'Py Ana' (signed), media 0.0.0.0:40000 -> 127.0.0.1:40000")

    # 2. names compare ignoring case and look-alikes; a name belongs to the first identity;
    # a refused register does not use up the one allowed; a bad signature is refused.
    b = Conn("B", addr)
    b.hello()
    b.register("py ana", bob_media)
    b.expect("error", code="name_owned",
             message=lambda m: isinstance(m, str) and "belongs to someone else" in m)
    b.register("P\u0443 Ana", bob_media)  # Cyrillic u, which reads as y
    b.expect("error", code="name_owned", message=ANY)
    b.send({"type": "register", "name": "Py Bob", "media": bob_media,
            "identity": b.identity, "signature": bytes(64)})
    b.expect("error", code="invalid_identity", message=ANY)
    b.register("Py Bob", bob_media)
    b.expect("registered", name="Py Bob", media=bob_media)
    step(2, "B: 'py ana', 'P\u0443 Ana' -> name_owned; a zero signature -> invalid_identity; "
            "then 'Py Bob' registered")

    # 3. a name breaking the rules.
    c = Conn("C", addr)
    c.hello()
    c.register("bad!name", cris_media)
    c.expect("error", code="invalid_name", message=lambda m: isinstance(m, str))
    step(3, "C: 'bad!name' -> invalid_name")

    # 4. the whole online list is not offered (by default); watch follows named people: those
    # online now (in name-key order), then user_joined about them. No addresses.
    a.send({"type": "subscribe"})
    a.expect("error", code="not_offered", message=ANY, request="subscribe")
    a.send({"type": "watch", "names": ["PY BOB", "py cris", "Py Ana"]})
    a.expect("watching", users=[user(a, "Py Ana"), user(b, "Py Bob")])
    c.register("Py Cris", cris_media)
    c.expect("registered", name="Py Cris", media=cris_media)
    a.expect_presence([("user_joined", {"user": user(c, "Py Cris")})])
    step(4, "A: subscribe -> not_offered; watch [PY BOB, py cris, Py Ana] -> watching "
            "[Py Ana, Py Bob]; C registered 'Py Cris' -> A got user_joined")

    # 5. look-ups ignore case and show the registered spelling and the owner's identity.
    a.send({"type": "lookup", "name": "PY BOB"})
    a.expect("user_found", user=user(b, "Py Bob"))
    a.send({"type": "search", "prefix": "PY B"})
    a.expect("search_results", users=[user(b, "Py Bob")], more=False)
    a.send({"type": "lookup", "name": "nobody"})
    a.expect("user_not_found", name="nobody")
    step(5, "lookup 'PY BOB' -> user_found available; search 'PY B' -> [Py Bob]; "
            "'nobody' -> user_not_found")

    # 6. an encrypted call: A commits to its key, B answers with its signed key (and an
    # explicit media address), A checks it and reveals its own signed key, B checks that
    # against the commitment. (Real X25519 keys are not needed to check the relay.)
    key_a, key_b = os.urandom(32), os.urandom(32)
    a.send({"type": "invite", "to": "Py Bob", "commit": commitment(key_a)})
    ring = a.expect("ringing", call_id=lambda v: isinstance(v, int) and v >= 0, peer="Py Bob")
    call = ring["call_id"]
    inc = b.expect("incoming_call", call_id=call, caller="Py Ana", identity=a.identity,
                   commit=commitment(key_a))
    b.send({"type": "accept", "call_id": call, "media": "127.0.0.1:40012", "key": key_b,
            "signature": b.sign_call_key(call, b"e", key_b)})
    got = a.expect("call_connected", call_id=call, peer="Py Bob", media="127.0.0.1:40012",
                   identity=b.identity, key=key_b, signature=ANY)
    verify_call_key(got["identity"], call, b"e", got["key"], got["signature"])
    a.send({"type": "reveal", "call_id": call, "key": key_a,
            "signature": a.sign_call_key(call, b"r", key_a)})
    got = b.expect("call_connected", call_id=call, peer="Py Ana", media=ana_media,
                   identity=a.identity, key=key_a, signature=ANY)
    if commitment(got["key"]) != inc["commit"]:
        fail("B: revealed key", "matches the commitment", got["key"])
    verify_call_key(got["identity"], call, b"r", got["key"], got["signature"])
    a.expect_presence([status("Py Ana", "in_call"), status("Py Bob", "in_call")])
    step(6, f"call {call}: commit / signed accept / reveal; both signatures and the "
            "commitment check; presence in_call for both")

    # 7. inviting someone in a call ends at once with busy (caller only).
    c.send({"type": "invite", "to": "Py Ana"})
    c.expect("call_ended", call_id=ANY, peer="Py Ana", reason="busy")
    a.expect_quiet()
    b.expect_quiet(0.05)
    step(7, "C invites 'Py Ana' while in a call -> call_ended busy")

    # 8. hangup of an active call.
    b.send({"type": "hangup", "call_id": call})
    b.expect("call_ended", call_id=call, peer="Py Ana", reason="hung_up")
    a.expect("call_ended", call_id=call, peer="Py Bob", reason="peer_hung_up")
    a.expect_presence([status("Py Ana", "available"), status("Py Bob", "available")])
    step(8, "B hangs up -> B hung_up, A peer_hung_up; both available again")

    # 9a. decline (no commitment this time: a call in clear is offered).
    a.send({"type": "invite", "to": "Py Bob"})
    call = a.expect("ringing", call_id=ANY, peer="Py Bob")["call_id"]
    b.expect("incoming_call", call_id=call, caller="Py Ana", identity=a.identity, commit=None)
    b.send({"type": "decline", "call_id": call})
    b.expect("call_ended", call_id=call, peer="Py Ana", reason="declined")
    a.expect("call_ended", call_id=call, peer="Py Bob", reason="declined")
    a.expect_presence([status("Py Ana", "in_call"), status("Py Bob", "in_call"),
                       status("Py Ana", "available"), status("Py Bob", "available")])
    # 9b. the callee's connection drops while ringing.
    a.send({"type": "invite", "to": "Py Cris"})
    call = a.expect("ringing", call_id=ANY, peer="Py Cris")["call_id"]
    c.expect("incoming_call", call_id=call, caller="Py Ana", identity=a.identity)
    c.close()
    a.expect("call_ended", call_id=call, peer="Py Cris", reason="peer_lost")
    # Cris finished ringing (user_status available), then left (user_left).
    a.expect_presence([status("Py Ana", "in_call"), status("Py Cris", "in_call"),
                       status("Py Ana", "available"), status("Py Cris", "available"),
                       ("user_left", {"name": "Py Cris"})])
    a.expect_quiet()
    step(9, "invite/decline -> both declined; C drops while ringing -> A peer_lost, user_left")

    # 10. ping, an unknown type (the connection survives), bye.
    a.send({"type": "ping", "nonce": 2**64 - 2})
    a.expect("pong", nonce=2**64 - 2)
    a.send({"type": "no_such_message", "x": 1})
    a.expect("error", code="unknown_message", message=ANY)
    a.send({"type": "ping", "nonce": 7})
    a.expect("pong", nonce=7)
    b.send({"type": "bye"})
    b.expect_closed()
    a.expect_presence([("user_left", {"name": "Py Bob"})])
    a.expect_quiet()
    step(10, "ping/pong; unknown type -> unknown_message, still usable; B bye -> user_left 'Py Bob'")
    a.send({"type": "bye"})
    a.expect_closed()
    b.close()
    a.close()


def main():
    if len(sys.argv) != 2 or ":" not in sys.argv[1]:
        print("usage: fala_client.py HOST:PORT", file=sys.stderr)
        return 2
    host, port = sys.argv[1].rsplit(":", 1)
    try:
        scenario((host, int(port)))
    except Mismatch as e:
        print(f"MISMATCH: {e}", flush=True)
        return 1
    except OSError as e:
        print(f"MISMATCH: socket error: {e}", flush=True)
        return 1
    print("all steps matched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
