/*-------------------------------------------------------------------------
 *
 * schedule.c
 *		Schedules of wf_schedule(): parsing cron expressions and "every N
 *		unit" intervals, and the entry points that check a schedule and
 *		give its next time (computed in schedule_next.c).
 *
 * A schedule is one of
 *
 *	- five cron fields "minute hour day-of-month month day-of-week".  Each
 *	  field is a comma-separated list of elements, an element being "*", a
 *	  number, a range "a-b", or "*" or a range followed by a step "/n".
 *	  Months (JAN-DEC) and days of the week (SUN-SAT) may be named, in any
 *	  case; day of week 7 is Sunday, like 0.
 *	- a macro: @yearly or @annually ("0 0 1 1 *"), @monthly ("0 0 1 * *"),
 *	  @weekly ("0 0 * * 0"), @daily or @midnight ("0 0 * * *"), @hourly
 *	  ("0 * * * *").
 *	- "every N unit", unit being second, minute, hour, day or week (or a
 *	  plural), N a positive integer; "every minute" means "every 1 minute".
 *
 * Semantics decided here:
 *
 *	- Cron fields are Vixie cron's.  When the day-of-month and day-of-week
 *	  fields are both restricted, a day matches if either matches; a field
 *	  counts as unrestricted when it begins with "*" (so "*" followed by a
 *	  step does too, as in Vixie cron and cronie), and then a day must
 *	  match both.  A single value with a step ("5/15") is rejected rather
 *	  than guessed at.
 *
 *	- Cron fields are matched against the wall clock of a time zone (any
 *	  name the TimeZone setting accepts).  A wall-clock time that does not
 *	  exist, skipped by a spring-forward transition, fires where PostgreSQL
 *	  puts it: like '2026-03-08 02:30'::timestamp AT TIME ZONE
 *	  'America/New_York', it is read with the offset in force before the
 *	  transition, so 02:30 fires at 03:30 EDT.  (Hence "30 2 * * *" fires
 *	  at 03:30 that day, and "*" for hours keeps firing once an hour.)  A
 *	  wall-clock time that occurs twice, in the hour repeated by a
 *	  fall-back transition, fires once, at its first occurrence: the
 *	  repeated hour fires nothing that already fired.  Strictly periodic
 *	  schedules should use "every N unit".
 *
 *	- "every N unit" fires at the multiples of N units counted from
 *	  2000-01-01 00:00:00 UTC (PostgreSQL's epoch), whatever the time zone:
 *	  every executor, before and after a restart, computes the same slots.
 *	  So "every 1 day" fires at midnight UTC, and "every 1 week" at
 *	  midnight UTC between Friday and Saturday (2000-01-01 was a Saturday).
 *
 *	- The next time is the first firing time strictly after the given
 *	  time.  A cron schedule whose day-of-month and month fields never
 *	  meet ("0 0 30 2 *") is rejected as never firing: the Gregorian
 *	  calendar repeats every 400 years, so a search that finds nothing
 *	  within 400 years proves it.
 *
 * src/schedule.c
 *
 *-------------------------------------------------------------------------
 */

#include "pg_workflow.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "schedule_int.h"

PG_FUNCTION_INFO_V1(wf_schedule_next);
PG_FUNCTION_INFO_V1(wf_schedule_check);

/* Longer schedules are refused before anything else is said about them. */
#define WF_SCHEDULE_MAX_LENGTH	1000

/* Tokens of a schedule kept for parsing; more are only counted. */
#define WF_SCHEDULE_MAX_TOKENS	8

/* The longest interval of "every N unit". */
#define WF_SCHEDULE_MAX_EVERY_DAYS	36525

#define WF_SCHEDULE_HINT \
	"A schedule is five cron fields \"minute hour day-of-month month day-of-week\" " \
	"such as '0 * * * *' or '*/15 9-17 * * MON-FRI', a macro among @yearly, " \
	"@monthly, @weekly, @daily and @hourly, or \"every N unit\" with unit " \
	"second, minute, hour, day or week, such as 'every 15 minutes'."

