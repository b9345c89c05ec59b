"""Auction rules for scarce capabilities: sealed-bid commitments and the Vickrey outcome.

(The spec's Dutch task auction of the swarm task market is ``swarm_tasks.py``.)

* **Sealed-bid second-price (Vickrey)** on AUCTION listings (``market.bid`` →
  ``market.bid_revealed`` → ``market.auction_closed``; folded by ``market.MarketProjection``).
  A sealed bid publishes only ``commitment_of(amount, nonce, bidder)``; after bidding
  closes the bidder reveals amount and nonce. ``auction_outcome``: among the *revealed*
  bids at or above the reserve, the highest wins (ties: the earlier bid) and pays the
  second-highest revealed amount, or the reserve if it is alone (truthful bidding is the
  dominant strategy). Unrevealed bids never win and never set the price. Open (not
  sealed) auctions are ascending: the highest bid wins and pays its own amount.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any


# ---------------------------------------------------------------------------- sealed bids
def commitment_of(amount: float, nonce: bytes, bidder: str) -> bytes:
    """SHA-256 over (amount as big-endian IEEE double, nonce length, nonce, bidder UTF-8): the bid's commitment.

    The bidder is inside the hash so a commitment copied by someone else cannot be opened by them.
    """
    return hashlib.sha256(struct.pack(">dI", float(amount), len(nonce)) + nonce + bidder.encode()).digest()


def auction_outcome(bids: Sequence[Mapping[str, Any]], reserve: float | None, sealed: bool) -> dict[str, Any]:
    """The AuctionClosed fields for ``bids`` in placement order (see the module doc)."""
    floor = reserve or 0.0
    valid = [(i, b) for i, b in enumerate(bids) if b["revealed"] and b["amount"] is not None and b["amount"] >= floor]
    if not valid:
        return {"winning_bid_id": None, "winner": None, "clearing_price": None, "bid_count": 0}
    ranked = sorted(valid, key=lambda ib: (-ib[1]["amount"], ib[0]))
    winner = ranked[0][1]
    price = (max(ranked[1][1]["amount"], floor) if len(ranked) > 1 else floor) if sealed else winner["amount"]
    return {"winning_bid_id": winner["bid_id"], "winner": winner["bidder"], "clearing_price": float(price),
            "bid_count": len(valid)}
