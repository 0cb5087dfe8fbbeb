#!/usr/bin/env python3
"""An external agent for pg_workflow, with python3-psycopg only.

It claims tasks of one pool (waiting for them in the server), heartbeats
while it works, and completes or fails each task.  The work here is a
stand-in: the output echoes the payload; a payload {"fail": "why"} fails
the task (not retryable), {"work_s": N} works N seconds, heartbeating.
SIGTERM or SIGINT: the task in hand is finished, then the agent exits.
A killed agent loses nothing: its lease expires and the task is handed out
again.

  agent.py --dsn "host=... dbname=... user=reviewer_bot" --pool reviewers \
           --agent bot-1 --capabilities english,french
"""
import argparse
import json
import signal
import sys
import time

import psycopg
from psycopg.types.json import Jsonb

stopping = False


def stop(signum, frame):
    global stopping
    stopping = True


def work(conn, task_id, payload, lease):
    """The agent's job: returns the task's output, or raises ValueError."""
    payload = payload or {}
    if "fail" in payload:
        raise ValueError(str(payload["fail"]))
    deadline = time.monotonic() + float(payload.get("work_s", 0))
    while time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        held = conn.execute("SELECT wf_heartbeat(%s, %s::interval, %s)",
                            (task_id, lease, Jsonb({"alive": True}))).fetchone()[0]
        if not held:
            return None         # the lease was lost: someone else has it now
    return {"echo": payload, "agent": args.agent}


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    done = 0
    with psycopg.connect(args.dsn, autocommit=True,
                         application_name=args.agent) as conn:
        print(f"agent {args.agent} ready", flush=True)
        while not stopping and (args.tasks == 0 or done < args.tasks):
            rows = conn.execute(
                "SELECT task_id, payload FROM wf_claim(%s, 1, %s::interval, %s,"
                " %s::text[], %s::interval, %s)",
                (args.pool, args.lease, args.agent, args.capabilities,
                 args.wait, args.capacity)).fetchall()
            for task_id, payload in rows:
                try:
                    output = work(conn, task_id, payload, args.lease)
                except ValueError as e:
                    conn.execute("SELECT wf_fail(%s, %s, false)", (task_id, str(e)))
                    print(f"failed task {task_id}: {e}", flush=True)
                else:
                    if output is not None:
                        ok = conn.execute("SELECT wf_complete(%s, %s)",
                                          (task_id, Jsonb(output))).fetchone()[0]
                        print(f"completed task {task_id}: {ok}", flush=True)
                done += 1
    print(f"agent {args.agent} stopped after {done} tasks", flush=True)
    return 0


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dsn", required=True)
parser.add_argument("--pool", required=True)
parser.add_argument("--agent", default="agent.py")
parser.add_argument("--capabilities", default="",
                    type=lambda s: [c for c in s.split(",") if c])
parser.add_argument("--lease", default="30 seconds")
parser.add_argument("--wait", default="5 seconds",
                    help="how long one wf_claim waits in the server")
parser.add_argument("--tasks", type=int, default=0,
                    help="stop after this many tasks (0: never)")
parser.add_argument("--capacity", type=int, default=None,
                    help="tasks the agent (all processes of this name) holds at most")
args = parser.parse_args()

if __name__ == "__main__":
    sys.exit(main())