/* What a cron field accepts. */
typedef struct WfScheduleField
{
	const char *name;			/* in messages */
	int			min;
	int			max;
	const char *const *names;	/* names of values names_base, ... or NULL */
	int			names_base;
	const char *name_kind;		/* "unknown %s name" */
	bool		seven_is_zero;	/* day of week 7 is Sunday, like 0 */
} WfScheduleField;

static const char *const wf_schedule_month_names[] = {
	"jan", "feb", "mar", "apr", "may", "jun",
	"jul", "aug", "sep", "oct", "nov", "dec", NULL
};

static const char *const wf_schedule_day_names[] = {
	"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL
};

enum
{
	WF_SCHEDULE_MINUTE,
	WF_SCHEDULE_HOUR,
	WF_SCHEDULE_MDAY,
	WF_SCHEDULE_MONTH,
	WF_SCHEDULE_WDAY,
	WF_SCHEDULE_NFIELDS
};

static const WfScheduleField wf_schedule_fields[WF_SCHEDULE_NFIELDS] = {
	{"minute", 0, 59, NULL, 0, NULL, false},
	{"hour", 0, 23, NULL, 0, NULL, false},
	{"day of month", 1, 31, NULL, 0, NULL, false},
	{"month", 1, 12, wf_schedule_month_names, 1, "month", false},
	{"day of week", 0, 7, wf_schedule_day_names, 0, "day", true},
};

/* The macros and what they stand for. */
static const struct
{
	const char *name;
	const char *cron;
}			wf_schedule_macros[] = {
	{"@yearly", "0 0 1 1 *"},
	{"@annually", "0 0 1 1 *"},
	{"@monthly", "0 0 1 * *"},
	{"@weekly", "0 0 * * 0"},
	{"@daily", "0 0 * * *"},
	{"@midnight", "0 0 * * *"},
	{"@hourly", "0 * * * *"},
};

/* The units of "every N unit". */
static const struct
{
	const char *name;
	int64		usecs;
}			wf_schedule_units[] = {
	{"second", USECS_PER_SEC},
	{"minute", USECS_PER_MINUTE},
	{"hour", USECS_PER_HOUR},
	{"day", USECS_PER_DAY},
	{"week", 7 * USECS_PER_DAY},
};

static void wf_schedule_fail(const char *schedule, const char *fmt,...)
			pg_attribute_printf(2, 3) pg_attribute_noreturn();

/* ----------------------------------------------------------------
 * Parsing
 * ----------------------------------------------------------------
 */

/*
 * Raises the error for a malformed schedule, the problem being described by
 * fmt and its arguments.
 */
static void
wf_schedule_fail(const char *schedule, const char *fmt,...)
{
	StringInfoData problem;

	initStringInfo(&problem);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&problem, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&problem, needed);
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid schedule \"%s\": %s", schedule, problem.data),
			 errhint(WF_SCHEDULE_HINT)));
	pg_unreachable();
}

static inline bool
wf_schedule_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
		c == '\v';
}

static inline bool
wf_schedule_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool
wf_schedule_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * Reads the digits at *p into a number, saturating at a value larger than
 * any field accepts.  Advances *p past them.
 */
static int64
wf_schedule_read_digits(const char **p)
{
	const char *s = *p;
	int64		value = 0;

	while (wf_schedule_is_digit(*s))
	{
		if (value < PG_INT32_MAX)
			value = value * 10 + (*s - '0');
		s++;
	}
	*p = s;
	return value;
}

/*
 * Splits a schedule into its whitespace-separated tokens, keeping copies of
 * the first "max" in tokens[].  Returns how many there are.
 */
