"""The audit ledger: signed checkpoints, the RocksDB node store, the per-lane ledger fold."""

from __future__ import annotations

import base64
import itertools
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rocksdict import Options, Rdict

from swarmlog.projections.base import MemoryStore
from swarmlog.projections.ledger import (
    LaneLedger,
    LedgerForked,
    LedgerPolicy,
    LedgerRecorder,
    prove_consistency,
    prove_event,
)
from swarmlog.streams import merkle as m
from swarmlog.streams.checkpoint import (
    CheckpointError,
    alg_of_origin,
    format_note,
    lane_origin,
    parse_note,
    sign_checkpoint,
    verify_checkpoint,
)
from swarmlog.streams.identity import Identity
from swarmlog.streams.ledger_store import RocksLedger, compaction_keep
from swarmlog.streams.verify import RawRecord

SIGNER = Identity.generate("ledger-signer")
OTHER = Identity.generate("someone-else")
ORIGIN = lane_origin("commands", 3)


def hashes(n: int, seed: int = 0) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(32) for _ in range(n)]


# --------------------------------------------------------------------------- checkpoints


def signed(size: int = 10, previous: dict[str, Any] | None = None, proof: list[bytes] | None = None,
           leaves: list[bytes] | None = None) -> dict[str, Any]:
    data = leaves if leaves is not None else hashes(size)
    return sign_checkpoint(SIGNER, ORIGIN, size, m.root(data[:size]), previous, proof or [])


def test_origin_names_lane_and_hash() -> None:
    assert ORIGIN == "swarmlog/ledger/commands/3"
    assert alg_of_origin(ORIGIN) is m.SHA256
    sha3 = lane_origin("commands", 3, m.SHA3_256)
    assert sha3 == "swarmlog/ledger/commands/3/sha3-256" and alg_of_origin(sha3) is m.SHA3_256
    for topic, partition in (("a/b", 0), ("", 0), ("x y", 0), ("t", -1)):
        with pytest.raises(CheckpointError):
            lane_origin(topic, partition)


def test_note_is_c2sp_checkpoint_text_and_round_trips() -> None:
    root = bytes(range(32))
    text = format_note(ORIGIN, 42, root)
    assert text == f"{ORIGIN}\n42\n{base64.b64encode(root).decode()}\n"
    payload = signed(10)
    note = parse_note(payload["note"])
    assert note.origin == ORIGIN and note.tree_size == 10 and note.root_hash == payload["root_hash"]
    lines = payload["note"].split("\n")
    assert lines[3] == "" and lines[4].startswith("\u2014 " + SIGNER.did + " ") and lines[5].startswith("\u2014 ")
    assert len(note.signatures) == 2 and {len(s.key_id) for s in note.signatures} == {4}
    assert verify_checkpoint(payload, SIGNER.public).tree_size == 10


