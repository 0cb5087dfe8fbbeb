/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		Shared state of pg_workflow: the executors' slots, the backends
 *		waiting in wf_wait, and the wake-ups that replace polling.
 *
 * Executors sleep on their latch whenever a check finds nothing due.  A
 * transaction that makes work due (wf_start, wf_retry, ...) asks for a
 * wake-up, delivered by a transaction callback once the commit is durable,
 * so that the woken executor sees the new rows.  The protocol is the usual
 * latch one: an executor marks itself sleeping *before* it resets its latch
 * and looks for work, so a wake-up can never fall between the check and
 * the sleep.
 *
 * src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include <signal.h>

#include "access/xact.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

WfShared   *wf_shared = NULL;

static bool wf_xact_callback_registered = false;

static void wf_shmem_recheck_http(void);

/* What the current transaction asks for at commit. */
static bool wf_wake_pending = false;
static bool wf_deferred_added = false;	/* rows added to wf.deferred */
#define WF_MAX_PENDING_ENDS 64
static int64 wf_ended_runs[WF_MAX_PENDING_ENDS];
static int	wf_n_ended_runs = 0;	/* -1: too many, wake every waiter */

#define WF_BACKENDS(shared) ((shared)->backends)

static int64 wf_my_interrupt = 0;

/* Pools whose tasks this transaction made claimable (-1: too many). */
#define WF_MAX_PENDING_POOLS	16
static uint32 wf_ready_pools[WF_MAX_PENDING_POOLS];
static int	wf_ready_counts[WF_MAX_PENDING_POOLS];	/* tasks made ready in each */
static int	wf_n_ready_pools = 0;

static void wf_shmem_wake_claimers(void);

static Size
wf_shmem_size(void)
{
	return add_size(offsetof(WfShared, backends),
					mul_size(MaxBackends + 1, sizeof(WfBackendSlot)));
}

void
wf_shmem_request(void)
{
	RequestAddinShmemSpace(wf_shmem_size());
}

void
wf_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wf_shared = ShmemInitStruct("pg_workflow", wf_shmem_size(), &found);
	if (!found)
	{
		memset(wf_shared, 0, wf_shmem_size());
		SpinLockInit(&wf_shared->mutex);
		pg_atomic_init_u32(&wf_shared->listeners, 0);
		wf_shared->nworkers = wf_guc_workers;
		wf_shared->nslots = wf_guc_workers + wf_guc_max_long_workers;
		wf_shared->nbackends = MaxBackends + 1;
		/* Changes a crash or a restart left in wf.deferred are made first. */
		wf_shared->deferred = true;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Wakes one sleeping executor, taking them in turn.  When none sleeps, all
 * of them are going to look for work again anyway.
 */
void
wf_shmem_wake_one(void)
{
	Latch	   *latch = NULL;
	int			i;

	if (wf_shared == NULL)
		return;
	SpinLockAcquire(&wf_shared->mutex);
	for (i = 0; i < wf_shared->nworkers; i++)
	{
		WfWorkerSlot *slot;

		slot = &wf_shared->workers[(wf_shared->next_wake + i) % wf_shared->nworkers];
		if (slot->pid != 0 && slot->sleeping)
		{
			slot->sleeping = false;
			latch = slot->latch;
			wf_shared->next_wake += i + 1;
			break;
		}
	}
	SpinLockRelease(&wf_shared->mutex);
	if (latch)
		SetLatch(latch);
}

void
wf_shmem_wake_all(void)
{
	Latch	   *latches[WF_MAX_WORKERS];
	int			n = 0;
	int			i;

	if (wf_shared == NULL)
		return;
	SpinLockAcquire(&wf_shared->mutex);
	for (i = 0; i < wf_shared->nworkers; i++)
	{
		WfWorkerSlot *slot = &wf_shared->workers[i];

		if (slot->pid != 0)
		{
			slot->sleeping = false;
			latches[n++] = slot->latch;
		}
	}
	SpinLockRelease(&wf_shared->mutex);
	for (i = 0; i < n; i++)
		SetLatch(latches[i]);
}

static void
wf_shmem_xact_callback(XactEvent event, void *arg)
{
	if (wf_my_interrupt != 0 &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		 event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		 event == XACT_EVENT_PREPARE))
	{
		WfBackendSlot *me = &WF_BACKENDS(wf_shared)[MyBackendId];

		SpinLockAcquire(&wf_shared->mutex);
		me->interrupting = 0;
		wf_shared->ninterrupts--;
		SpinLockRelease(&wf_shared->mutex);
		wf_my_interrupt = 0;
	}

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wf_deferred_added)
				wf_shmem_set_deferred();
			if (wf_wake_pending || wf_deferred_added)
				wf_shmem_wake_one();
			if (wf_n_ended_runs != 0)
			{
				wf_shmem_wake_waiters(wf_ended_runs, wf_n_ended_runs);
				wf_shmem_recheck_http();
			}
			if (wf_n_ready_pools != 0)
				wf_shmem_wake_claimers();
			wf_wake_pending = false;
			wf_deferred_added = false;
			wf_n_ended_runs = 0;
			wf_n_ready_pools = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wf_wake_pending = false;
			wf_deferred_added = false;
			wf_n_ended_runs = 0;
			wf_n_ready_pools = 0;
			break;
		default:
			break;
	}
}