static int
wf_schedule_split(const char *schedule, char **tokens, int max)
{
	const char *p = schedule;
	int			n = 0;

	for (;;)
	{
		const char *start;

		while (wf_schedule_is_space(*p))
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && !wf_schedule_is_space(*p))
			p++;
		if (n < max)
			tokens[n] = pnstrdup(start, p - start);
		n++;
	}
	return n;
}

/*
 * Reads a number or a name of field f at *p, and advances *p past it.
 * "field" is the whole field, for messages.
 */
static int
wf_schedule_parse_value(const char *schedule, const WfScheduleField *f,
						const char *field, const char **p)
{
	const char *start = *p;
	const char *s = start;
	int			value = -1;

	if (wf_schedule_is_digit(*s))
	{
		int64		v = wf_schedule_read_digits(&s);

		if (v < f->min || v > f->max)
			wf_schedule_fail(schedule, "%s %.*s is out of range %d-%d",
							 f->name, (int) (s - start), start, f->min, f->max);
		value = (int) v;
	}
	else if (wf_schedule_is_alpha(*s) && f->names != NULL)
	{
		int			i;

		while (wf_schedule_is_alpha(*s))
			s++;
		if (s - start == 3)
		{
			for (i = 0; f->names[i] != NULL; i++)
			{
				if (pg_strncasecmp(start, f->names[i], 3) == 0)
				{
					value = f->names_base + i;
					break;
				}
			}
		}
		if (value < 0)
			wf_schedule_fail(schedule, "unknown %s name \"%.*s\"",
							 f->name_kind, (int) (s - start), start);
	}
	else
		wf_schedule_fail(schedule, "invalid %s field \"%s\"", f->name, field);
	*p = s;
	return value;
}

/*
 * Parses one element of a list: "*", a value, a range, with or without a
 * step.  Returns its bits.
 */
static uint64
wf_schedule_parse_element(const char *schedule, const WfScheduleField *f,
						  const char *field, const char *element)
{
	const char *p = element;
	int			lo;
	int			hi;
	int			step = 1;
	bool		ranged = false;
	uint64		bits = 0;
	int			v;

	if (*p == '*')
	{
		lo = f->min;
		hi = f->max;
		ranged = true;
		p++;
	}
	else
	{
		lo = hi = wf_schedule_parse_value(schedule, f, field, &p);
		if (*p == '-')
		{
			p++;
			hi = wf_schedule_parse_value(schedule, f, field, &p);
			ranged = true;
		}
	}
	if (*p == '/')
	{
		const char *start;
		int64		n;

		if (!ranged)
			wf_schedule_fail(schedule,
							 "%s element \"%s\" has a step but no range",
							 f->name, element);
		start = ++p;
		if (!wf_schedule_is_digit(*p))
			wf_schedule_fail(schedule, "invalid %s field \"%s\"", f->name, field);
		n = wf_schedule_read_digits(&p);
		if (n < 1 || n > f->max - f->min)
			wf_schedule_fail(schedule, "%s step %.*s is out of range 1-%d",
							 f->name, (int) (p - start), start, f->max - f->min);
		step = (int) n;
	}
	if (*p != '\0')
		wf_schedule_fail(schedule, "invalid %s field \"%s\"", f->name, field);
	if (lo > hi)
		wf_schedule_fail(schedule, "%s range \"%s\" ends before it starts",
						 f->name, element);

	for (v = lo; v <= hi; v += step)
		bits |= UINT64CONST(1) << (v == 7 && f->seven_is_zero ? 0 : v);
	return bits;
}

/*
 * Parses a cron field, a comma-separated list.  Returns its bits; *star
 * tells whether it begins with "*".
 */
static uint64
wf_schedule_parse_field(const char *schedule, const WfScheduleField *f,
						const char *field, bool *star)
{
	const char *p = field;
	uint64		bits = 0;

	*star = (field[0] == '*');
	for (;;)
	{
		const char *end = strchr(p, ',');
		char	   *element;

		if (end == NULL)
			end = p + strlen(p);
		if (end == p)
			wf_schedule_fail(schedule, "empty element in the %s field \"%s\"",
							 f->name, field);
		element = pnstrdup(p, end - p);
		bits |= wf_schedule_parse_element(schedule, f, field, element);
		pfree(element);
		if (*end == '\0')
			break;
		p = end + 1;
	}
	return bits;
}

