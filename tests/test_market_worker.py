"""The market on the real broker through a live ``swarmlog worker``: purchase → contract, receipts → SLA
breach, a refused purchase → dead letter, the worker's tables == a replay, and the CLI's ``--from-log``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from swarmlog.infra.run import compare_live_tables
from swarmlog.infra.topics import provision
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import read_verified
from swarmlog.streams.verify import Status
from tests.support.live import CliWorker, wait_for

pytestmark = pytest.mark.integration

SLA = {"uptime_percent": 99.0, "max_latency_ms": 100, "availability_window": "24x7", "breach_penalty_percent": 20.0}


def authenticated(bootstrap: str, topic: str, event_type: str) -> list[dict[str, Any]]:
    return [v.event.decode_payload() for v in read_verified(bootstrap, [topic])
            if v.status is Status.AUTHENTICATED and v.event is not None and v.event.event_type == event_type]


def test_market_lifecycle_and_sla_breach_through_a_live_worker(kafka_bootstrap: str, unique_topics: Any,
                                                               tmp_path: Path) -> None:
    prefix = unique_topics.new_prefix()
    provision(kafka_bootstrap, prefix=prefix)
    env = {**os.environ, "SWARMLOG_BOOTSTRAP": kafka_bootstrap, "SWARMLOG_TOPIC_PREFIX": prefix,
           "SWARMLOG_HOME": str(tmp_path), "SWARMLOG_EMBEDDED": "1"}
    worker = CliWorker(env, "market-worker", tmp_path)
    provider, buyer = Identity.generate("provider"), Identity.generate("buyer")
    p_out = EventProducer(provider, kafka_bootstrap, topic_prefix=prefix)
    b_out = EventProducer(buyer, kafka_bootstrap, topic_prefix=prefix)
    listing_id, contract_id = str(uuid.uuid4()), str(uuid.uuid4())
    market, dead = prefix + "market", prefix + "deadletter"
    try:
        p_out.produce("market.listing_created", {
            "listing_id": listing_id, "provider": provider.did, "capability": "data.etl",
            "description": "I can process 1M records/day", "pricing": {"kind": "FIXED", "price": 10.0},
            "sla": SLA, "available_quantity": 5})
        p_out.flush()
        b_out.produce("market.purchase", {"listing_id": listing_id, "contract_id": contract_id, "buyer": buyer.did,
                                          "quantity": 2, "duration_ms": 3_600_000})
        b_out.produce("market.purchase", {"listing_id": "no-such-listing", "contract_id": str(uuid.uuid4()),
                                          "buyer": buyer.did, "duration_ms": 1000})  # bad input
        b_out.flush()
        [created] = wait_for(lambda: authenticated(kafka_bootstrap, market, "market.contract_created"), 120,
                             "the derived contract", [worker])
        assert created["contract_id"] == contract_id and created["total_cost"] == 20.0
        assert created["seller"] == provider.did
        for n in range(5):  # the seller executes under the contract; one command takes 450 ms (SLA: 100 ms)
            duration = 450 if n == 3 else 30
            now = int(time.time() * 1000)
            p_out.produce("commands.receipt", {
                "command_id": str(uuid.uuid4()), "agent_id": provider.did, "capability": "data.etl",
                "started_ms": now - duration, "finished_ms": now, "duration_ms": duration, "success": True,
                "contract_id": contract_id})
        p_out.flush()
        [breach] = wait_for(lambda: authenticated(kafka_bootstrap, market, "market.contract_state_changed"), 120,
                            "the derived breach", [worker])
        assert (breach["status"], breach["penalty_applied"], breach["measured_latency_ms"]) == ("BREACHED", 4.0, 450.0)
        b_out.produce("market.trade", {"contract_id": contract_id, "buyer": buyer.did, "seller": provider.did,
                                       "capability": "data.etl", "amount": 20.0, "quantity": 2})
        b_out.produce("market.rating", {"listing_id": listing_id, "rater": buyer.did, "stars": 2.0,
                                        "contract_id": contract_id})
        b_out.flush()
        letters = wait_for(lambda: [d for d in authenticated(kafka_bootstrap, dead, "deadletter.recorded")
                                    if d["reason"] == "unknown-listing"], 60, "the dead letter", [worker])
        assert letters[0]["source_topic"] == market
        time.sleep(4)  # let the worker fold the trade and the rating before it stops
    finally:
        p_out.close()
        b_out.close()
        worker.stop()
    assert worker.proc.returncode is not None
    equal = compare_live_tables(kafka_bootstrap, prefix)
    assert equal["market"] is True and all(equal.values()), equal

    def cli(*args: str) -> Any:
        out = subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", "market", *args, "--from-log", "--json"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    contract = cli("contract", contract_id)
    assert contract["status"] == "BREACHED" and contract["penalty_applied"] == 4.0 and contract["paid"] == 20.0
    assert contract["obs"]["n"] == 5 and contract["measured_latency_p99_ms"] == 450.0
    [found] = cli("find", "data.etl", "--by", "sla")
    assert found["listing_id"] == listing_id and found["remaining"] == 3 and found["rating"] == 2.0
    missing = subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", "market", "contract", "nope", "--from-log"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "unknown contract" in missing.stderr