/*
 * Runs ended: the executors with http requests in flight drop those of the
 * ended runs (a cancelled run's request must not hold its connection and
 * its place until it times out).
 */
static void
wf_shmem_recheck_http(void)
{
	Latch	   *latches[WF_MAX_WORKERS];
	int			n = 0;
	int			i;

	if (wf_shared == NULL)
		return;
	SpinLockAcquire(&wf_shared->mutex);
	for (i = 0; i < wf_shared->nworkers; i++)
	{
		WfWorkerSlot *slot = &wf_shared->workers[i];

		if (slot->pid != 0 && slot->http_in_flight > 0)
		{
			slot->recheck_http = true;
			latches[n++] = slot->latch;
		}
	}
	SpinLockRelease(&wf_shared->mutex);
	for (i = 0; i < n; i++)
		SetLatch(latches[i]);
}

static void
wf_shmem_register_callback(void)
{
	if (!wf_xact_callback_registered)
	{
		RegisterXactCallback(wf_shmem_xact_callback, NULL);
		wf_xact_callback_registered = true;
	}
}

/*
 * Asks for an executor to be woken when the current transaction commits.
 */
void
wf_shmem_wake_at_commit(void)
{
	wf_shmem_register_callback();
	wf_wake_pending = true;
}

/*
 * Asks for the changes queued in wf.deferred to be made when the current
 * transaction commits.
 */
void
wf_shmem_defer_at_commit(void)
{
	wf_shmem_register_callback();
	wf_deferred_added = true;
}

/* Marks wf.deferred as having changes to make. */
void
wf_shmem_set_deferred(void)
{
	if (wf_shared == NULL)
		return;
	SpinLockAcquire(&wf_shared->mutex);
	wf_shared->deferred = true;
	SpinLockRelease(&wf_shared->mutex);
}

/*
 * True when wf.deferred may have changes to make; the caller makes them
 * (and calls wf_shmem_set_deferred if some must wait still).
 */
bool
wf_shmem_take_deferred(void)
{
	bool		pending;

	SpinLockAcquire(&wf_shared->mutex);
	pending = wf_shared->deferred;
	wf_shared->deferred = false;
	SpinLockRelease(&wf_shared->mutex);
	return pending;
}

/*
 * Asks for the backends waiting for run_id in wf_wait to be woken when the
 * current transaction commits.
 */
void
wf_shmem_run_ended_at_commit(int64 run_id)
{
	int			i;

	wf_shmem_register_callback();
	if (wf_n_ended_runs < 0)
		return;
	for (i = 0; i < wf_n_ended_runs; i++)
		if (wf_ended_runs[i] == run_id)
			return;
	if (wf_n_ended_runs == WF_MAX_PENDING_ENDS)
		wf_n_ended_runs = -1;
	else
		wf_ended_runs[wf_n_ended_runs++] = run_id;
}

