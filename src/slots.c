/*-------------------------------------------------------------------------
 *
 * slots.c
 *		The executors' side of step concurrency keys: taking a slot for a
 *		step, in a transaction of its own, after the batch that found the
 *		step needs one.
 *
 * A step with "concurrency": {"key", "limit"} runs only while it holds one
 * of the limit's slots of its key (src/sql/13_flow_control.sql).  When an
 * executor claims such a step for the first time, wf._step_load renders
 * the key and changes nothing; the executor notes the step here and goes
 * on with its batch.  Once the batch has committed, the noted steps' slots
 * are taken by wf._slot_take in a transaction that does nothing else,
 * keys in order: a take never waits for a key's row while it holds one
 * that comes after it, and no slot row stays locked while a step
 * executes.  A step that got its slot is ready and runs at its next claim;
 * one that did not waits, pending, until a release passes a slot to it.
 *
 * An error in a take is the step's: the worker's recovery counts it against
 * the step (wf_exec_note_error), and the step, still ready and holding no
 * slot, is noted again at its next claim.
 *
 * Releases within a batch are put off to its end (wf._slot_defer, called by
 * the release trigger): the batch then releases its keys in key order, just
 * before it commits, so that two executors releasing the same keys lock
 * their rows in the same order (never a deadlock) and hold them only for
 * their commit.  A release made in a subtransaction that is rolled back is
 * forgotten with it, and so is everything put off by a transaction that
 * ends without wf_slots_release_all (an error).  Outside a batch (wf_cancel,
 * an agent's completion) a release is queued in wf.step_slot_release for
 * the executors, so that no other transaction ever locks a key's row.
 *
 * src/slots.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(wf_slot_defer);

/* A step that needs a slot of its key before it may run. */
typedef struct WfSlotWant
{
	int64		run_id;
	char	   *step;
	char	   *key;
} WfSlotWant;

/* A release put off to the end of the batch. */
typedef struct WfSlotRelease
{
	char	   *key;
	bool		release;		/* a slot given up, or only a fill */
	SubTransactionId subid;		/* the subtransaction that made it */
} WfSlotRelease;

/* The steps noted by the current batch, in a context that outlives it. */
static MemoryContext wf_slots_cxt = NULL;
static List *wf_slots_wanted = NIL;

/* The releases put off, while a batch is open (wf_slots_defer_begin). */
static bool wf_slots_deferring = false;
static List *wf_slots_released = NIL;
static bool wf_slots_callback_set = false;

/*
 * A subtransaction rolled back: the releases it made (or its children,
 * whose ids are greater) did not happen.
 */
static void
wf_slots_subxact(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	foreach(lc, wf_slots_released)
	{
		WfSlotRelease *r = (WfSlotRelease *) lfirst(lc);

		if (r->subid >= mySubid)
			wf_slots_released = foreach_delete_current(wf_slots_released, lc);
	}
}

/*
 * The transaction ended: what it put off is gone with it (committed, it
 * was made by wf_slots_release_all first; aborted, it never happened).
 */
static void
wf_slots_xact(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		wf_slots_deferring = false;
		wf_slots_released = NIL;
	}
}

/* From now until wf_slots_release_all(), releases are put off. */
void
wf_slots_defer_begin(void)
{
	if (!wf_slots_callback_set)
	{
		RegisterSubXactCallback(wf_slots_subxact, NULL);
		RegisterXactCallback(wf_slots_xact, NULL);
		wf_slots_callback_set = true;
	}
	wf_slots_released = NIL;
	wf_slots_deferring = true;
}

/*
 * wf._slot_defer(key, release) RETURNS boolean: puts the release of a slot
 * of key (or a fill of its free slots) off to the end of the executor's
 * batch; false outside a batch (the caller then queues it for the
 * executors).
 */
Datum
wf_slot_defer(PG_FUNCTION_ARGS)
{
	MemoryContext old;
	WfSlotRelease *r;

	if (!wf_slots_deferring)
		PG_RETURN_BOOL(false);
	old = MemoryContextSwitchTo(TopTransactionContext);
	r = palloc(sizeof(WfSlotRelease));
	r->key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	r->release = PG_GETARG_BOOL(1);
	r->subid = GetCurrentSubTransactionId();
	wf_slots_released = lappend(wf_slots_released, r);
	MemoryContextSwitchTo(old);
	PG_RETURN_BOOL(true);
}