def test_ed25519_line_is_a_standard_signed_note_signature() -> None:
    """What Go's sumdb/note checks: Ed25519 over the text, key ID = SHA-256(name\\n0x01 key)[:4]."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    payload = signed(7)
    note = parse_note(payload["note"])
    key = SIGNER.public.ed25519_public
    key_id = hashlib.sha256(SIGNER.did.encode() + b"\n\x01" + key).digest()[:4]
    line = next(s for s in note.signatures if s.key_id == key_id)
    Ed25519PublicKey.from_public_bytes(key).verify(line.signature, note.text.encode())


@pytest.mark.parametrize("mutate", [
    lambda n: n.replace("\n\n", "\n"),  # no blank line
    lambda n: n.rstrip("\n"),  # signature block not newline-terminated
    lambda n: n.replace("\u2014", "--"),  # not an em dash
    lambda n: n.replace("\n10\n", "\n010\n", 1),  # leading zero
    lambda n: n.replace("\n10\n", "\n-1\n", 1),
    lambda n: n.replace("\n10\n", "\n18446744073709551616\n", 1),  # > uint64
    lambda n: n.split("\n", 2)[0] + "\n10\n" + "AAAA\n" + n.split("\n\n", 1)[1],  # short root
    lambda n: n.replace("=\n", "\n", 1),  # non-canonical / bad base64 root
    lambda n: n.split("\n", 1)[1],  # no origin line: only two text lines
    lambda n: n.replace(" ", "  ", 1),  # malformed signature line
    lambda n: n.replace("\u2014 " + SIGNER.did + " ", "\u2014  ", 1),  # empty key name
    lambda n: n.replace("\u2014 " + SIGNER.did, "\u2014 a+b", 1),  # '+' in a key name
    lambda n: n[: n.rindex(" ") + 1] + "!!!!\n",  # bad base64 signature
    lambda n: "\x01" + n,  # control character
    lambda n: 5,
])
def test_bad_notes_are_rejected(mutate: Any) -> None:
    payload = signed(10)
    with pytest.raises(CheckpointError):
        parse_note(mutate(payload["note"]))


def _without_line(note: str, index: int) -> str:
    body, sigs = note.split("\n\n")
    lines = sigs.rstrip("\n").split("\n")
    del lines[index]
    return body + "\n\n" + "".join(line + "\n" for line in lines)


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: {**p, "note": _without_line(p["note"], 1)}, "ML-DSA-65"),
    (lambda p: {**p, "note": _without_line(p["note"], 0)}, "Ed25519"),
    (lambda p: {**p, "tree_size": 11}, "differs"),
    (lambda p: {**p, "root_hash": bytes(32)}, "differs"),
    (lambda p: {**p, "origin": "swarmlog/ledger/commands/4"}, "differs"),
    (lambda p: {**p, "signature": {**p["signature"], "ml_dsa_65": bytes(3309)}}, "hybrid"),
    (lambda p: {**p, "signature": {"ed25519": b"x"}}, "malformed"),
    (lambda p: {k: v for k, v in p.items() if k != "note"}, "malformed"),
    (lambda p: {**p, "previous_tree_size": 12}, "previous_tree_size"),
    (lambda p: {**p, "consistency_proof": [bytes(32)]}, "no consistency proof"),
])
def test_bad_checkpoints_are_rejected(change: Any, message: str) -> None:
    payload = signed(10)
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(change(payload), SIGNER.public)


def test_signature_lines_are_checked_not_just_present() -> None:
    payload = signed(10)
    other = sign_checkpoint(SIGNER, ORIGIN, 11, m.root(hashes(11)))
    # splice the other note's (valid, but for other text) ML-DSA line in
    body = payload["note"].split("\n\n")[0]
    ed_line = payload["note"].split("\n\n")[1].split("\n")[0]
    ml_line = other["note"].split("\n\n")[1].split("\n")[1]
    with pytest.raises(CheckpointError, match=r"ML-DSA-65 signature line .* does not verify"):
        verify_checkpoint({**payload, "note": f"{body}\n\n{ed_line}\n{ml_line}\n"}, SIGNER.public)


def test_wrong_key_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="no Ed25519 signature line"):
        verify_checkpoint(signed(10), OTHER.public)


def test_consistency_is_checked_before_signing_and_when_verifying() -> None:
    leaves = hashes(20)
    first = signed(8, leaves=leaves)
    proof = m.consistency_proof(8, 20, leaves)
    second = signed(20, previous=first, proof=proof, leaves=leaves)
    assert second["previous_tree_size"] == 8
    verify_checkpoint(second, SIGNER.public, previous_root=first["root_hash"])
    with pytest.raises(CheckpointError, match="not consistent"):
        verify_checkpoint(second, SIGNER.public, previous_root=bytes(32))
    forked = hashes(20, seed=1)
    with pytest.raises(CheckpointError, match="refusing to sign"):  # a fork never gets a signature
        sign_checkpoint(SIGNER, ORIGIN, 20, m.root(forked), first, m.consistency_proof(8, 20, forked))
    with pytest.raises(CheckpointError, match="refusing to sign"):  # a shrinking tree neither
        sign_checkpoint(SIGNER, ORIGIN, 5, m.root(leaves[:5]), first, [])
    with pytest.raises(CheckpointError, match="first checkpoint"):
        sign_checkpoint(SIGNER, ORIGIN, 5, m.root(leaves[:5]), None, [bytes(32)])


# --------------------------------------------------------------------------- RocksDB store


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.tuples(st.integers(1, 70), st.booleans(), st.booleans()), min_size=1, max_size=12),
       data=st.data())
def test_rocks_ledger_equals_the_pure_computation(tmp_path: Path, batches: list[tuple[int, bool, bool]],
                                                  data: st.DataObject) -> None:
    path = tmp_path / os.urandom(4).hex()
    leaves: list[bytes] = []
    ledger = RocksLedger(path)
    for count, one_by_one, reopen in batches:
        new = [os.urandom(32) for _ in range(count)]
        if one_by_one:
            assert [ledger.append(h) for h in new] == list(range(len(leaves), len(leaves) + count))
        else:
            assert ledger.append_many(new) == list(range(len(leaves), len(leaves) + count))
        leaves += new
        if leaves:  # duplicates are not appended again
            assert ledger.append(leaves[0]) is None and ledger.append_many([leaves[-1]]) == [None]
        if reopen:
            ledger.close()
            ledger = RocksLedger(path)
        assert ledger.size == len(leaves) and ledger.root() == m.root(leaves)
    n = len(leaves)
    size = data.draw(st.integers(1, n))
    index = data.draw(st.integers(0, size - 1))
    assert ledger.inclusion_proof(index, size) == m.inclusion_proof(index, leaves, tree_size=size)
    m.verify_inclusion(m.leaf_hash(leaves[index]), index, size, ledger.inclusion_proof(index, size),
                       m.root(leaves[:size]))
    old = data.draw(st.integers(1, size))
    assert ledger.consistency_proof(old, size) == m.consistency_proof(old, size, leaves)
    assert ledger.index_of(leaves[index]) == index
    ledger.close()


def test_rocks_ledger_sha3_event_ids_and_algorithm_is_fixed(tmp_path: Path) -> None:
    leaves = hashes(37)
    with RocksLedger(tmp_path / "l", m.SHA3_256) as ledger:
        ledger.append_many(leaves[:20], [i.to_bytes(16, "big") for i in range(20)])
        for i in range(20, 37):
            ledger.append(leaves[i], i.to_bytes(16, "big"))
        assert ledger.root() == m.root(leaves, m.SHA3_256) != m.root(leaves)
        assert ledger.index_of_id((25).to_bytes(16, "big")) == 25
    with pytest.raises(m.ProofError, match="sha3_256 log"):
        RocksLedger(tmp_path / "l", m.SHA256)


@pytest.mark.parametrize("before", [1, 2, 5, 64, 100, 127, 128, 200])
def test_compaction_keeps_proofs_about_newer_leaves(tmp_path: Path, before: int) -> None:
    leaves = hashes(200)
    ledger = RocksLedger.bulk_build(tmp_path / "b", leaves)
    assert ledger.root() == m.root(leaves) and ledger.index_of(leaves[7]) == 7
    ledger.compact(before)
    for size in range(max(before, 1), 201, 7):
        for index in range(before, size, 5):
            m.verify_inclusion(m.leaf_hash(leaves[index]), index, size, ledger.inclusion_proof(index, size),
                               m.root(leaves[:size]))
        m.verify_consistency(before, size, m.root(leaves[:before]), m.root(leaves[:size]),
                             ledger.consistency_proof(before, size))
    if before > 1:
        with pytest.raises(m.MissingNodeError):
            ledger.inclusion_proof(before - 1)
        with pytest.raises(m.MissingNodeError):
            ledger.consistency_proof(before - 1, 200)
    assert ledger.append(leaves[0]) is None  # the index survives: old events are not re-appended
    new = os.urandom(32)
    assert ledger.append(new) == 200 and ledger.root() == m.root([*leaves, new])  # still appendable
    ledger.close()


def test_rocks_ledger_tiles_across_tile_levels(tmp_path: Path) -> None:
    """Past 2**16 leaves the second tile-level gets complete tiles: appends (with reopens in the
    middle of tiles), a bulk build and the pure computation must agree, also after compaction."""
    leaves = hashes(65_536 + 700, seed=9)
    appended = RocksLedger(tmp_path / "a")
    cuts = [0, 1, 255, 256, 257, 20_000, 65_535, 65_536, 65_537, len(leaves)]
    for lo, hi in itertools.pairwise(cuts):
        assert appended.append_many(leaves[lo:hi]) == list(range(lo, hi))
        appended.close()
        appended = RocksLedger(tmp_path / "a")
    built = RocksLedger.bulk_build(tmp_path / "b", leaves)
    n = len(leaves)
    rnd = random.Random(3)
    for size in [1, 256, 257, 65_536, 65_537, n, *[rnd.randrange(1, n + 1) for _ in range(5)]]:
        assert appended.root(size) == built.root(size) == m.root(leaves[:size])
        index = rnd.randrange(size)
        proof = appended.inclusion_proof(index, size)
        assert proof == built.inclusion_proof(index, size)
        m.verify_inclusion(m.leaf_hash(leaves[index]), index, size, proof, m.root(leaves[:size]))
    root = m.root(leaves)
    for ledger in (appended, built):
        ledger.compact(65_536 + 300)
        for index in (65_836, 65_900, n - 1):
            m.verify_inclusion(m.leaf_hash(leaves[index]), index, n, ledger.inclusion_proof(index), root)
        with pytest.raises(m.MissingNodeError):
            ledger.inclusion_proof(10)
        ledger.close()
    reopened = RocksLedger(tmp_path / "a")
    m.verify_inclusion(m.leaf_hash(leaves[n - 5]), n - 5, n, reopened.inclusion_proof(n - 5), root)
    assert reopened.leaf_hash(n - 5) == m.leaf_hash(leaves[n - 5]) and reopened.append(leaves[3]) is None
    reopened.close()


def test_rocks_ledger_refuses_a_store_of_another_format(tmp_path: Path) -> None:
    with RocksLedger(tmp_path / "l") as ledger:
        ledger.append_many(hashes(5))
    # an untiled store of the earlier layout has no format marker
    db = Rdict(str(tmp_path / "l"), options=Options(raw_mode=True))
    db.delete(b"m:format")
    db.close()
    with pytest.raises(m.ProofError, match="another on-disk format"):
        RocksLedger(tmp_path / "l")


def test_compaction_keep_is_the_compact_range() -> None:
    assert compaction_keep(0) == []
    assert compaction_keep(6) == [(1, 2), (2, 0)]
    assert compaction_keep(8) == [(3, 0)]


# --------------------------------------------------------------------------- the ledger fold


def event(i: int, ts: int, seed: int = 0) -> Any:
    """A stand-in for an authenticated Event: the ledger reads only hash, event_id, timestamp_ms."""
    rnd = random.Random(seed * 1_000_003 + i)
    return SimpleNamespace(hash=rnd.randbytes(32), event_id=rnd.randbytes(16), timestamp_ms=ts)


def record(topic: str, partition: int, offset: int) -> RawRecord:
    return RawRecord(topic, partition, offset, None, b"")


def feed(recorder: LedgerRecorder, events: list[tuple[RawRecord, Any]]) -> list[Any]:
    return recorder.record(cast(Any, events))


def fake_signer(calls: list[tuple[Any, ...]]) -> Any:
    def sign(origin: str, size: int, root: bytes, previous: Any, proof: list[bytes]) -> dict[str, Any]:
        calls.append((origin, size, root, previous, proof))
        return sign_checkpoint(SIGNER, origin, size, root, previous, proof)

    return sign


def test_lanes_checkpoints_by_leaves_and_event_time_and_dedupe() -> None:
    calls: list[tuple[Any, ...]] = []
    policy = LedgerPolicy(checkpoint_leaves=10, checkpoint_interval_ms=1000)
    recorder = LedgerRecorder(MemoryStore(), policy, fake_signer(calls))
    a = [(record("t", 0, i), event(i, 100 + i)) for i in range(25)]  # 25 leaves, 1 ms apart
    b = [(record("t", 1, i), event(i, 0, seed=1)) for i in range(3)]
    derived = feed(recorder, a[:12] + b)
    assert [d.payload["tree_size"] for _, d in derived] == [10]
    derived = feed(recorder, a[5:25])  # redelivery of 5..11 is skipped
    assert recorder.appended == 28
    assert [d.payload["tree_size"] for _, d in derived] == [20]
    # event time: a late event 1 s after the last checkpoint triggers one at size 21+
    late = [(record("t", 0, 99), event(99, 100 + 19 + 1000))]
    derived = feed(recorder, late)
    assert [d.payload["tree_size"] for _, d in derived] == [26]
    lane = recorder.lane(lane_origin("t", 0))
    leaves = [e.hash for _, e in a] + [late[0][1].hash]
    assert lane.size == 26 and lane.log.root() == m.root(leaves)
    assert recorder.lane(lane_origin("t", 1)).log.root() == m.root([e.hash for _, e in b])
    previous = None
    for _origin, size, root, prev, _proof in calls:
        assert root == m.root(leaves[:size])
        assert (prev or {}).get("tree_size") == (previous or {}).get("tree_size")
        previous = {"tree_size": size}
    for _, d in derived:
        verify_checkpoint(d.payload, SIGNER.public, previous_root=m.root(leaves[:20]))
        assert d.subject == lane_origin("t", 0)


def test_forked_state_refuses_to_sign() -> None:
    calls: list[tuple[Any, ...]] = []
    store = MemoryStore()
    recorder = LedgerRecorder(store, LedgerPolicy(checkpoint_leaves=4), fake_signer(calls))
    feed(recorder, [(record("t", 0, i), event(i, i)) for i in range(4)])
    assert len(calls) == 1
    origin = lane_origin("t", 0)
    # rewrite history: leaf 1 changes, and so do its ancestors up to the checkpointed tree head
    old_root = store.get(f"node|{origin}|2|0")
    store.put(f"node|{origin}|0|1", bytes(32).hex())
    store.put(f"node|{origin}|1|0", m.node_hash(bytes.fromhex(store.get(f"node|{origin}|0|0")), bytes(32)).hex())
    store.put(f"node|{origin}|2|0", m.node_hash(bytes.fromhex(store.get(f"node|{origin}|1|0")),
                                                bytes.fromhex(store.get(f"node|{origin}|1|1"))).hex())
    assert store.get(f"node|{origin}|2|0") != old_root
    recorder.lanes.clear()
    derived = feed(recorder, [(record("t", 0, i), event(i, i)) for i in range(4, 8)])
    assert derived == [] and len(calls) == 1, "a forked tree must not be signed"
    assert recorder.problems and "does not extend checkpoint 4" in recorder.problems[0]
    with pytest.raises(LedgerForked):
        LaneLedger(store, origin).take_checkpoint(9)


def test_prove_event_gives_inclusion_and_timestamp_proof_and_survives_compaction() -> None:
    store = MemoryStore()
    recorder = LedgerRecorder(store, LedgerPolicy(m.SHA3_256, checkpoint_leaves=16))
    events = [(record("t", 2, i), event(i, i)) for i in range(50)]
    feed(recorder, events)
    origin = lane_origin("t", 2, m.SHA3_256)
    leaves = [e.hash for _, e in events]
    from swarmlog.streams.ids import uuid_text

    doc = prove_event(store, uuid_text(events[20][1].event_id))
    assert doc is not None and doc["origin"] == origin and doc["leaf_index"] == 20
    proof = m.proof_from_json(doc["proof"])
    assert isinstance(proof, m.InclusionProof)
    proof.verify(leaf_hash=m.leaf_hash(leaves[20], m.SHA3_256), root_hash=m.root(leaves, m.SHA3_256))
    stamp = doc["timestamp"]
    assert stamp["checkpoint"]["tree_size"] == 32  # the first checkpoint covering leaf 20
    anchored = m.proof_from_json(stamp["proof"])
    anchored.verify(leaf_hash=m.leaf_hash(leaves[20], m.SHA3_256),
                    root_hash=bytes.fromhex(stamp["checkpoint"]["root_hash"]))
    assert prove_event(store, uuid_text(events[49][1].event_id))["timestamp"] is None  # not yet checkpointed
    assert prove_event(store, "00000000-0000-0000-0000-000000000000") is None
    consistency = m.proof_from_json(prove_consistency(store, origin, 16, 50)["proof"])
    assert isinstance(consistency, m.ConsistencyProof)
    consistency.verify(first_hash=m.root(leaves[:16], m.SHA3_256), second_hash=m.root(leaves, m.SHA3_256))
    lane = LaneLedger(store, origin)
    assert lane.compact(20) > 0
    doc = prove_event(store, uuid_text(events[30][1].event_id))
    assert doc is not None
    m.proof_from_json(doc["proof"]).verify(leaf_hash=m.leaf_hash(leaves[30], m.SHA3_256),  # type: ignore[call-arg]
                                           root_hash=m.root(leaves, m.SHA3_256))
    with pytest.raises(m.MissingNodeError):
        prove_event(store, uuid_text(events[3][1].event_id))
    # compaction leaves the ledger appendable and consistent with its checkpoints
    feed(recorder, [(record("t", 2, i), event(i, i)) for i in range(50, 70)])
    assert LaneLedger(store, origin).log.root() == m.root(leaves + [event(i, i).hash for i in range(50, 70)],
                                                          m.SHA3_256)
    assert recorder.problems == []
