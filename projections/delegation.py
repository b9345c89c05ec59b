"""Pure rules of capability delegation chains: proof statement, attenuation, whole-chain validity.

A delegation (``trust.delegated``) is one signed link delegator → delegate for a
capability and a time window; ``parent_delegation_id`` chains it to the link the
delegator holds the capability by. A chain is usable at time ``t`` only if **every**
link is, which is why validity is a property of the whole chain evaluated at the
position where it is used, never stored on a link:

* each link: ``not_before_ms <= t < expires_at_ms`` (spec §6.3: ``now < expires_at``),
  not revoked with an effective time ``<= t``, and neither its delegator nor its
  delegate is a revoked identity at ``t``;
* each child against its parent (attenuation — a link may only narrow what it got):
  ``child.delegator == parent.delegate``, ``child.depth == parent.depth + 1``, the
  child's capability is the parent's or narrower (``database.*`` covers
  ``database.query``), its window lies inside the parent's, its constraints keep every
  parent constraint at the same or a narrower value, and the parent allowed a further
  hop (``parent.max_depth >= 1``, and the child may not allow more hops than the parent
  had left: ``child.max_depth <= parent.max_depth - 1``);
* the chain is at most ``MAX_CHAIN_DEPTH`` links deep, and its root has no parent and
  depth 0.

Links live in different partitions (each is keyed by its own delegation id), so their
relative log position is not defined; "at the position where it is used" therefore
means at the using event's time ``t`` for the other links — the same rule the
``trust.revoked`` schema gives for replays ("from effective_ms on").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_CHAIN_DEPTH = 8  # links below the root; deeper chains are refused when folded and when checked

# reasons a chain check gives (stable strings: the CLI and tests use them)
OK = "ok"
UNKNOWN = "unknown-delegation"
BROKEN = "broken-chain"
EXPIRED = "expired"
NOT_YET_VALID = "not-yet-valid"
REVOKED_LINK = "revoked-link"
REVOKED_KEY = "revoked-key"
WIDENED = "widened-scope"
TOO_DEEP = "over-deep-chain"
WRONG_HOLDER = "wrong-holder"
WRONG_CAPABILITY = "capability-not-covered"


def proof_statement(delegator: str, delegate: str, capability: str, not_before_ms: int, expires_at_ms: int,
                    parent: str | None) -> bytes:
    """The canonical delegation statement the schema's ``proof_hash`` is the SHA-256 of.

    Domain-separated canonical JSON, so a proof for one delegation can never be read as
    the statement of another kind of object.
    """
    body = {"capability": capability, "delegate": delegate, "delegator": delegator,
            "expires_at_ms": expires_at_ms, "not_before_ms": not_before_ms, "parent": parent}
    return b"swarmlog.trust.delegation.v1\x00" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def proof_hash(delegator: str, delegate: str, capability: str, not_before_ms: int, expires_at_ms: int,
               parent: str | None) -> bytes:
    return hashlib.sha256(proof_statement(delegator, delegate, capability, not_before_ms, expires_at_ms,
                                          parent)).digest()


def capability_covers(granted: str, wanted: str) -> bool:
    """``granted`` includes ``wanted``: equal, ``*``, or a ``prefix.*`` wildcard over it."""
    if granted == wanted or granted == "*":
        return True
    if granted.endswith(".*"):
        return wanted.startswith(granted[:-1]) or wanted == granted[:-2]
    return False


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def constraint_narrows(parent_value: str, child_value: str) -> bool:
    """A child constraint value is the parent's or narrower.

    Numbers (``max_units``: "100") narrow by being smaller or equal; patterns ending in
    ``*`` narrow by being covered by the parent's prefix; any other value must be equal.
    """
    if parent_value == child_value:
        return True
    p, c = _number(parent_value), _number(child_value)
    if p is not None and c is not None:
        return c <= p
    if parent_value.endswith("*"):
        return child_value.startswith(parent_value[:-1])
    return False


def attenuation_problems(parent: Mapping[str, Any], child: Mapping[str, Any]) -> list[str]:
    """Why ``child`` is not a valid narrowing of ``parent`` (empty list: it is)."""
    problems: list[str] = []
    if not capability_covers(parent["capability"], child["capability"]):
        problems.append(f"capability {child['capability']!r} is wider than {parent['capability']!r}")
    if child["not_before_ms"] < parent["not_before_ms"] or child["expires_at_ms"] > parent["expires_at_ms"]:
        problems.append("window is wider than the parent's")
    p_cons: Mapping[str, str] = parent.get("constraints") or {}
    c_cons: Mapping[str, str] = child.get("constraints") or {}
    for key in sorted(p_cons):
        if key not in c_cons:
            problems.append(f"constraint {key!r} dropped")
        elif not constraint_narrows(p_cons[key], c_cons[key]):
            problems.append(f"constraint {key}={c_cons[key]!r} is wider than {p_cons[key]!r}")
    if child.get("max_depth", 0) > parent.get("max_depth", 0) - 1:
        problems.append(f"max_depth {child.get('max_depth', 0)} exceeds the {parent.get('max_depth', 0) - 1} "
                        "hops the parent left")
    return problems


@dataclass(frozen=True)
class ChainCheck:
    """The verdict on a whole chain at time ``at_ms``: ``reason`` is ``ok`` or names the first failing rule."""

    valid: bool
    reason: str
    detail: str
    at_ms: int
    chain: tuple[str, ...] = field(default_factory=tuple)  # leaf first, root last

    def as_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "reason": self.reason, "detail": self.detail, "at_ms": self.at_ms,
                "chain": list(self.chain)}


def check_chain(lookup: Callable[[str], Mapping[str, Any] | None], delegation_id: str, at_ms: int, *,
                identity_revoked_at: Callable[[str], int | None] = lambda did: None,
                capability: str | None = None, holder: str | None = None,
                max_depth: int = MAX_CHAIN_DEPTH) -> ChainCheck:
    """Validity of the chain ending in ``delegation_id`` at ``at_ms`` (see the module doc).

    ``lookup(id)`` returns a stored delegation record (``revoked_ms`` set if revoked) or
    None; ``identity_revoked_at(did)`` the effective time of a DID's revocation or None.
    ``capability``/``holder``: what the use needs (the leaf must cover the capability and
    be delegated to the holder).
    """
    chain: list[str] = []

    def bad(reason: str, detail: str) -> ChainCheck:
        return ChainCheck(False, reason, detail, at_ms, tuple(chain))

    leaf = lookup(delegation_id)
    if leaf is None:
        return bad(UNKNOWN, delegation_id)
    if holder is not None and leaf["delegate"] != holder:
        return bad(WRONG_HOLDER, f"{delegation_id} is delegated to {leaf['delegate']}, not {holder}")
    if capability is not None and not capability_covers(leaf["capability"], capability):
        return bad(WRONG_CAPABILITY, f"{leaf['capability']!r} does not cover {capability!r}")
    link: Mapping[str, Any] = leaf
    while True:
        ident = link["delegation_id"]
        if ident in chain:
            return bad(BROKEN, f"cycle at {ident}")
        chain.append(ident)
        if len(chain) > max_depth + 1:
            return bad(TOO_DEEP, f"more than {max_depth} links below the root")
        if at_ms < link["not_before_ms"]:
            return bad(NOT_YET_VALID, f"{ident} is valid from {link['not_before_ms']}, used at {at_ms}")
        if at_ms >= link["expires_at_ms"]:
            return bad(EXPIRED, f"{ident} expired at {link['expires_at_ms']}, used at {at_ms}")
        revoked = link.get("revoked_ms")
        if revoked is not None and revoked <= at_ms:
            return bad(REVOKED_LINK, f"{ident} revoked from {revoked}")
        for did in (link["delegator"], link["delegate"]):
            when = identity_revoked_at(did)
            if when is not None and when <= at_ms:
                return bad(REVOKED_KEY, f"{did} revoked from {when} ({ident})")
        parent_id = link.get("parent_delegation_id")
        if parent_id is None:
            if link["depth"] != 0:
                return bad(BROKEN, f"root {ident} has depth {link['depth']}, not 0")
            return ChainCheck(True, OK, f"{len(chain)} link(s)", at_ms, tuple(chain))
        parent = lookup(parent_id)
        if parent is None:
            return bad(BROKEN, f"{ident} names parent {parent_id}, which is not in the log")
        if parent["delegate"] != link["delegator"]:
            return bad(BROKEN, f"{ident} is granted by {link['delegator']}, but {parent_id} went to "
                               f"{parent['delegate']}")
        if link["depth"] != parent["depth"] + 1:
            return bad(BROKEN, f"{ident} has depth {link['depth']}, parent {parent_id} has {parent['depth']}")
        if parent.get("max_depth", 0) < 1:
            return bad(TOO_DEEP, f"{parent_id} allows no re-delegation (max_depth {parent.get('max_depth', 0)})")
        problems = attenuation_problems(parent, link)
        if problems:
            return bad(WIDENED, f"{ident} vs {parent_id}: " + "; ".join(problems))
        link = parent


__all__ = [
    "MAX_CHAIN_DEPTH",
    "ChainCheck",
    "attenuation_problems",
    "capability_covers",
    "check_chain",
    "constraint_narrows",
    "proof_hash",
    "proof_statement",
]
