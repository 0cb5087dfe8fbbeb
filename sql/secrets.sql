--
-- Secrets: owned by the role that sets them, granted to other roles,
-- optionally bound to hosts, readable by nobody, and allowed only in an
-- http step's url, headers and body.  (test/t/031_secrets.pl has the runs.)
--
CREATE ROLE wf_sec_alice LOGIN;
CREATE ROLE wf_sec_bob LOGIN;
CREATE ROLE wf_sec_admin LOGIN IN ROLE wf_admin;

-- Any role sets secrets of its own.
SET ROLE wf_sec_alice;
SELECT wf_set_secret('sec_alice', 'alice-value');
SELECT wf_set_secret('sec_bound', 'bound-value', 'api.example.com, *.example.org');
SELECT wf_set_secret('sec_v6', 'v6-value', '[::1] ::1 127.0.0.1');
-- Hosts in the syntax of pg_workflow.http_allowed_hosts, or NULL.
SELECT wf_set_secret('sec_bad', 'v', 'https://api.example.com/');
SELECT wf_set_secret('sec_bad', 'v', 'api.example.com:443');
SELECT wf_set_secret('sec_bad', 'v', ' , ');
SELECT wf_set_secret('bad name', 'v');
SELECT name, owner, hosts, grantees, updated_by FROM wf.secrets ORDER BY name;
SELECT value FROM wf.secret;
RESET ROLE;

-- Another role sees none of them, and can change none of them.
SET ROLE wf_sec_bob;
SELECT count(*) AS visible FROM wf.secrets;
SELECT wf_set_secret('sec_alice', 'bobs-value');
SELECT wf_set_secret('sec_alice', NULL);
SELECT wf_set_secret('sec_alice', 'bobs-value', 'bob.example.com');
SELECT wf_grant_secret('sec_alice', 'wf_sec_bob');
SELECT wf_revoke_secret('sec_alice', 'wf_sec_bob');
SELECT wf_grant_secret('sec_none', 'wf_sec_bob');
SELECT wf_set_secret('sec_bob', 'bob-value');
RESET ROLE;
SELECT name, owner, hosts, updated_by FROM wf.secrets ORDER BY name;

-- The owner grants; granting twice is granting once.
SET ROLE wf_sec_alice;
SELECT wf_grant_secret('sec_alice', 'wf_sec_bob');
SELECT wf_grant_secret('sec_alice', 'wf_sec_bob');
SELECT wf_grant_secret('sec_alice', NULL);
RESET ROLE;
SET ROLE wf_sec_bob;
SELECT name, owner, grantees FROM wf.secrets ORDER BY name;
RESET ROLE;

-- wf_admin changes, grants and revokes any secret; the owner stays.
SET ROLE wf_sec_admin;
SELECT wf_set_secret('sec_bob', 'rotated-value');
SELECT wf_grant_secret('sec_bob', 'wf_sec_alice');
SELECT wf_revoke_secret('sec_alice', 'wf_sec_bob');
SELECT name, owner, grantees, updated_by FROM wf.secrets ORDER BY name;
SELECT value FROM wf.secret;
RESET ROLE;

-- Deleting a secret deletes its grants; deleting it again does nothing.
SET ROLE wf_sec_alice;
SELECT wf_grant_secret('sec_bound', 'wf_sec_bob');
SELECT wf_set_secret('sec_bound', NULL);
SELECT wf_set_secret('sec_bound', NULL);
RESET ROLE;
SELECT count(*) AS grants_left FROM wf.secret_grant WHERE name = 'sec_bound';

-- Secrets only in an http step's url, headers and body, at any depth.
SELECT * FROM wf_validate('{"steps": [
  {"name": "ok", "http": {"method": "POST", "url": "https://api.example.com/{{secret.sec_alice}}",
   "headers": {"Authorization": "Bearer {{ secret.sec_alice }}"}, "body": {"a": ["{{secret.sec_alice}}"]}},
   "compensate": {"http": {"url": "https://api.example.com/", "headers": {"X": "{{secret.sec_alice}}"}}}},
  {"name": "child", "workflow": "w", "input": {"t": "{{secret.sec_alice}}"}},
  {"name": "ask", "human": {"assignee": "{{secret.sec_alice}}", "title": "pay {{secret.sec_alice}}"}},
  {"name": "wait", "wait_for": {"event": "e", "key": "{{secret.sec_alice}}"}},
  {"name": "nap", "sleep": {"until": "{{secret.sec_alice}}"}},
  {"name": "query", "sql": "SELECT ''{{secret.sec_alice}}''"},
  {"name": "h", "http": {"url": "https://h/", "timeout": "1s", "ok_status": 200, "method": "GET"},
   "compensate": {"workflow": "w", "input": ["{{secret.sec_alice}}"]}},
  {"name": "fan", "parallel": [{"name": "b", "steps": [
    {"name": "deep", "map": {"over": "$.input.a", "step": {"name": "each", "wait_for": {"event": "e", "key": "{{secret.sec_alice}}"}}}}]}]}
]}');
SELECT wf_define('misplaced-secret', '{"steps": [{"name": "w", "wait_for": {"event": "e", "key": "k-{{secret.sec_alice}}"}}]}');
SELECT count(*) FROM wf.workflows WHERE name = 'misplaced-secret';

-- Clean up: the superuser has the privileges of every owner.
SELECT wf_set_secret(name, NULL) FROM wf.secret ORDER BY name;
DROP ROLE wf_sec_alice, wf_sec_bob, wf_sec_admin;
