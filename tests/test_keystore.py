"""Keystore on disk (modes, passphrases, tampering) and the ``swarmlog keys`` CLI."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarmlog.infra.cli_keys import app
from swarmlog.streams.keystore import (
    CorruptKeyFile,
    InsecurePermissions,
    InvalidKeyName,
    KeyExists,
    KeyNotFound,
    Keystore,
    KeystoreError,
    PassphraseRequired,
    WrongPassphrase,
)
from swarmlog.streams.settings import get_settings


@pytest.fixture(autouse=True)
def _no_ambient_passphrase(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SWARMLOG_PASSPHRASE", raising=False)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def store(tmp_path: Path) -> Keystore:
    return Keystore(tmp_path / "keys")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _edit(path: Path, change: dict[str, object]) -> None:
    doc = json.loads(path.read_text())
    doc.update(change)
    path.write_text(json.dumps(doc))


# --------------------------------------------------------------------------- files


def test_create_writes_private_modes_even_with_a_lax_umask(store: Keystore) -> None:
    old = os.umask(0)
    try:
        ident = store.create("agent-1", label="first")
    finally:
        os.umask(old)
    path = store.path / "agent-1.json"
    assert _mode(store.path) == 0o700
    assert _mode(path) == 0o600
    assert [p.name for p in store.path.iterdir()] == ["agent-1.json"]  # no temp files left
    doc = json.loads(path.read_text())
    assert doc["did"] == ident.did and doc["label"] == "first" and "private" in doc


def test_unencrypted_round_trip(store: Keystore) -> None:
    ident = store.create("a")
    loaded = store.load("a")
    assert loaded.public == ident.public
    assert ident.public.verify(b"m", loaded.sign(b"m"))
    assert store.load(ident.did).did == ident.did  # by DID too
    assert store.get_public("a") == ident.public


def test_passphrase_round_trip_and_no_secrets_in_clear(store: Keystore) -> None:
    ident = store.create("enc", passphrase="correct horse")
    text = (store.path / "enc.json").read_text()
    doc = json.loads(text)
    assert "private" not in doc
    assert doc["encrypted"]["kdf"] == "scrypt"
    assert (doc["encrypted"]["n"], doc["encrypted"]["r"], doc["encrypted"]["p"]) == (2**15, 8, 1)
    for secret in ident.to_private_dict().values():
        if isinstance(secret, str) and not secret.startswith("did:") and len(secret) > 20:
            assert secret not in text
    assert store.load("enc", passphrase="correct horse").public == ident.public
    assert store.get_public("enc") == ident.public  # no passphrase needed


def test_wrong_or_missing_passphrase(store: Keystore) -> None:
    store.create("enc", passphrase="right")
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        store.load("enc", passphrase="wrong")
    with pytest.raises(PassphraseRequired, match="SWARMLOG_PASSPHRASE"):
        store.load("enc")


def test_passphrase_unicode_normalisation(store: Keystore) -> None:
    store.create("u", passphrase="caf\u00e9")  # composed é
    assert store.load("u", passphrase="cafe\u0301").did  # decomposed e + combining accent


def test_create_without_hard_links_still_refuses_duplicates(
    store: Keystore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_link)
    store.create("a")
    assert _mode(store.path / "a.json") == 0o600
    with pytest.raises(KeyExists):
        store.create("a")
    assert [p.name for p in store.path.iterdir()] == ["a.json"]


def test_passphrase_from_settings(store: Keystore, monkeypatch: pytest.MonkeyPatch) -> None:
    ident = store.create("enc", passphrase="from-env")
    monkeypatch.setenv("SWARMLOG_PASSPHRASE", "from-env")
    get_settings.cache_clear()
    assert store.load("enc").did == ident.did


def test_refuses_group_or_world_accessible_file(store: Keystore) -> None:
    store.create("a")
    path = store.path / "a.json"
    for mode in (0o644, 0o640, 0o604, 0o660):
        path.chmod(mode)
        with pytest.raises(InsecurePermissions, match="chmod 600"):
            store.load("a")
    path.chmod(0o644)
    store.get_public("a")  # public data may be readable...
    path.chmod(0o666)
    with pytest.raises(InsecurePermissions):
        store.get_public("a")  # ...but not writable by others
    path.chmod(0o600)
    store.load("a")


def test_refuses_symlinked_key_file(store: Keystore, tmp_path: Path) -> None:
    store.create("real")
    (store.path / "link.json").symlink_to(store.path / "real.json")
    with pytest.raises(KeystoreError):
        store.load("link")


@pytest.mark.parametrize("name", ["", "a/b", "../x", "a b", "x" * 65, ".", "..", "ключ", "a\x00"])
def test_invalid_names(store: Keystore, name: str) -> None:
    with pytest.raises(InvalidKeyName):
        store.create(name)
    with pytest.raises(InvalidKeyName):
        store.load(name)


def test_valid_name_edge_cases(store: Keystore) -> None:
    store.create("A.b_c-9")
    store.create("x" * 64)
    assert {i.name for i in store.list()} == {"A.b_c-9", "x" * 64}


def test_duplicate_name_is_refused_and_the_key_kept(store: Keystore) -> None:
    first = store.create("a")
    with pytest.raises(KeyExists):
        store.create("a")
    assert store.load("a").did == first.did


def test_concurrent_creates_never_overwrite(store: Keystore) -> None:
    barrier = threading.Barrier(4)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(store.create("race").did)
        except KeyExists:
            results.append("exists")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r != "exists"]
    assert len(winners) == 1
    assert store.load("race").did == winners[0]


def test_not_found(store: Keystore) -> None:
    with pytest.raises(KeyNotFound):
        store.load("nobody")
    with pytest.raises(KeyNotFound):
        store.get_public("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")


def test_list(store: Keystore) -> None:
    assert store.list() == []
    a = store.create("a", label="alpha")
    store.create("b", passphrase="pw")
    infos = store.list()
    assert [i.name for i in infos] == ["a", "b"]
    assert infos[0].did == a.did and infos[0].label == "alpha" and not infos[0].encrypted
    assert infos[1].encrypted
    assert all(i.mode == 0o600 and i.secure and i.created.tzinfo is not None for i in infos)


def test_load_or_create(store: Keystore) -> None:
    first = store.load_or_create("boot", label="agent")
    again = store.load_or_create("boot")
    assert first.did == again.did and again.label == "agent"


def test_load_or_create_uses_the_settings_passphrase(
    store: Keystore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARMLOG_PASSPHRASE", "env-pw")
    get_settings.cache_clear()
    store.load_or_create("boot")
    assert store.info("boot").encrypted


def test_tampered_public_keys_are_detected(store: Keystore) -> None:
    store.create("a")
    other = store.create("b")
    path = store.path / "a.json"
    doc = json.loads(path.read_text())
    doc["public"]["ml_dsa_65"] = other.public.to_dict()["ml_dsa_65"]
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    with pytest.raises(CorruptKeyFile, match="do not match"):
        store.load("a")


def test_encrypted_blob_cannot_be_moved_to_another_identity(store: Keystore) -> None:
    store.create("a", passphrase="pw")
    store.create("b", passphrase="pw")
    a_doc = json.loads((store.path / "a.json").read_text())
    _edit(store.path / "b.json", {"encrypted": a_doc["encrypted"]})
    with pytest.raises(WrongPassphrase):  # the DID is the AAD
        store.load("b", passphrase="pw")


@pytest.mark.parametrize(
    "change",
    [
        {"format": "other"},
        {"encrypted": {"kdf": "scrypt", "n": 2, "r": 8, "p": 1}},
        {"encrypted": {"kdf": "pbkdf2"}},
        {"encrypted": {"kdf": "scrypt", "cipher": "aes-256-gcm", "n": 2**20, "r": 16, "p": 1}},  # 2 GiB
        {"did": "did:web:x"},
    ],
)
def test_corrupt_files(store: Keystore, change: dict[str, object]) -> None:
    store.create("a", passphrase="pw")
    _edit(store.path / "a.json", change)
    with pytest.raises(KeystoreError):
        store.load("a", passphrase="pw")


def test_garbage_file(store: Keystore) -> None:
    store.create("a")
    (store.path / "a.json").write_bytes(b"\xff not json")
    with pytest.raises(CorruptKeyFile):
        store.load("a")
    assert store.list() == []  # skipped with a warning


# ------------------------------------------------------------------------------ CLI


def _cli(tmp_path: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    return runner.invoke(app, ["--keystore", str(tmp_path / "keys"), *args], input=input, env=env)


def test_cli_new_list_show(tmp_path: Path) -> None:
    result = _cli(tmp_path, "new", "agent-1", "--label", "first")
    assert result.exit_code == 0, result.output
    assert "did:key:z6Mk" in result.stdout

    result = _cli(tmp_path, "list", "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert [k["name"] for k in listing["keys"]] == ["agent-1"]
    did = listing["keys"][0]["did"]
    assert listing["keys"][0]["file_mode"] == "0600" and listing["keys"][0]["encrypted"] is False

    result = _cli(tmp_path, "show", "agent-1", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["did"] == did and shown["label"] == "first"
    assert shown["key_sizes"]["ml_dsa_65_public"] == 1952
    assert set(shown["fingerprints"]) == {"ed25519", "ml_dsa_65", "x25519", "ml_kem_768"}

    by_did = _cli(tmp_path, "show", did, "--json")
    assert by_did.exit_code == 0 and json.loads(by_did.stdout)["name"] == "agent-1"

    human = _cli(tmp_path, "show", "agent-1")
    assert human.exit_code == 0 and did in human.stdout.replace("\n", "")
    table = _cli(tmp_path, "list")
    assert table.exit_code == 0 and "agent-1" in table.stdout


def test_cli_new_json(tmp_path: Path) -> None:
    result = _cli(tmp_path, "new", "j", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["did"].startswith("did:key:z6Mk")


def test_cli_passphrase_prompt_and_env(tmp_path: Path) -> None:
    result = _cli(tmp_path, "new", "p1", "--passphrase", input="s3cret\ns3cret\n")
    assert result.exit_code == 0, result.output
    assert Keystore(tmp_path / "keys").load("p1", passphrase="s3cret")
    result = _cli(tmp_path, "new", "p2", "--passphrase", env={"SWARMLOG_PASSPHRASE": "envpw"})
    assert result.exit_code == 0, result.output
    assert Keystore(tmp_path / "keys").load("p2", passphrase="envpw")
    shown = json.loads(_cli(tmp_path, "show", "p2", "--json").stdout)
    assert shown["encrypted"] is True
    result = _cli(tmp_path, "new", "p3", "--no-passphrase", env={"SWARMLOG_PASSPHRASE": "envpw"})
    assert result.exit_code == 0 and not Keystore(tmp_path / "keys").info("p3").encrypted


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("new", "bad/name"), "invalid key name"),
        (("show", "bad name"), "invalid key name"),
        (("show", "missing"), "no key"),
        (("show", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"), "no key"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = _cli(tmp_path, *args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_cli_duplicate_exits_2(tmp_path: Path) -> None:
    assert _cli(tmp_path, "new", "dup").exit_code == 0
    result = _cli(tmp_path, "new", "dup")
    assert result.exit_code == 2 and "already exists" in result.stderr


def test_cli_runtime_failure_exits_1(tmp_path: Path) -> None:
    assert _cli(tmp_path, "new", "open").exit_code == 0
    (tmp_path / "keys" / "open.json").chmod(0o666)
    result = _cli(tmp_path, "show", "open")
    assert result.exit_code == 1 and "chmod 600" in result.stderr
