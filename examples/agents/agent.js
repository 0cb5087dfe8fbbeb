#!/usr/bin/env node
// An external agent for pg_workflow, with the npm package "pg" only.
//
// It claims tasks of one pool (waiting for them in the server), heartbeats
// while it works, and completes or fails each task.  The work here is a
// stand-in: the output echoes the payload; a payload {"fail": "why"} fails
// the task (not retryable), {"work_s": N} works N seconds, heartbeating.
// SIGTERM or SIGINT: the task in hand is finished, then the agent exits.
// A killed agent loses nothing: its lease expires (or the agent is seen
// lost) and the task is handed out again.
//
//   node agent.js --dsn "postgresql://reviewer_bot@host/db" --pool reviewers \
//                 --agent bot-1 --capabilities english,french
'use strict';
const { Client } = require('pg');

const opts = { agent: 'agent.js', capabilities: '', lease: '30 seconds',
               wait: '5 seconds', tasks: '0', capacity: null };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, '');
  if (!(key in opts) && key !== 'dsn' && key !== 'pool') {
    console.error(`unknown option ${argv[i]}`);
    process.exit(2);
  }
  opts[key] = argv[i + 1];
}
if (!opts.dsn || !opts.pool) {
  console.error('usage: agent.js --dsn DSN --pool POOL [--agent NAME] [--capabilities a,b]'
                + ' [--lease I] [--wait I] [--tasks N] [--capacity N]');
  process.exit(2);
}
const capabilities = opts.capabilities.split(',').filter((c) => c);
const maxTasks = Number(opts.tasks);
let stopping = false;
process.on('SIGTERM', () => { stopping = true; });
process.on('SIGINT', () => { stopping = true; });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The agent's job: the task's output, null when the lease was lost, or
// throws to fail the task.
async function work(db, taskId, payload) {
  payload = payload || {};
  if ('fail' in payload) throw new Error(String(payload.fail));
  const deadline = Date.now() + 1000 * Number(payload.work_s || 0);
  while (Date.now() < deadline) {
    await sleep(Math.min(200, Math.max(0, deadline - Date.now())));
    const r = await db.query('SELECT wf_heartbeat($1, $2::interval, $3) AS held',
                             [taskId, opts.lease, { alive: true }]);
    if (!r.rows[0].held) return null;   // someone else has it now
  }
  return { echo: payload, agent: opts.agent };
}

async function main() {
  const db = new Client({ connectionString: opts.dsn, application_name: opts.agent });
  await db.connect();
  console.log(`agent ${opts.agent} ready`);
  let done = 0;
  while (!stopping && (maxTasks === 0 || done < maxTasks)) {
    const { rows } = await db.query(
      'SELECT task_id, payload FROM wf_claim($1, 1, $2::interval, $3, $4::text[], $5::interval, $6)',
      [opts.pool, opts.lease, opts.agent, capabilities, opts.wait, opts.capacity]);
    for (const { task_id: taskId, payload } of rows) {
      let output;
      try {
        output = await work(db, taskId, payload);
      } catch (e) {
        await db.query('SELECT wf_fail($1, $2, false)', [taskId, e.message]);
        console.log(`failed task ${taskId}: ${e.message}`);
        done += 1;
        continue;
      }
      if (output !== null) {
        const r = await db.query('SELECT wf_complete($1, $2) AS ok', [taskId, output]);
        console.log(`completed task ${taskId}: ${r.rows[0].ok}`);
      }
      done += 1;
    }
  }
  await db.end();
  console.log(`agent ${opts.agent} stopped after ${done} tasks`);
}

main().catch((e) => { console.error(`agent ${opts.agent}: ${e.message}`); process.exit(1); });
