/*
 * 99_finish.sql: what every install and upgrade script ends with.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/* Internal functions are the owner's; the wf_* shims call them. */
DO $$
DECLARE
	f	regprocedure;
BEGIN
	FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
			  WHERE p.pronamespace = 'wf'::regnamespace LOOP
		EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
	END LOOP;
END
$$;

/* wf_patch runs as its caller: its helpers are anybody's (they read nothing). */
GRANT EXECUTE ON FUNCTION wf._pointer_path(text), wf._pointer_exists(jsonb, text[]),
	wf._patch_op(jsonb, jsonb, int) TO PUBLIC;

/* Workers waiting for the extension to appear start looking for work. */
SELECT wf._wake();

