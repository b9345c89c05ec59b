"""The main job's swarm episode: a swarm vote feeding the hive mind, a task auction, an
optimisation job run by the worker, and a formation — all signed events on ``swarm``.

    coordinator opens a voting pool  →  7 agents vote (one equivocates)  →  the pool
    closes in event time             →  swarm.vote_decided (derived)     →  hive mind gen 1
    a task is posted                 →  agents bid (one lacks the skill) →  swarm.task_assigned
                                        (derived, qualified winner)      →  winner completes it
    a PSO job is requested           →  the worker runs it               →  progress + result
    agents report positions, a CIRCLE formation is ordered, agents steer and report again:
    formation error falls, no two agents closer than the separation radius.

What the summary shows is read back from the log (a replay of ``swarm`` and the registry).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from swarmlog.projections.engine import Engine, replay
from swarmlog.projections.flocking import Boid, formation_separation, formation_tick
from swarmlog.projections.registry import RegistryProjection
from swarmlog.projections.swarm_jobs import SwarmJobProjection, get_job
from swarmlog.projections.swarm_resilience import RoleProjection
from swarmlog.projections.swarm_space import SwarmSpaceProjection, formation_targets, swarm_boids, swarm_metrics
from swarmlog.projections.swarm_tasks import SwarmTaskProjection, get_task, market_metrics
from swarmlog.projections.swarm_voting import VotingPoolProjection, byzantine_voters, get_pool, hivemind
from swarmlog.streams.reader import plan_ranges, read_records

if TYPE_CHECKING:
    from swarmlog.infra.run import SimAgent, Simulation

SWARM_ID = "swarm-main"
VOTE_WINDOW_MS = 1_500


def replay_swarm(bootstrap: str, prefix: str) -> Engine:
    topics = [prefix + t for t in ("agents", "commands", "receipts", "swarm")]
    return replay(read_records(bootstrap, plan_ranges(bootstrap, topics)),
                  [RegistryProjection(), SwarmJobProjection(run_jobs=False), VotingPoolProjection(),
                   SwarmTaskProjection(), SwarmSpaceProjection(), RoleProjection()])[0]


class SwarmEpisode:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.pool_id = str(uuid.uuid4())
        self.task_id = str(uuid.uuid4())
        self.job_id = str(uuid.uuid4())
        self.notes: list[str] = []
        self.formation_before = 0.0
        self.members: list[SimAgent] = []

    def _flush(self, *agents: Any) -> None:
        for agent in agents:
            agent.producer.seal()
        self.sim.client.seal()
        self.sim.kafka.flush(30)

    def _wait(self, predicate: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(replay_swarm(self.sim.bootstrap, self.sim.prefix).stores)
            if value:
                return value
            time.sleep(0.3)
        return None

    def run(self) -> None:
        sim = self.sim
        client = sim.client
        voters = sim.agents[-7:]
        now = int(time.time() * 1000)
        # 1. a swarm vote (one voter equivocates) and a PSO job, in parallel
        client.produce("swarm.vote_pool_created", {
            "pool_id": self.pool_id, "creator": client.did, "question": "intent:scale_out_region",
            "options": ["scale_out", "hold"], "rule": "SUPER_MAJORITY", "closes_at_ms": now + VOTE_WINDOW_MS,
            "weight_threshold": None, "min_confidence": 0.3, "swarm_id": SWARM_ID})
        client.produce("swarm.optimization_requested", {
            "job_id": self.job_id, "requester": client.did, "algorithm": "PSO", "problem": "rastrigin",
            "problem_data": None, "dimensions": 5, "lower_bounds": [], "upper_bounds": [], "minimize": True,
            "seed": 2028, "population": 30, "max_iterations": 2000, "params": {"tolerance": 1e-6}})
        self._flush()
        for i, voter in enumerate(voters):
            choice = "hold" if i == 0 else "scale_out"
            voter.producer.produce("swarm.vote", {"pool_id": self.pool_id, "voter": voter.did, "decision": choice,
                                                  "confidence": round(0.6 + 0.05 * i, 2), "weight": 1.0})
            if i == 1:  # equivocation: the same voter says the opposite
                voter.producer.produce("swarm.vote", {"pool_id": self.pool_id, "voter": voter.did,
                                                      "decision": "hold", "confidence": 0.9, "weight": 1.0})
        # 2. a task auction: the task needs the first bidder's first capability
        bidders = sim.agents[:6]
        skill = bidders[0].capabilities[0]
        for bidder in bidders:
            sim.heartbeat(bidder)  # only live agents qualify: the registry expires silent ones
        client.produce("swarm.task_posted", {
            "task_id": self.task_id, "poster": client.did, "swarm_id": SWARM_ID, "description": "reindex shard 7",
            "required_skills": [skill], "deadline_ms": now + VOTE_WINDOW_MS, "reward": 50.0, "priority": 7,
            "payload": None})
        self._flush(*voters)
        for i, bidder in enumerate(bidders):
            bidder.producer.produce("swarm.task_bid", {
                "task_id": self.task_id, "agent_id": bidder.did, "bid_price": 10.0 + 3 * i,
                "estimated_completion_ms": 800 + 100 * i, "confidence": 0.9, "current_load": i % 3})
        # 3. positions for a formation
        self.members = sim.agents[6:14]
        for i, agent in enumerate(self.members):
            agent.producer.produce("swarm.position", {"agent_id": agent.did, "swarm_id": SWARM_ID,
                                                      "x": 20.0 * i, "y": 10.0 * (i % 3), "vx": 1.0, "vy": 0.0})
        client.produce("swarm.formation", {"swarm_id": SWARM_ID, "shape": "CIRCLE", "anchor_x": 200.0,
                                           "anchor_y": 200.0, "spacing": 30.0, "heading_rad": 0.0, "members": []})
        self._flush(*bidders, *self.members)
        # the pool and the auction close at the first event of their lane after the deadline:
        # a straggler's late vote and late bid (counted as late, never as a ballot)
        time.sleep(max(0.0, (now + VOTE_WINDOW_MS - time.time() * 1000) / 1000 + 0.05))
        straggler = sim.agents[-8]
        straggler.producer.produce("swarm.vote", {"pool_id": self.pool_id, "voter": straggler.did,
                                                  "decision": "hold", "confidence": 1.0, "weight": 1.0})
        straggler.producer.produce("swarm.task_bid", {
            "task_id": self.task_id, "agent_id": straggler.did, "bid_price": 1.0,
            "estimated_completion_ms": 100, "confidence": 1.0, "current_load": 0})
        self._flush(straggler)
        # 4. the formation: agents steer to their slots and report their new positions
        stores = self._wait(lambda s: s if formation_targets(s["swarm_space"], SWARM_ID) else None, 15)
        if stores is None:
            self.notes.append("formation order not seen in time")
        else:
            space = stores["swarm_space"]
            targets = formation_targets(space, SWARM_ID)
            self.formation_before = swarm_metrics(space, SWARM_ID)["formation_error"]
            boids: dict[str, Boid] = swarm_boids(space, SWARM_ID)
            for _ in range(300):
                boids = formation_tick(boids, targets, transit_separation=formation_separation(30.0))
            for agent in self.members:
                b = boids[agent.did]
                agent.producer.produce("swarm.position", {"agent_id": agent.did, "swarm_id": SWARM_ID,
                                                          "x": b.x, "y": b.y, "vx": b.vx, "vy": b.vy})
            self._flush(*self.members)
        # 5. the auction's winner completes the task
        stores = self._wait(lambda s: s if (get_task(s["swarm_tasks"], self.task_id) or {}).get("assignee")
                            else None, 20)
        if stores is None:
            self.notes.append("task not assigned in time")
        else:
            winner = str((get_task(stores["swarm_tasks"], self.task_id) or {})["assignee"])
            agent = sim.by_did[winner]
            agent.producer.produce("swarm.task_completed", {"task_id": self.task_id, "agent_id": winner,
                                                            "success": True, "duration_ms": 740,
                                                            "result_hash": None, "detail": "reindexed"})
            self._flush(agent)
        if not self._wait(lambda s: (get_job(s["swarm_jobs"], self.job_id) or {}).get("status") == "DONE"
                          and (get_pool(s["swarm_voting"], self.pool_id) or {}).get("status") == "DECIDED"
                          and (get_task(s["swarm_tasks"], self.task_id) or {}).get("status") == "COMPLETED", 30):
            self.notes.append("swarm results not all seen in time")

    def summary(self, bootstrap: str, prefix: str) -> dict[str, Any]:
        stores = replay_swarm(bootstrap, prefix).stores
        pool = get_pool(stores["swarm_voting"], self.pool_id) or {}
        task = get_task(stores["swarm_tasks"], self.task_id) or {}
        job = get_job(stores["swarm_jobs"], self.job_id) or {}
        metrics = swarm_metrics(stores["swarm_space"], SWARM_ID)
        return {
            "vote": {"status": pool.get("status"), "result": pool.get("result"),
                     "equivocating_voters": len(pool.get("equivocating_voters", [])),
                     "late_votes": pool.get("late_votes"),
                     "byzantine_voters": len(byzantine_voters(stores["swarm_voting"]))},
            "hivemind": hivemind(stores["swarm_voting"], SWARM_ID),
            "task": {"status": task.get("status"), "assignee": task.get("assignee"), "score": task.get("score"),
                     "bids": len(task.get("bids", {})), "late_bids": task.get("late_bids")},
            "task_market": market_metrics(stores["swarm_tasks"]),
            "optimization": {"status": job.get("status"), "best_value": job.get("best_value"),
                             "iterations": job.get("iterations"), "converged": job.get("converged")},
            "formation": {"members": metrics["members"], "error_before": round(self.formation_before, 2),
                          "error_after": round(metrics["formation_error"], 3),
                          "min_distance": round(metrics["min_distance"], 2)},
            "notes": self.notes,
        }
