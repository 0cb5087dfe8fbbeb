# Makefile for pg_workflow (PGXS)

MODULE_big = pg_workflow
OBJS = \
	src/pg_workflow.o \
	src/shmem.o \
	src/worker.o \
	src/longstep.o \
	src/executor.o \
	src/kinds.o \
	src/context.o \
	src/snapwait.o \
	src/step_sql.o \
	src/step_wait.o \
	src/step_flow.o \
	src/schedule.o \
	src/http.o \
	src/template.o \
	src/api.o \
	src/agent.o \
	src/owners.o \
	src/validate.o \
	src/sandbox.o \
	src/util.o

EXTENSION = pg_workflow
DATA = pg_workflow--0.1.sql
PGFILEDESC = "pg_workflow - durable workflow engine"

SHLIB_LINK = -lcurl
PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wmissing-prototypes -Wpointer-arith -Werror=vla

# The temporary instance preloads the library and its workers connect to
# database "postgres", so pg_regress must use that database as it is.
REGRESS = init definitions runs security secrets triggers
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
