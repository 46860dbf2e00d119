#!/usr/bin/env python3
"""A misbehaving driver domain for tests/integration/malformed_driver.sh: it
connects to the hypervisor's driver socket (SOCK_SEQPACKET) and sends raw
packets, the kind a compromised driver could send.

  fake_driver.py SOCK hello CASE       one bad first message; exits 0 when
                                       the hypervisor closes the connection
  fake_driver.py SOCK impostor NAME KIND
                                       a valid hello as driver NAME of KIND
                                       (net or blk), as one more instance;
                                       exits 0 when the hypervisor closes the
                                       connection (refused), 1 if it keeps it
  fake_driver.py SOCK attach NAME CASE says a valid hello as blk driver NAME,
                                       prints READY, answers the first attach
                                       with garbage of kind CASE; exits 0 when
                                       the hypervisor then closes the
                                       connection

Cap'n Proto messages are built by hand (capnp encoding spec: a segment table,
then a root struct pointer) so that the test needs no Python capnp binding.
"""
import os
import socket
import struct
import sys

TIMEOUT_S = 10


def word(v):
    return struct.pack("<Q", v)


def struct_ptr(offset, data_words, ptr_words):
    return word((offset << 2) | (data_words << 32) | (ptr_words << 48))


def text_ptr(offset, nbytes):
    # list pointer, element size 2 (byte), count includes the NUL
    return word(1 | (offset << 2) | (2 << 32) | (nbytes << 35))


def message(body):
    assert len(body) % 8 == 0
    return struct.pack("<II", 0, len(body) // 8) + body


def text_words(s):
    b = s.encode() + b"\0"
    return b + b"\0" * (-len(b) % 8)


def hello(name, kind=1, pid=None, standby=False):
    """DriverMsg{hello}: union tag 0 in the root's data word, one pointer."""
    pid = os.getpid() if pid is None else pid
    # root: 1 data word (tag), 1 pointer -> Hello at +0 after it
    root = struct_ptr(0, 1, 1) + word(0)
    # Hello's one data word (common/schema/driver.capnp, laid out as the
    # encoding spec places fields in order): kind @1 (u16) at bits 0..15,
    # standby @3 (bool) at bit 16, pid @2 (i32) at bits 32..63; name @0 is
    # pointer 0.
    data = kind | ((1 if standby else 0) << 16) | ((pid & 0xffffffff) << 32)
    hello_ptr = struct_ptr(0, 1, 1)
    name_bytes = text_words(name)
    hello_body = word(data) + text_ptr(0, len(name.encode()) + 1) + name_bytes
    return message(root + hello_ptr + hello_body)


def attached(device_id, ok=True, tag=3):
    root = struct_ptr(0, 1, 1) + word(tag)
    data = device_id | ((1 if ok else 0) << 32)
    return message(root + struct_ptr(0, 1, 1) + word(data) + word(0))


HELLO_CASES = {
    "not-aligned": b"\x01\x02\x03\x04\x05",
    "bad-pointer": message(word(0x0000000a00000002)),  # far pointer to segment 10
    "bad-name": hello("../etc"),
    "zero-pid": hello("blk0", pid=0),
    "bad-kind": hello("blk0", kind=9),
    "not-hello": attached(1),
    "garbage": os.urandom(64),
}


def attach_answer(case, device_id):
    if case == "garbage-words":
        return message(word(0x0001000100000000) + os.urandom(56))
    if case == "wrong-id":
        return attached(device_id + 1000)
    if case == "not-aligned":
        return b"\xff" * 13
    raise SystemExit("unknown attach case " + case)


def wait_closed(s):
    s.settimeout(TIMEOUT_S)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(s, 1 << 18, 16)
        except socket.timeout:
            sys.exit("the hypervisor kept the connection open")
        except ConnectionResetError:
            return
        for fd in fds:
            os.close(fd)
        if not data:
            return


def main():
    path, mode = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    if mode == "hello":
        s.send(HELLO_CASES[sys.argv[3]])
        wait_closed(s)
        return
    if mode == "impostor":
        s.send(hello(sys.argv[3], kind={"net": 0, "blk": 1}[sys.argv[4]]))
        wait_closed(s)
        return
    name, case = sys.argv[3], sys.argv[4]
    s.send(hello(name))
    print("READY", flush=True)
    s.settimeout(120)
    data, fds, _, _ = socket.recv_fds(s, 1 << 18, 16)
    for fd in fds:
        os.close(fd)
    if not data:
        sys.exit("the hypervisor closed before asking to attach")
    # Attach: root data word holds the union tag (1) ... device id is the
    # first u32 of the Attach struct's data section.
    (root,) = struct.unpack_from("<Q", data, 8)
    off = ((root >> 2) & 0x3fffffff)
    data_words = (root >> 32) & 0xffff
    ptr_at = 16 + off * 8 + data_words * 8  # the union's pointer, word after data
    (aptr,) = struct.unpack_from("<Q", data, ptr_at)
    aoff = ((aptr >> 2) & 0x3fffffff)
    if aoff & 0x20000000:
        aoff -= 0x40000000
    (device_id,) = struct.unpack_from("<I", data, ptr_at + 8 + aoff * 8)
    s.send(attach_answer(case, device_id))
    wait_closed(s)


if __name__ == "__main__":
    main()
