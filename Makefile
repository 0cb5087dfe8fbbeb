# Makefile for pg_workflow (PGXS)

MODULE_big = pg_workflow
OBJS = \
	src/pg_workflow.o \
	src/shmem.o \
	src/listen.o \
	src/worker.o \
	src/longstep.o \
	src/executor.o \
	src/exec_outcome.o \
	src/exec_contain.o \
	src/exec_plans.o \
	src/exec_housekeeping.o \
	src/exec_path.o \
	src/kinds.o \
	src/context.o \
	src/snapwait.o \
	src/step_sql.o \
	src/step_wait.o \
	src/step_flow.o \
	src/schedule.o \
	src/schedule_next.o \
	src/http.o \
	src/http_request.o \
	src/template.o \
	src/template_redact.o \
	src/api.o \
	src/agent.o \
	src/owners.o \
	src/slots.o \
	src/validate.o \
	src/validate_values.o \
	src/validate_steps.o \
	src/sandbox.o \
	src/states.o \
	src/util.o

EXTENSION = pg_workflow
# The version is the control file's default_version, and only there: the
# install script, the upgrade script and the library (WF_VERSION_STR) take it
# from it.
EXTVERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(dir $(firstword $(MAKEFILE_LIST)))pg_workflow.control)

# The install script of the current version is assembled from its parts,
# one concern each, in name order; those of earlier versions are kept as
# released, with a script from each to the next (its own changes, then what
# every script ends with: 99_finish.sql).
SQL_PARTS = $(sort $(wildcard $(srcdir)/src/sql/[0-9]*.sql))
DATA = src/sql/released/pg_workflow--0.1.sql
DATA_built = pg_workflow--$(EXTVERSION).sql pg_workflow--0.1--0.2.sql
PGFILEDESC = "pg_workflow - durable workflow engine"

SHLIB_LINK = -lcurl
PG_CPPFLAGS = -I$(srcdir)/src -DWF_VERSION_STR='"$(EXTVERSION)"'
PG_CFLAGS = -Wall -Wmissing-prototypes -Wpointer-arith -Werror=vla

# The temporary instance preloads the library and its workers connect to
# database "postgres", so pg_regress must use that database as it is.
REGRESS = init definitions runs security secrets triggers recommendations
REGRESS_OPTS = --temp-config=$(srcdir)/test/pg_workflow.conf \
	--temp-instance=./tmp_check --use-existing

TAP_TESTS = 1
# PGXS looks for t/*.pl; ours live in test/t.
PROVE_TESTS ?= test/t/*.pl

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# After pgxs.mk, which sets its own test database name.
CONTRIB_TESTDB = postgres

pg_workflow--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $^ > $@

# The upgrade's source names the functions it restates ("-- @function
# NAME"), which scripts/sql-upgrade.awk takes from the parts; a part new in
# 0.2 is the same in the install and the upgrade: appended as is.
pg_workflow--0.1--0.2.sql: $(srcdir)/src/sql/upgrade/pg_workflow--0.1--0.2.sql \
		$(SQL_PARTS) $(srcdir)/scripts/sql-upgrade.awk
	awk -v source=$< -f $(srcdir)/scripts/sql-upgrade.awk $(SQL_PARTS) > $@.tmp
	cat $(srcdir)/src/sql/15_recommendations.sql $(srcdir)/src/sql/99_finish.sql >> $@.tmp
	mv $@.tmp $@

# The library says its version (executors, User-Agent): rebuilt with it.
src/util.o src/http.o: $(srcdir)/pg_workflow.control