/*
 * Interrupts the step of run_id that an executor may be running now, and
 * keeps every executor away from that run until the current transaction
 * ends.  The step's subtransaction is rolled back and the step stays
 * ready; the caller then locks the run, which waits for the executor's
 * transaction to end, and can change the run without racing it.  One run
 * at a time per backend: once the caller holds the run's lock, executors
 * cannot claim its steps anyway.
 */
void
wf_shmem_interrupt_run(int64 run_id)
{
	WfBackendSlot *me;
	pid_t		pids[WF_MAX_WORKERS];
	int			n = 0;
	int			i;

	if (wf_shared == NULL || MyBackendId <= 0 || MyBackendId >= wf_shared->nbackends)
		return;
	wf_shmem_register_callback();
	me = &WF_BACKENDS(wf_shared)[MyBackendId];
	SpinLockAcquire(&wf_shared->mutex);
	if (me->interrupting == 0)
		wf_shared->ninterrupts++;
	me->interrupting = run_id;
	for (i = 0; i < wf_shared->nslots; i++)
	{
		WfWorkerSlot *slot = &wf_shared->workers[i];

		/*
		 * A child run's step too: the child ends with its parent.  Not our
		 * own: an executor whose step cancels its run (or the run's parent)
		 * goes on with that step, whose checkpoint then finds the run ended
		 * by its own transaction (wf._step_done).
		 */
		if (slot->pid != 0 && slot->pid != MyProcPid &&
			(slot->current_run == run_id || slot->current_parent == run_id))
			pids[n++] = slot->pid;
	}
	SpinLockRelease(&wf_shared->mutex);
	wf_my_interrupt = run_id;
	for (i = 0; i < n; i++)
		kill(pids[i], SIGINT);
}

/*
 * The runs executors must keep away from now; *n is set to their number.
 */
int64 *
wf_shmem_interrupted_runs(int *n)
{
	WfBackendSlot *slots = WF_BACKENDS(wf_shared);
	int64	   *runs;
	int			i;

	*n = 0;
	/* An unlocked read is fine: requests that race us are rechecked later. */
	if (wf_shared->ninterrupts == 0)
		return NULL;
	runs = palloc(sizeof(int64) * wf_shared->nbackends);
	SpinLockAcquire(&wf_shared->mutex);
	for (i = 1; i < wf_shared->nbackends; i++)
		if (slots[i].interrupting != 0)
			runs[(*n)++] = slots[i].interrupting;
	SpinLockRelease(&wf_shared->mutex);
	return runs;
}

bool
wf_shmem_run_is_interrupted(int64 run_id)
{
	WfBackendSlot *slots = WF_BACKENDS(wf_shared);
	bool		found = false;
	int			i;

	if (wf_shared->ninterrupts == 0)
		return false;
	SpinLockAcquire(&wf_shared->mutex);
	for (i = 1; i < wf_shared->nbackends && !found; i++)
		found = (slots[i].interrupting == run_id);
	SpinLockRelease(&wf_shared->mutex);
	return found;
}

/*
 * Registers the current backend as waiting for run_id (0: not waiting).
 */
void
wf_shmem_set_waiting(int64 run_id)
{
	WfBackendSlot *me;

	if (wf_shared == NULL || MyBackendId <= 0 || MyBackendId >= wf_shared->nbackends)
		return;
	me = &WF_BACKENDS(wf_shared)[MyBackendId];
	SpinLockAcquire(&wf_shared->mutex);
	me->latch = MyLatch;
	me->waiting_for = run_id;
	SpinLockRelease(&wf_shared->mutex);
}

/*
 * Sets the latch of every backend whose slot matches: the latches are
 * collected under the spinlock and set after it.
 */