static int
wf_slots_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(((WfSlotRelease *) lfirst(a))->key,
				  ((WfSlotRelease *) lfirst(b))->key);
}

/*
 * Makes the releases the batch put off, in key order; called in the
 * batch's transaction, with SPI connected, just before its commit.
 */
void
wf_slots_release_all(void)
{
	Oid			types[2] = {TEXTOID, BOOLOID};
	ListCell   *lc;

	wf_slots_deferring = false;
	list_sort(wf_slots_released, wf_slots_cmp);
	foreach(lc, wf_slots_released)
	{
		WfSlotRelease *r = (WfSlotRelease *) lfirst(lc);
		Datum		args[2];

		args[0] = CStringGetTextDatum(r->key);
		args[1] = BoolGetDatum(r->release);
		if (SPI_execute_with_args("SELECT wf._slot_release($1, $2)", 2, types, args,
								  NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not release a slot of concurrency key \"%s\"", r->key);
	}
	wf_slots_released = NIL;
}

/* Notes that the step must take a slot of key once the batch commits. */
void
wf_slots_want(int64 run_id, const char *step, const char *key)
{
	MemoryContext old;
	WfSlotWant *w;

	if (wf_slots_cxt == NULL)
		wf_slots_cxt = AllocSetContextCreate(TopMemoryContext, "pg_workflow slots",
											 ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(wf_slots_cxt);
	w = palloc(sizeof(WfSlotWant));
	w->run_id = run_id;
	w->step = pstrdup(step);
	w->key = pstrdup(key);
	wf_slots_wanted = lappend(wf_slots_wanted, w);
	MemoryContextSwitchTo(old);
}

/* Does the batch have steps waiting to take a slot? */
bool
wf_slots_pending(void)
{
	return wf_slots_wanted != NIL;
}

/* Takes in key order, as releases are made (then by run and step). */
static int
wf_slots_want_cmp(const ListCell *a, const ListCell *b)
{
	WfSlotWant *x = (WfSlotWant *) lfirst(a);
	WfSlotWant *y = (WfSlotWant *) lfirst(b);
	int			c = strcmp(x->key, y->key);

	if (c != 0)
		return c;
	if (x->run_id != y->run_id)
		return x->run_id < y->run_id ? -1 : 1;
	return strcmp(x->step, y->step);
}

/*
 * Takes the slots the batch noted, in one transaction that does nothing
 * else, keys in order: like the releases at the end of a batch, so that no
 * two executors' transactions lock two keys' rows in opposite orders.
 * Called outside any transaction, after the batch's commit.  A batch that
 * failed noted nothing that counts: wf_slots_forget() drops its notes.
 */
void
wf_slots_take(void)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	ListCell   *lc;

	list_sort(wf_slots_wanted, wf_slots_want_cmp);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	foreach(lc, wf_slots_wanted)
	{
		WfSlotWant *w = (WfSlotWant *) lfirst(lc);
		Datum		args[3];

		CHECK_FOR_INTERRUPTS();
		wf_exec_set_item(w->run_id, w->step);
		args[0] = Int64GetDatum(w->run_id);
		args[1] = CStringGetTextDatum(w->step);
		args[2] = CStringGetTextDatum(w->key);
		if (SPI_execute_with_args("SELECT wf._slot_take($1, $2, $3)", 3, types, args,
								  NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not take a slot of concurrency key \"%s\"", w->key);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	wf_exec_set_item(0, NULL);
	wf_slots_forget();
}

/*
 * Drops the notes (after a take, or when the batch that made them failed;
 * what a failed batch put off went with its transaction, wf_slots_xact).
 */
void
wf_slots_forget(void)
{
	wf_slots_wanted = NIL;
	if (wf_slots_cxt != NULL)
		MemoryContextReset(wf_slots_cxt);
}
