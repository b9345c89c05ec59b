"""The swarm layer's false-positive checks, as trust evidence.

The spec (seeds, "false_positives.rs") lists checks that keep a swarm from being steered by
false claims: bid validation, role verification against impersonation, pheromone spoofing,
alert validation with severity classification, and trust-score manipulation. Here each
check is a pure function the owning projection calls while it folds the claim, and its
verdict leaves as a ``trust.observation`` (v2, ``check`` names the check) signed by the
worker, so the trust network — scores, EigenTrust, routing by trust — learns from it like
from any other observation.

Where a check reads only its own lane (a task's bids and completion, an agent's role, a
field's deposits, the observations about one agent), its verdict is part of the fold and a
replay reaches it again. Alert validation compares a claim with the registry replica, which
another lane feeds: like a routing decision, its verdict is *recorded* (the observation event
is in the log) and the projection's state never depends on it.

Thresholds (module constants, documented in docs/swarm.md):

* bid reliability: done, and within ``BID_TOLERANCE`` (50 %) over the bid's own estimate →
  SUCCESS; done late → TIMEOUT; failed → FAILURE (all about the assignee);
* role verification: a role change that names a previous role the agent does not hold →
  refused, FAILURE about the signer;
* pheromone spoofing: a deposit signed for another depositor, or a depositor that would have
  moved faster than ``MAX_DEPOSITOR_SPEED`` cells per second between two of its deposits on a
  field (plus one cell of slack) → refused, FAILURE about the signer;
* alert validation: a hop-0 GLOBAL_ALERT gossip message of content type ``application/x-swarm-alert``
  claims an agent is FAILED or DEGRADED; the registry confirms (SUCCESS) or contradicts it
  (a false alarm: PARTIAL_FAILURE with error rate 1, i.e. −0.5); an unknown agent is a
  false alarm too; its severity is classified from the registry state;
* trust manipulation: once an observer has ``MIN_MANIPULATION_SAMPLES`` observations of an
  agent, and the others together as many, and its mean rating differs from theirs by at least
  ``MANIPULATION_GAP`` (ballot stuffing or bad-mouthing), it is reported once per
  (observer, agent): FAILURE about the observer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from swarmlog.projections.base import SIGNER, Derived

OBSERVATION = "trust.observation"

BID_RELIABILITY = "bid-reliability"
ROLE_VERIFICATION = "role-verification"
PHEROMONE_SPOOFING = "pheromone-spoofing"
ALERT_VALIDATION = "alert-validation"
TRUST_MANIPULATION = "trust-manipulation"
CHECKS = (BID_RELIABILITY, ROLE_VERIFICATION, PHEROMONE_SPOOFING, ALERT_VALIDATION, TRUST_MANIPULATION)

BID_TOLERANCE = 0.5
MAX_DEPOSITOR_SPEED = 4.0  # cells per second: the spec's max speed (4 per tick) at one tick per second
ALERT_CONTENT_TYPE = "application/x-swarm-alert"
ALERT_KINDS = ("agent-failed", "agent-degraded")
MIN_MANIPULATION_SAMPLES = 5
MANIPULATION_GAP = 0.5


def observation(agent_id: str, outcome: str, check: str, *, error_rate: float = 0.0,
                duration_ms: int | None = None, capability: str | None = None) -> Derived:
    """A ``trust.observation`` about ``agent_id`` by the worker that signs it."""
    return Derived(OBSERVATION, {"agent_id": agent_id, "observer": SIGNER, "outcome": outcome,
                                 "error_rate": error_rate, "duration_ms": duration_ms, "command_id": None,
                                 "capability": capability, "check": check}, agent_id)


# ---------------------------------------------------------------------------- bids
def bid_outcome(success: bool, duration_ms: int, estimated_ms: int) -> str:
    """How the assignee kept its bid's promise (see the module docstring)."""
    if not success:
        return "FAILURE"
    return "SUCCESS" if duration_ms <= estimated_ms * (1.0 + BID_TOLERANCE) else "TIMEOUT"


# ---------------------------------------------------------------------------- pheromones
def deposit_speed_ok(last: Mapping[str, Any] | None, x: int, y: int, timestamp_ms: int) -> bool:
    """Could the depositor have walked from its previous deposit on this field to (x, y)?

    Chebyshev distance (the field's moves include diagonals); one cell of slack so a
    depositor may mark its own and a neighbouring cell at the same instant. A deposit older
    than the last one (out of order on the wire) is judged on the absolute time gap.
    """
    if last is None:
        return True
    distance = max(abs(x - int(last["x"])), abs(y - int(last["y"])))
    elapsed_s = abs(timestamp_ms - int(last["ts"])) / 1000.0
    return distance <= MAX_DEPOSITOR_SPEED * elapsed_s + 1.0


# ---------------------------------------------------------------------------- alerts
class AlertError(ValueError):
    """An alert body that is not a well-formed alert (the message itself is still gossip)."""


def parse_alert(body: bytes) -> tuple[str, str, str]:
    """(kind, agent_id, claimed severity) of an alert body: JSON ``{"kind", "agent_id", "severity"}``."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlertError(f"alert body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AlertError("alert body must be a JSON object")
    kind, agent, severity = data.get("kind"), data.get("agent_id"), data.get("severity", "warning")
    if kind not in ALERT_KINDS:
        raise AlertError(f"unknown alert kind {kind!r}; known: {', '.join(ALERT_KINDS)}")
    if not isinstance(agent, str) or not agent:
        raise AlertError("alert names no agent_id")
    if severity not in ("info", "warning", "critical"):
        raise AlertError(f"unknown severity {severity!r}")
    return kind, agent, severity


def classify_alert(kind: str, agent: Mapping[str, Any] | None) -> tuple[bool, str]:
    """(confirmed, severity) of an alert against the registry's view of the agent.

    Severity is the registry's, not the sender's: ``critical`` when the agent is FAILED or no
    longer live, ``warning`` when DEGRADED, ``info`` otherwise. An agent the registry has
    never seen cannot be failing: the alert is not confirmed.
    """
    if agent is None:
        return False, "info"
    gone = agent.get("status") != "ACTIVE"
    health = agent.get("health_status")
    severity = "critical" if gone or health == "FAILED" else "warning" if health == "DEGRADED" else "info"
    if kind == "agent-failed":
        return severity == "critical", severity
    return severity in ("critical", "warning"), severity


def alert_observation(sender: str, confirmed: bool) -> Derived:
    if confirmed:
        return observation(sender, "SUCCESS", ALERT_VALIDATION)
    return observation(sender, "PARTIAL_FAILURE", ALERT_VALIDATION, error_rate=1.0)


# ---------------------------------------------------------------------------- trust manipulation
def rating_gap(edge: Mapping[str, Any], agent: Mapping[str, Any]) -> float | None:
    """|observer's mean rating − everyone else's| for one agent, once both have enough samples.

    Ratings are the trust update's targets (0.5 + delta / 2, in [0, 1]); ``pos`` sums them
    per record, so the others' mean is (agent.pos − edge.pos) / (agent.samples − edge.samples).
    """
    mine, total = int(edge["samples"]), int(agent["samples"])
    others = total - mine
    if mine < MIN_MANIPULATION_SAMPLES or others < MIN_MANIPULATION_SAMPLES:
        return None
    gap = abs(float(edge["pos"]) / mine - (float(agent["pos"]) - float(edge["pos"])) / others)
    return gap if math.isfinite(gap) else None