static void
wf_shmem_wake_backends(bool (*match) (WfBackendSlot *slot, void *arg), void *arg)
{
	WfBackendSlot *slots;
	Latch	  **latches;
	int			n = 0;
	int			i;

	if (wf_shared == NULL)
		return;
	slots = WF_BACKENDS(wf_shared);
	latches = palloc(sizeof(Latch *) * wf_shared->nbackends);
	SpinLockAcquire(&wf_shared->mutex);
	for (i = 1; i < wf_shared->nbackends; i++)
		if (match(&slots[i], arg))
			latches[n++] = slots[i].latch;
	SpinLockRelease(&wf_shared->mutex);
	for (i = 0; i < n; i++)
		SetLatch(latches[i]);
	pfree(latches);
}

/*
 * Wakes the backends waiting in wf_wait for any of the given runs
 * (nruns < 0: every waiting backend).
 */
/* wf_shmem_wake_waiters' test of a backend slot. */
typedef struct WfRunList
{
	int64	   *runs;
	int			n;				/* < 0: every waiting backend */
} WfRunList;

static bool
wf_shmem_waits_for_run(WfBackendSlot *slot, void *arg)
{
	WfRunList  *list = (WfRunList *) arg;
	int			j;

	if (slot->waiting_for == 0)
		return false;
	for (j = 0; j < list->n; j++)
		if (slot->waiting_for == list->runs[j])
			return true;
	return list->n < 0;
}

void
wf_shmem_wake_waiters(int64 *run_ids, int nruns)
{
	WfRunList	list = {run_ids, nruns};

	if (nruns != 0)
		wf_shmem_wake_backends(wf_shmem_waits_for_run, &list);
}

/*
 * The place in the claim order of a run that owner starts now: its virtual
 * clock, which each start advances by WF_FAIR_STEP_US, and which never lags
 * behind the real one.  An owner who starts a thousand runs at once has its
 * last one a second ahead; one who starts a run now is at now, in front of
 * that backlog.
 */
TimestampTz
wf_shmem_fair_at(Oid owner)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz at;
	WfOwnerClock *clock = NULL;
	WfOwnerClock *oldest = NULL;
	int			i;

	if (wf_shared == NULL)
		return now;
	SpinLockAcquire(&wf_shared->mutex);
	for (i = 0; i < WF_FAIR_OWNERS; i++)
	{
		WfOwnerClock *c = &wf_shared->clocks[i];

		if (c->owner == owner)
		{
			clock = c;
			break;
		}
		if (oldest == NULL || c->at < oldest->at)
			oldest = c;
	}
	if (clock == NULL)
	{
		clock = oldest;
		clock->owner = owner;
		clock->at = 0;
	}
	at = Max(now, clock->at);
	clock->at = at + WF_FAIR_STEP_US;
	SpinLockRelease(&wf_shared->mutex);
	return at;
}

/* The non-zero hash by which wf_claim waiters of a pool are found. */
uint32
wf_shmem_pool_hash(const char *pool, int len)
{
	uint32		h = DatumGetUInt32(hash_any((const unsigned char *) pool, len));

	return h == 0 ? 1 : h;
}

/*
 * Registers the current backend as waiting in wf_claim for tasks of the
 * pool of that hash (0: not waiting), with load = its tasks in flight over
 * the capacity it declared: the least loaded waiters are woken first.
 */
void
wf_shmem_set_claim_waiting(uint32 pool_hash, float4 load)
{
	WfBackendSlot *me;

	if (wf_shared == NULL || MyBackendId <= 0 || MyBackendId >= wf_shared->nbackends)
		return;
	me = &WF_BACKENDS(wf_shared)[MyBackendId];
	SpinLockAcquire(&wf_shared->mutex);
	me->latch = MyLatch;
	me->claim_pool = pool_hash;
	me->claim_load = load;
	me->claim_seq = ++wf_shared->claim_seq;
	SpinLockRelease(&wf_shared->mutex);
}

/* A wf_claim waiter, as wf_shmem_wake_claimers orders them. */
typedef struct WfClaimer
{
	uint32		pool;
	float4		load;
	uint64		seq;
	Latch	   *latch;
} WfClaimer;

