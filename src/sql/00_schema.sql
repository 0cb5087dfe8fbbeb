/*
 * 00_schema.sql: the schema, its roles and the rules every part follows.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order (this part first).
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_workflow" to load this file. \quit

/*
 * Integrity
 *
 * The tables below are written only by the functions of this script, which
 * keep them consistent (a run's steps are created with it; runs and
 * definitions are never deleted).  They carry no foreign keys: the
 * executors update a step several times per transaction, and every such
 * update would re-check the keys of a row the same transaction inserted or
 * changed before.
 *
 * Layout
 *
 * Everything the engine stores lives in schema wf, in tables no role but
 * the extension's owner can touch.  Users read them through the views at
 * the end of this script, which show each role its own runs (all of them to
 * members of wf_admin), and change them only through the wf_* functions.
 *
 * Each public wf_* function that writes is a C shim (api.c) that calls the
 * SECURITY DEFINER function wf._NAME with the caller's role prepended: the
 * caller cannot be forged, because nobody but the owner may execute
 * wf._NAME directly.
 */
CREATE SCHEMA wf;
REVOKE ALL ON SCHEMA wf FROM PUBLIC;
GRANT USAGE ON SCHEMA wf TO PUBLIC;

CREATE FUNCTION wf._check_database() RETURNS void
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_check_database';
SELECT wf._check_database();

DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'wf_admin') THEN
		CREATE ROLE wf_admin NOLOGIN;
	END IF;
END
$$;

