"""``swarmlog keys``: create and inspect the identities in the local keystore.

Only public information is ever printed (DIDs, fingerprints, sizes); private keys stay in
the keystore files. Exit codes: 0 success, 2 bad input (invalid name, unknown key, name
taken), 1 runtime failure (unreadable or insecure file, wrong passphrase, I/O error).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from swarmlog.streams.identity import PublicIdentity
from swarmlog.streams.keystore import (
    InvalidKeyName,
    KeyExists,
    KeyInfo,
    KeyNotFound,
    Keystore,
    KeystoreError,
    validate_name,
)

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="Manage agent identities (Ed25519 + ML-DSA-65 signing, X25519 + ML-KEM-768 encryption).",
    no_args_is_help=True,
)

KeystoreOption = Annotated[
    Path | None,
    typer.Option(
        "--keystore",
        help="Keystore directory (default: SWARMLOG_KEYSTORE, else <SWARMLOG_HOME>/keys).",
        envvar="SWARMLOG_KEYSTORE",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _console() -> Console:
    # emoji=False: rich would turn the ":key:" of "did:key:" into an emoji.
    return Console(emoji=False, highlight=False)


def _keystore(ctx: typer.Context) -> Keystore:
    path = ctx.obj.get("keystore") if isinstance(ctx.obj, dict) else None
    return Keystore(path)


def _run_errors(exc: Exception) -> NoReturn:
    """Map library errors to the documented exit codes with one line on stderr."""
    if isinstance(exc, InvalidKeyName | KeyNotFound | KeyExists):
        _fail(str(exc), 2)
    if isinstance(exc, KeystoreError | OSError):
        _fail(str(exc), 1)
    raise exc


def _public_json(info: KeyInfo, public: PublicIdentity | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": info.name,
        "did": info.did,
        "label": info.label,
        "created": info.created.isoformat().replace("+00:00", "Z"),
        "encrypted": info.encrypted,
        "file_mode": f"{info.mode:04o}",
        "path": str(info.path),
    }
    if public is not None:
        doc["fingerprints"] = public.fingerprints()
        doc["key_sizes"] = {
            "ed25519_public": len(public.ed25519_public),
            "ml_dsa_65_public": len(public.ml_dsa_65_public),
            "x25519_public": len(public.x25519_public),
            "ml_kem_768_public": len(public.ml_kem_768_public),
        }
    return doc


@app.callback()
def _main(ctx: typer.Context, keystore: KeystoreOption = None) -> None:
    """Manage agent identities in the local keystore."""
    ctx.obj = {**(ctx.obj if isinstance(ctx.obj, dict) else {}), "keystore": keystore}


@app.command("new")
def new(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Key name: 1-64 of A-Z a-z 0-9 _ . -")],
    label: Annotated[str, typer.Option("--label", "-l", help="Human-readable label.")] = "",
    passphrase: Annotated[
        bool,
        typer.Option(
            "--passphrase/--no-passphrase",
            help="Encrypt the private keys (passphrase from SWARMLOG_PASSPHRASE, else prompted).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a new identity NAME."""
    try:
        validate_name(name)
    except InvalidKeyName as exc:
        _fail(str(exc), 2)
    store = _keystore(ctx)
    if store.exists(name):
        _fail(f"key {name!r} already exists in {store.path}", 2)
    secret: str | None = None
    if passphrase:
        # Read the environment directly: the process-wide settings object is cached.
        secret = os.environ.get("SWARMLOG_PASSPHRASE") or None
        if secret is None:
            secret = typer.prompt("Passphrase", hide_input=True, confirmation_prompt=True)
        if not secret:
            _fail("empty passphrase", 2)
    try:
        identity = store.create(name, label=label, passphrase=secret)
        info = store.info(name)
    except Exception as exc:
        _run_errors(exc)
    if as_json:
        typer.echo(json.dumps(_public_json(info, identity.public), indent=2))
        return
    _console().print(
        f"[green]created[/green] [bold]{escape(name)}[/bold]  {identity.did}"
        + ("  [yellow](encrypted)[/yellow]" if info.encrypted else "")
    )


@app.command("list")
def list_keys(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the identities in the keystore."""
    store = _keystore(ctx)
    try:
        infos = store.list()
    except Exception as exc:
        _run_errors(exc)
    if as_json:
        typer.echo(
            json.dumps(
                {"keystore": str(store.path), "keys": [_public_json(i, None) for i in infos]}, indent=2
            )
        )
        return
    console = _console()
    if not infos:
        console.print(f"no keys in {escape(str(store.path))}")
        return
    # One unwrapped line per key (a table squeezes 56-character DIDs at 80 columns).
    rows = [
        (
            info.name,
            info.did,
            "encrypted" if info.encrypted else "plain",
            f"{info.mode:04o}",
            info.created.strftime("%Y-%m-%d %H:%MZ"),
            info.label,
            info.secure,
        )
        for info in infos
    ]
    header = ("NAME", "DID", "KEYS", "MODE", "CREATED", "LABEL")
    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(5)]
    console.print(
        "  ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=True)).rstrip(),
        style="bold",
        soft_wrap=True,
    )
    for name, did, keys, mode, created, label, secure in rows:
        cells = [escape(name.ljust(widths[0])), did.ljust(widths[1]), keys.ljust(widths[2])]
        cells.append(mode.ljust(widths[3]) if secure else f"[red]{mode.ljust(widths[3])}[/red]")
        cells += [created.ljust(widths[4]), escape(label)]
        console.print("  ".join(cells).rstrip(), soft_wrap=True)
    console.print(f"{len(rows)} key(s) in {escape(str(store.path))}", style="dim", soft_wrap=True)
    for info in infos:
        if not info.secure:
            console.print(
                f"[red]warning:[/red] other users can access {escape(str(info.path))}: chmod 600 it",
                soft_wrap=True,
            )


@app.command("show")
def show(
    ctx: typer.Context,
    name_or_did: Annotated[str, typer.Argument(help="Key name or its did:key.")],
    as_json: JsonOption = False,
) -> None:
    """Show the public information of one identity (no passphrase needed)."""
    store = _keystore(ctx)
    if not name_or_did.startswith("did:"):
        try:
            validate_name(name_or_did)
        except InvalidKeyName as exc:
            _fail(str(exc), 2)
    try:
        info = store.info(name_or_did)
        public = store.get_public(name_or_did)
    except Exception as exc:
        _run_errors(exc)
    doc = _public_json(info, public)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    # Plain "field: value" lines, one per line and never wrapped, so a DID or fingerprint
    # can be copied from the terminal in one piece.
    rows = [
        ("name", escape(info.name)),
        ("did", info.did),
        ("label", escape(info.label) or "-"),
        ("created", doc["created"]),
        ("encrypted", "yes" if info.encrypted else "no"),
        ("file", f"{escape(str(info.path))} ({doc['file_mode']})"),
        *((f"{alg} key", fp) for alg, fp in doc["fingerprints"].items()),
        ("ML-DSA-65 public key", f"{doc['key_sizes']['ml_dsa_65_public']} bytes"),
    ]
    console = _console()
    width = max(len(field) for field, _ in rows)
    for field, value in rows:
        console.print(f"[bold]{field.ljust(width)}[/bold]  {value}", soft_wrap=True)


__all__ = ["app"]
