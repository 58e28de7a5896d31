"""The CSPRNG block pool: every caller gets its own bytes, in threads and after fork."""

from __future__ import annotations

import os
import threading

from ice_engine import entropy
from ice_engine.credentials import new_credentials
from ice_engine.stun import new_transaction_id


def test_ids_are_12_bytes_and_never_repeat() -> None:
    ids = [new_transaction_id() for _ in range(5 * 340)]  # several refills
    assert {len(i) for i in ids} == {12}
    assert len(set(ids)) == len(ids)


def test_random_bytes_sizes() -> None:
    for size in (0, 1, 11, 12, 13, 32, 100):
        assert len(entropy.random_bytes(size)) == size


def test_threads_never_share_a_chunk() -> None:
    got: list[list[bytes]] = [[] for _ in range(4)]

    def draw(out: list[bytes]) -> None:
        out.extend(entropy.random_id() for _ in range(3000))

    threads = [threading.Thread(target=draw, args=(out,)) for out in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [chunk for out in got for chunk in out]
    assert len(set(every)) == len(every) == 12000


def test_a_forked_child_does_not_repeat_its_parent() -> None:
    new_transaction_id()  # the pool now holds unused chunks the child inherits
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and credentials, then leave at once
        os.close(read)
        os.write(write, new_transaction_id() + new_credentials().pwd.encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    ours = new_transaction_id() + new_credentials().pwd.encode()
    assert child[:12] != ours[:12]
    assert child[12:] != ours[12:]
