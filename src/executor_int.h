/*-------------------------------------------------------------------------
 *
 * executor_int.h
 *		What the batch executor (executor.c), the recording of attempts'
 *		outcomes (exec_outcome.c) and the containment of engine-side errors
 *		(exec_contain.c) share.
 *
 * src/executor_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_WORKFLOW_EXECUTOR_INT_H
#define PG_WORKFLOW_EXECUTOR_INT_H

#include "pg_workflow.h"

#include "executor/spi.h"

/* A step to execute in the current batch. */
typedef struct WfWorkItem
{
	int64		run_id;
	char	   *step;
	bool		http;			/* an http step: needs room in flight */
} WfWorkItem;

/* Prepared statements of the executor (executor.c prepares them). */
extern SPIPlanPtr wf_plan_done;
extern SPIPlanPtr wf_plan_failed;
extern SPIPlanPtr wf_plan_resume;

/*
 * The current batch set timers (a step waiting with a timeout, a retry
 * later): the executors asleep learn about them only when they look.
 */
extern bool wf_exec_timers_set;

/* executor.c */
extern List *wf_exec_append_ready(List *queue, int64 run_id, Datum arr, bool isnull,
								  MemoryContext batchctx);

/* exec_outcome.c */
extern void wf_exec_check_output(WfStepResult *res);
extern List *wf_exec_record_failure(WfStepExec *ex, Jsonb *defaults,
									WfStepResult *res, List *queue,
									MemoryContext batchctx);
extern bool wf_exec_breaker_record(Jsonb *spec, const char *key, bool ok);
extern List *wf_exec_completion(WfHttpCompletion *c, List *queue,
								MemoryContext batchctx);

/* exec_contain.c */
extern void wf_exec_fail_suspect_if_due(void);
extern const int64 *wf_exec_excluded_runs(int *n);

#endif							/* PG_WORKFLOW_EXECUTOR_INT_H */