/* Parses the five fields of cron, already split, into spec. */
static void
wf_schedule_parse_cron(const char *schedule, char **fields, WfScheduleSpec *spec)
{
	bool		star;

	spec->minutes = wf_schedule_parse_field(schedule,
											&wf_schedule_fields[WF_SCHEDULE_MINUTE],
											fields[WF_SCHEDULE_MINUTE], &star);
	spec->hours = wf_schedule_parse_field(schedule,
										  &wf_schedule_fields[WF_SCHEDULE_HOUR],
										  fields[WF_SCHEDULE_HOUR], &star);
	spec->mdays = wf_schedule_parse_field(schedule,
										  &wf_schedule_fields[WF_SCHEDULE_MDAY],
										  fields[WF_SCHEDULE_MDAY],
										  &spec->mday_star);
	spec->months = wf_schedule_parse_field(schedule,
										   &wf_schedule_fields[WF_SCHEDULE_MONTH],
										   fields[WF_SCHEDULE_MONTH], &star);
	spec->wdays = wf_schedule_parse_field(schedule,
										  &wf_schedule_fields[WF_SCHEDULE_WDAY],
										  fields[WF_SCHEDULE_WDAY],
										  &spec->wday_star);
}

/* Parses "every [N] unit"; tokens[0] is "every". */
static void
wf_schedule_parse_every(const char *schedule, char **tokens, int ntokens,
						WfScheduleSpec *spec)
{
	int64		n = 1;
	int			i = 1;
	int			u;
	const char *unit;

	if (ntokens < 2)
		wf_schedule_fail(schedule, "missing unit after \"%s\"", tokens[0]);
	if (wf_schedule_is_digit(tokens[1][0]) || tokens[1][0] == '-' ||
		tokens[1][0] == '+' || tokens[1][0] == '.')
	{
		const char *p = tokens[1];
		bool		negative = false;

		if (*p == '-' || *p == '+')
			negative = (*p++ == '-');
		if (!wf_schedule_is_digit(*p))
			wf_schedule_fail(schedule, "the interval \"%s\" is not a whole number",
							 tokens[1]);
		n = wf_schedule_read_digits(&p);
		if (*p != '\0')
			wf_schedule_fail(schedule, "the interval \"%s\" is not a whole number",
							 tokens[1]);
		if (negative || n == 0)
			wf_schedule_fail(schedule, "the interval must be positive");
		i = 2;
		if (ntokens < 3)
			wf_schedule_fail(schedule, "missing unit after \"%s\"", tokens[1]);
	}

	unit = tokens[i];
	for (u = 0; u < lengthof(wf_schedule_units); u++)
	{
		size_t		len = strlen(wf_schedule_units[u].name);

		if (pg_strncasecmp(unit, wf_schedule_units[u].name, len) == 0 &&
			(unit[len] == '\0' ||
			 ((unit[len] == 's' || unit[len] == 'S') && unit[len + 1] == '\0')))
			break;
	}
	if (u == lengthof(wf_schedule_units))
		wf_schedule_fail(schedule, "unknown unit \"%s\"", unit);
	if (ntokens > i + 1)
		wf_schedule_fail(schedule, "unexpected \"%s\" after the unit",
						 tokens[i + 1]);
	if (n > WF_SCHEDULE_MAX_EVERY_DAYS * USECS_PER_DAY / wf_schedule_units[u].usecs)
		wf_schedule_fail(schedule, "the interval must be at most %d days",
						 WF_SCHEDULE_MAX_EVERY_DAYS);

	spec->every = true;
	spec->interval = n * wf_schedule_units[u].usecs;
}