/* Least loaded first; of equal loads, the one waiting longest. */
static int
wf_shmem_claimer_cmp(const void *a, const void *b)
{
	const WfClaimer *x = (const WfClaimer *) a;
	const WfClaimer *y = (const WfClaimer *) b;

	if (x->load != y->load)
		return x->load < y->load ? -1 : 1;
	return x->seq < y->seq ? -1 : (x->seq > y->seq ? 1 : 0);
}

/* The wf_claim waiters of pools (all pools: pool_hash 0), in wake order. */
static WfClaimer *
wf_shmem_claimers(uint32 pool_hash, int *n)
{
	WfBackendSlot *slots = WF_BACKENDS(wf_shared);
	WfClaimer  *c = palloc(sizeof(WfClaimer) * wf_shared->nbackends);
	int			i;

	*n = 0;
	SpinLockAcquire(&wf_shared->mutex);
	for (i = 1; i < wf_shared->nbackends; i++)
		if (slots[i].claim_pool != 0 &&
			(pool_hash == 0 || slots[i].claim_pool == pool_hash))
		{
			c[*n].pool = slots[i].claim_pool;
			c[*n].load = slots[i].claim_load;
			c[*n].seq = slots[i].claim_seq;
			c[*n].latch = slots[i].latch;
			(*n)++;
		}
	SpinLockRelease(&wf_shared->mutex);
	qsort(c, *n, sizeof(WfClaimer), wf_shmem_claimer_cmp);
	return c;
}

/*
 * A waiter woken for tasks it could not take (they require capabilities it
 * lacks, or others took them) wakes the next one in order, so that a task
 * reaches every waiter that might take it, least loaded first.
 */
void
wf_shmem_claim_pass_on(uint32 pool_hash)
{
	WfBackendSlot *me;
	WfClaimer	self;
	WfClaimer  *c;
	int			n;
	int			i;

	if (wf_shared == NULL || MyBackendId <= 0 || MyBackendId >= wf_shared->nbackends)
		return;
	me = &WF_BACKENDS(wf_shared)[MyBackendId];
	SpinLockAcquire(&wf_shared->mutex);
	self.load = me->claim_load;
	self.seq = me->claim_seq;
	SpinLockRelease(&wf_shared->mutex);
	c = wf_shmem_claimers(pool_hash, &n);
	for (i = 0; i < n; i++)
		if (wf_shmem_claimer_cmp(&c[i], &self) > 0)
		{
			SetLatch(c[i].latch);
			break;
		}
	pfree(c);
}

/*
 * Asks for the backends waiting in wf_claim for the pool of that hash to
 * be woken when the current transaction commits: it made tasks of the
 * pool claimable (created them, or resumed the pool).
 */
void
wf_shmem_pool_ready_at_commit(uint32 pool_hash)
{
	int			i;

	wf_shmem_register_callback();
	if (wf_n_ready_pools < 0)
		return;
	for (i = 0; i < wf_n_ready_pools; i++)
		if (wf_ready_pools[i] == pool_hash)
		{
			wf_ready_counts[i]++;
			return;
		}
	if (wf_n_ready_pools == WF_MAX_PENDING_POOLS)
		wf_n_ready_pools = -1;
	else
	{
		wf_ready_counts[wf_n_ready_pools] = 1;
		wf_ready_pools[wf_n_ready_pools++] = pool_hash;
	}
}

/*
 * Wakes the backends waiting in wf_claim for the pools of wf_ready_pools:
 * as many as tasks were made ready, least loaded first (each woken one
 * that takes nothing passes the wake on); all of them when there were too
 * many pools to list.
 */
static void
wf_shmem_wake_claimers(void)
{
	WfClaimer  *c;
	int			n;
	int			i,
				j;

	if (wf_shared == NULL)
		return;
	c = wf_shmem_claimers(0, &n);
	for (j = 0; j < (wf_n_ready_pools < 0 ? 1 : wf_n_ready_pools); j++)
	{
		int			left = wf_n_ready_pools < 0 ? n : wf_ready_counts[j];

		for (i = 0; i < n && left > 0; i++)
			if (wf_n_ready_pools < 0 || c[i].pool == wf_ready_pools[j])
			{
				SetLatch(c[i].latch);
				left--;
			}
	}
	pfree(c);
}
