/*-------------------------------------------------------------------------
 *
 * executor_int.h
 *		What the batch executor (executor.c), the recording of attempts'
 *		outcomes (exec_outcome.c), the containment of engine-side errors
 *		(exec_contain.c), the executor's prepared statements (exec_plans.c)
 *		and its housekeeping (exec_housekeeping.c) share, and the end of an
 *		agent step's attempt (wf._agent_finish, agent.c) uses.
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

	/*
	 * Made ready by a checkpoint of this batch, which runs it next: its row
	 * still says "pending" (deps_left 0), the update that would have made it
	 * "ready" saved (a non-HOT update, its entries in the claim's indexes,
	 * and a dead entry there for every claim to step over once it ran).
	 * Unless it runs, it is written ready before the batch commits
	 * (wf_exec_release_held).
	 */
	bool		held;
} WfWorkItem;

/*
 * Prepared statements of the executor (exec_plans.c prepares them:
 * wf_exec_prepare_all()).
 */
extern SPIPlanPtr wf_plan_claim;
extern SPIPlanPtr wf_plan_next_due;
extern SPIPlanPtr wf_plan_load;
extern SPIPlanPtr wf_plan_done;
extern SPIPlanPtr wf_plan_done_defer;
extern SPIPlanPtr wf_plan_release;
extern SPIPlanPtr wf_plan_children_done;
extern SPIPlanPtr wf_plan_failed;
extern SPIPlanPtr wf_plan_resume;
extern SPIPlanPtr wf_plan_requeue;
extern SPIPlanPtr wf_plan_wait;
extern SPIPlanPtr wf_plan_expire;
extern SPIPlanPtr wf_plan_deferred;
extern SPIPlanPtr wf_plan_solo;
extern SPIPlanPtr wf_plan_solo_due;
extern SPIPlanPtr wf_plan_solo_alike;
extern SPIPlanPtr wf_plan_prune;

/*
 * The current batch set timers (a step waiting with a timeout, a retry
 * later): the executors asleep learn about them only when they look.
 */
extern bool wf_exec_timers_set;

/* executor.c */
extern List *wf_exec_append_ready(List *queue, int64 run_id, Datum arr, bool isnull, bool held,
								  MemoryContext batchctx);

/* exec_outcome.c */
extern void wf_exec_check_output(WfStepResult *res);
extern List *wf_exec_record_failure(WfStepExec *ex, Jsonb *defaults,
									WfStepResult *res, List *queue,
									MemoryContext batchctx);
extern bool wf_exec_resume_attempt(WfStepExec *ex, Jsonb **defaults);
extern bool wf_exec_breaker_record(Jsonb *spec, const char *key, bool ok);
extern List *wf_exec_completion(WfHttpCompletion *c, List *queue,
								MemoryContext batchctx);

/* exec_contain.c */
extern void wf_exec_fail_suspect_if_due(void);
extern const int64 *wf_exec_excluded_runs(int *n);

/* exec_plans.c */
extern void wf_exec_prepare_all(void);
extern int	wf_exec_claim(Datum *args, const char *nulls);

/* exec_housekeeping.c */
extern TimestampTz wf_exec_housekeeping(bool *deferred_held);
extern TimestampTz wf_exec_retry_deferred(void);

#endif							/* PG_WORKFLOW_EXECUTOR_INT_H */
