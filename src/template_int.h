/*-------------------------------------------------------------------------
 *
 * template_int.h
 *		What the two template files share: the percent-encoding of a
 *		rendered value (template.c), a form in which redaction
 *		(template_redact.c) looks for a secret too.
 *
 * src/template_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_WORKFLOW_TEMPLATE_INT_H
#define PG_WORKFLOW_TEMPLATE_INT_H

#include "pg_workflow.h"

#include "lib/stringinfo.h"

/* template.c */
extern void wf_template_url_escape(StringInfo out, const char *s, Size len);

#endif							/* PG_WORKFLOW_TEMPLATE_INT_H */
