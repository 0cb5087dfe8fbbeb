/*
 * pg_workflow--0.1--0.2.sql: from version 0.1 to 0.2 (ALTER EXTENSION
 * pg_workflow UPDATE).
 *
 * Its changes, then src/sql/99_finish.sql (appended by the Makefile).  TAP
 * test 044_upgrade checks that a database updated from 0.1 has exactly the
 * objects of one where 0.2 was installed, and that the runs in flight
 * during the update go on.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_workflow UPDATE TO '0.2'" to load this file. \quit