/* Parses a schedule into spec, or raises an error saying what is wrong. */
static void
wf_schedule_parse(const char *schedule, WfScheduleSpec *spec)
{
	char	   *tokens[WF_SCHEDULE_MAX_TOKENS];
	int			ntokens;

	memset(spec, 0, sizeof(*spec));
	if (strlen(schedule) > WF_SCHEDULE_MAX_LENGTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid schedule: it is longer than %d bytes",
						WF_SCHEDULE_MAX_LENGTH)));

	ntokens = wf_schedule_split(schedule, tokens, lengthof(tokens));
	if (ntokens == 0)
		wf_schedule_fail(schedule, "the schedule is empty");

	if (tokens[0][0] == '@')
	{
		int			i;

		for (i = 0; i < lengthof(wf_schedule_macros); i++)
		{
			if (pg_strcasecmp(tokens[0], wf_schedule_macros[i].name) == 0)
				break;
		}
		if (i == lengthof(wf_schedule_macros))
			wf_schedule_fail(schedule, "unknown macro \"%s\"", tokens[0]);
		if (ntokens > 1)
			wf_schedule_fail(schedule, "unexpected \"%s\" after \"%s\"",
							 tokens[1], tokens[0]);
		ntokens = wf_schedule_split(wf_schedule_macros[i].cron, tokens,
									lengthof(tokens));
		Assert(ntokens == WF_SCHEDULE_NFIELDS);
		wf_schedule_parse_cron(schedule, tokens, spec);
		return;
	}

	if (pg_strcasecmp(tokens[0], "every") == 0)
	{
		wf_schedule_parse_every(schedule, tokens, ntokens, spec);
		return;
	}

	if (ntokens != WF_SCHEDULE_NFIELDS)
		wf_schedule_fail(schedule,
						 "expected 5 fields (minute, hour, day of month, month, day of week) but found %d",
						 ntokens);
	wf_schedule_parse_cron(schedule, tokens, spec);
}

/* ----------------------------------------------------------------
 * Entry points
 * ----------------------------------------------------------------
 */

/*
 * Raises an error if the schedule is malformed or never fires.
 */
void
wf_schedule_validate(const char *schedule)
{
	WfScheduleSpec spec;

	wf_schedule_parse(schedule, &spec);
	/* From 2000-01-01, a 400-year search sees every kind of date. */
	if (!spec.every)
		(void) wf_schedule_next_local(&spec, schedule, -1);
}

/*
 * The first time strictly after "after" at which the schedule fires, cron
 * fields being read in zone tzname.
 */
TimestampTz
wf_schedule_next_time(const char *schedule, TimestampTz after,
					  const char *tzname)
{
	WfScheduleSpec spec;
	pg_tz	   *tz;

	wf_schedule_parse(schedule, &spec);
	tz = wf_schedule_lookup_tz(tzname);
	if (TIMESTAMP_NOT_FINITE(after))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range"),
				 errdetail("A schedule has no next time after an infinite timestamp.")));
	if (spec.every)
		return wf_schedule_next_every(spec.interval, after);
	return wf_schedule_next_cron(&spec, schedule, after, tz);
}

/*
 * wf._schedule_next(schedule text, after timestamptz, tz text DEFAULT 'UTC')
 * RETURNS timestamptz
 */
Datum
wf_schedule_next(PG_FUNCTION_ARGS)
{
	char	   *schedule = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TimestampTz after = PG_GETARG_TIMESTAMPTZ(1);
	char	   *tzname = text_to_cstring(PG_GETARG_TEXT_PP(2));

	PG_RETURN_TIMESTAMPTZ(wf_schedule_next_time(schedule, after, tzname));
}

/*
 * wf._schedule_check(schedule text) RETURNS void
 */
Datum
wf_schedule_check(PG_FUNCTION_ARGS)
{
	wf_schedule_validate(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}
