// SPDX-License-Identifier: GPL-2.0
/* dupcache gate's outputs: table, JSON (= baseline), JUnit XML, Markdown, annotations. */
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "gate.h"
#include "output.h"
#include "util.h"

#define FMT(m, v) metric_format((m), (v), (char[48]){ 0 }, 48)
/* Points of the Markdown chart: each the largest of its stretch, so the peak shows. */
#define CHART_POINTS 60
#define ANNOTATIONS 10

static const char *budget_kind(const struct check *c)
{
	return c->relative ? "max_increase" : "max";
}

/* "<= 64.0 MiB" or "<= 64.0 MiB (baseline 60.0 MiB + 10%, at least +1.0 MiB)" */
static const char *limit_text(const struct check *c, char *buf, size_t len)
{
	size_t n;

	if (c->status == ST_UNMEASURED && c->relative) {
		snprintf(buf, len, "baseline + %g%%", c->max_increase);
		return buf;
	}
	n = snprintf(buf, len, "<= %s", FMT(c->metric, c->relative ? c->limit : c->max));
	if (c->relative && n < len) {
		n += snprintf(buf + n, len - n, " (baseline %s + %g%%", FMT(c->metric, c->baseline),
			      c->max_increase);
		if (c->min_increase && n < len)
			n += snprintf(buf + n, len - n, ", at least +%s", FMT(c->metric, c->min_increase));
		if (n < len)
			snprintf(buf + n, len - n, ")");
	}
	return buf;
}

static const char *value_text(const struct check *c, char *buf, size_t len)
{
	if (c->status == ST_UNMEASURED)
		return "-";
	return metric_format(c->metric, c->value, buf, len);
}

static const char *status_text(const struct check *c)
{
	static const char *const upper[] = { "PASS", "WARN", "FAIL", "UNMEASURED" };

	return upper[c->status];
}

static void print_table(const struct gate_result *g)
{
	const struct gate_opts *o = g->opts;
	const struct budget *b = &o->budget;
	char value[48], limit[160];

	printf("dupcache gate: %s; %zu files on %s, page size %u", g->verdict, g->nfiles,
	       *g->filesystems ? g->filesystems : "-", g->page_size);
	if (o->command)
		printf("; %zu run%s of %s%s", g->nruns, g->nruns == 1 ? "" : "s", o->command[0],
		       g->nruns > 1 ? " (medians)" : "");
	else
		printf("; snapshot");
	/* The LIMIT column as wide as its widest entry (a relative limit says how it was made). */
	int w = (int)strlen("LIMIT");

	for (size_t i = 0; i < b->n; i++) {
		int n = (int)strlen(limit_text(&b->checks[i], limit, sizeof(limit)));

		w = n > w ? n : w;
	}
	printf("\n  %-24s %12s  %-*s %-5s  %s\n", "METRIC", "VALUE", w, "LIMIT", "LEVEL", "STATUS");
	for (size_t i = 0; i < b->n; i++) {
		const struct check *c = &b->checks[i];

		printf("  %-24s %12s  %-*s %-5s  %s", metric_defs[c->metric].name,
		       value_text(c, value, sizeof(value)), w, limit_text(c, limit, sizeof(limit)),
		       level_name[c->level], status_text(c));
		if (c->reason)
			printf(": %s", c->reason);
		putchar('\n');
	}
	/* The metrics no check looked at, for the record. */
	for (int m = 0; m < M_COUNT; m++) {
		bool checked = false;

		for (size_t i = 0; i < b->n; i++)
			checked |= b->checks[i].metric == (enum metric)m;
		if (!checked && g->metrics.have[m])
			printf("  %-24s %12s  %-*s %-5s  -\n", metric_defs[m].name,
			       FMT(m, g->metrics.v[m]), w, "-", "-");
	}
	if (g->nruns && g->runs[g->median_run].noffenders) {
		const struct run *r = &g->runs[g->median_run];

		printf("top offenders%s:\n", o->command ? " at the peak" : "");
		for (size_t i = 0; i < r->noffenders; i++)
			printf("  %-5s %10s  %s%s\n", r->offenders[i].group ? "group" : "file",
			       HB(r->offenders[i].dup_bytes), r->offenders[i].path,
			       r->offenders[i].files > 1 ? " (+ more)" : "");
	}
	fflush(stdout);
}

/* ------------------------------------------------------------------ JSON */

static json_object *metric_json(enum metric m, double v)
{
	enum unit u = metric_defs[m].unit;

	if (u == U_BYTES || u == U_COUNT)
		return json_object_new_int64((int64_t)llround(v));
	return json_object_new_double(v);
}

static json_object *metrics_json(const struct metrics *ms)
{
	json_object *o = json_object_new_object();

	for (int m = 0; m < M_COUNT; m++)
		if (ms->have[m])
			json_object_object_add(o, metric_defs[m].name, metric_json(m, ms->v[m]));
	return o;
}

static json_object *sample_json(const struct sample *s)
{
	json_object *o = json_object_new_object();

	json_add_double(o, "seconds", s->seconds);
	json_add_u64(o, "dup_bytes", s->dup_bytes);
	json_add_u64(o, "cached_bytes", s->cached_bytes);
	return o;
}

static json_object *strings_json(char **v, int n)
{
	json_object *a = json_object_new_array();

	for (int i = 0; i < n; i++)
		json_object_array_add(a, json_object_new_string(v[i]));
	return a;
}

static json_object *gate_json(const struct gate_result *g)
{
	const struct gate_opts *o = g->opts;
	json_object *root = json_object_new_object(), *a, *fs = json_object_new_array();
	char *names = xstrdup(g->filesystems), *save;
	int ncmd = 0;

	json_add_u64(root, "schema", 1);
	json_object_object_add(root, "verdict", json_object_new_string(g->verdict));
	json_add_u64(root, "exit_code", g->exit_code);
	json_object_object_add(root, "mode", json_object_new_string(o->command ? "workload" : "snapshot"));
	while (o->command && o->command[ncmd])
		ncmd++;
	json_object_object_add(root, "command", o->command ? strings_json(o->command, ncmd) : NULL);
	json_object_object_add(root, "paths", strings_json(o->paths, o->npaths));
	json_add_u64(root, "page_size", g->page_size);
	for (char *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save))
		json_object_array_add(fs, json_object_new_string(t));
	free(names);
	json_object_object_add(root, "filesystems", fs);
	json_add_u64(root, "files", g->nfiles);
	json_object_object_add(root, "warm", json_object_new_boolean(o->warm));
	json_object_object_add(root, "workload_failed", json_object_new_boolean(g->workload_failed));
	json_object_object_add(root, "interrupted", json_object_new_boolean(g->interrupted));
	json_object_object_add(root, "input_lost", json_object_new_boolean(g->input_lost));
	json_object_object_add(root, "metrics", metrics_json(&g->metrics));
	json_add_u64(root, "median_run", g->median_run);

	a = json_object_new_array();
	for (size_t i = 0; i < g->nruns; i++) {
		json_object *r = json_object_new_object();

		json_object_object_add(r, "metrics", metrics_json(&g->runs[i].m));
		if (o->command)
			json_object_object_add(r, "peak_sample", sample_json(&g->runs[i].peak_sample));
		json_object_array_add(a, r);
	}
	json_object_object_add(root, "runs", a);

	a = json_object_new_array();
	for (size_t i = 0; i < o->budget.n; i++) {
		const struct check *c = &o->budget.checks[i];
		json_object *j = json_object_new_object();
		bool measured = c->status != ST_UNMEASURED;

		json_object_object_add(j, "metric", json_object_new_string(metric_defs[c->metric].name));
		json_object_object_add(j, "budget", json_object_new_string(budget_kind(c)));
		json_object_object_add(j, "limit", measured || !c->relative
							   ? metric_json(c->metric, c->relative ? c->limit : c->max)
							   : NULL);
		json_object_object_add(j, "value", measured ? metric_json(c->metric, c->value) : NULL);
		json_object_object_add(j, "level", json_object_new_string(level_name[c->level]));
		json_object_object_add(j, "status", json_object_new_string(status_name[c->status]));
		if (c->relative) {
			json_object_object_add(j, "baseline", measured ? metric_json(c->metric, c->baseline) : NULL);
			json_add_double(j, "max_increase", c->max_increase);
			json_object_object_add(j, "min_increase", metric_json(c->metric, c->min_increase));
		}
		if (c->reason)
			json_object_object_add(j, "reason", json_object_new_string(c->reason));
		json_object_array_add(a, j);
	}
	json_object_object_add(root, "checks", a);

	a = json_object_new_array();
	if (g->nruns) {
		const struct run *r = &g->runs[g->median_run];

		for (size_t i = 0; i < r->noffenders; i++) {
			json_object *j = json_object_new_object();

			json_object_object_add(j, "kind", json_object_new_string(r->offenders[i].group ? "group" : "file"));
			json_object_object_add(j, "path", json_object_new_string(r->offenders[i].path));
			json_add_u64(j, "files", r->offenders[i].files);
			json_add_u64(j, "dup_bytes", r->offenders[i].dup_bytes);
			json_object_array_add(a, j);
		}
	}
	json_object_object_add(root, "offenders", a);

	a = json_object_new_array();
	for (size_t i = 0; g->nruns && i < g->runs[g->median_run].ntimeline; i++)
		json_object_array_add(a, sample_json(&g->runs[g->median_run].timeline[i]));
	json_object_object_add(root, "timeline", a);
	return root;
}

/* ------------------------------------------------------------------ JUnit */

/* Text for XML content and attributes; characters XML 1.0 cannot hold become '?'. */
static void xml_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = *s;

		switch (ch) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&apos;", f); break;
		default:
			fputc(ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r' ? '?' : ch, f);
		}
	}
}

/* One line about a check: "peak_dup_bytes 64.0 MiB, limit <= 32.0 MiB: fail". */
static void check_sentence(FILE *f, const struct check *c)
{
	char value[48], limit[160];

	fprintf(f, "%s %s, limit %s (%s): %s", metric_defs[c->metric].name,
		value_text(c, value, sizeof(value)), limit_text(c, limit, sizeof(limit)),
		level_name[c->level], c->reason ? c->reason : status_name[c->status]);
}

static char *sentence(const struct check *c)
{
	char *buf = NULL;
	size_t len;
	FILE *f = open_memstream(&buf, &len);

	check_sentence(f, c);
	fclose(f);
	return buf;
}

static void write_junit(FILE *f, const struct gate_result *g)
{
	const struct budget *b = &g->opts->budget;
	size_t failures = 0, errors = 0;
	double seconds = g->metrics.have[M_WORKLOAD_SECONDS] ? g->metrics.v[M_WORKLOAD_SECONDS] : 0;

	for (size_t i = 0; i < b->n; i++) {
		failures += b->checks[i].status == ST_FAIL;
		errors += b->checks[i].status == ST_UNMEASURED;
	}
	fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", f);
	fprintf(f, "<testsuites name=\"dupcache gate\" tests=\"%zu\" failures=\"%zu\" errors=\"%zu\" "
		"time=\"%.3f\">\n", b->n, failures, errors, seconds);
	fprintf(f, "  <testsuite name=\"dupcache gate\" tests=\"%zu\" failures=\"%zu\" errors=\"%zu\" "
		"skipped=\"0\" time=\"%.3f\">\n", b->n, failures, errors, seconds);
	for (size_t i = 0; i < b->n; i++) {
		const struct check *c = &b->checks[i];
		char *text = sentence(c);
		size_t same = 0;

		/* Names are unique: a second budget of one kind on one metric is numbered. */
		for (size_t k = 0; k < i; k++)
			same += b->checks[k].metric == c->metric && b->checks[k].relative == c->relative;
		fprintf(f, "    <testcase classname=\"dupcache.gate\" name=\"%s %s", metric_defs[c->metric].name,
			budget_kind(c));
		if (same)
			fprintf(f, " (%zu)", same + 1);
		fputs("\" time=\"0\"", f);
		if (c->status == ST_PASS) {
			fputs("/>\n", f);
		} else if (c->status == ST_WARN) {
			fputs(">\n      <system-out>warning: ", f);
			xml_escape(f, text);
			fputs("</system-out>\n    </testcase>\n", f);
		} else {
			const char *tag = c->status == ST_FAIL ? "failure" : "error";

			fprintf(f, ">\n      <%s type=\"%s\" message=\"", tag, status_name[c->status]);
			xml_escape(f, text);
			fputs("\">", f);
			xml_escape(f, text);
			fprintf(f, "</%s>\n    </testcase>\n", tag);
		}
		free(text);
	}
	fputs("  </testsuite>\n</testsuites>\n", f);
}

/* --------------------------------------------------------------- Markdown */

static void md_cell(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '|' || *s == '\\' || *s == '`' || *s == '*' || *s == '_' || *s == '<')
			fputc('\\', f);
		fputc(*s == '\n' ? ' ' : *s, f);
	}
}

static void md_chart(FILE *f, const struct run *r)
{
	size_t n = r->ntimeline, points = n < CHART_POINTS ? n : CHART_POINTS;
	double top = 0;

	if (n < 2)
		return;
	for (size_t i = 0; i < n; i++)
		top = fmax(top, r->timeline[i].cached_bytes / 1048576.0);
	fputs("\n```mermaid\nxychart-beta\n", f);
	fputs("    title \"Tracked page cache, MiB: duplicate (first line), cached (second)\"\n", f);
	fprintf(f, "    x-axis \"seconds\" 0 --> %.2f\n", r->timeline[n - 1].seconds);
	fprintf(f, "    y-axis \"MiB\" 0 --> %.1f\n", top > 0 ? top * 1.05 : 1);
	for (int line = 0; line < 2; line++) {
		fputs("    line [", f);
		for (size_t p = 0; p < points; p++) {
			size_t from = p * n / points, to = (p + 1) * n / points;
			uint64_t v = 0;

			for (size_t i = from; i < to; i++) {
				uint64_t x = line ? r->timeline[i].cached_bytes : r->timeline[i].dup_bytes;

				v = x > v ? x : v;
			}
			fprintf(f, "%s%.2f", p ? ", " : "", v / 1048576.0);
		}
		fputs("]\n", f);
	}
	fputs("```\n", f);
}

static void write_markdown(FILE *f, const struct gate_result *g)
{
	const struct gate_opts *o = g->opts;
	const struct budget *b = &o->budget;
	char value[48], limit[160];

	fprintf(f, "### dupcache gate: %s\n\n", g->verdict);
	fprintf(f, "%zu files on %s, page size %u, ", g->nfiles, *g->filesystems ? g->filesystems : "-",
		g->page_size);
	if (o->command)
		fprintf(f, "%zu run%s%s (exit code %d)\n\n", g->nruns, g->nruns == 1 ? "" : "s",
			g->nruns > 1 ? ", medians" : "", g->exit_code);
	else
		fprintf(f, "snapshot (exit code %d)\n\n", g->exit_code);
	fputs("| metric | value | limit | level | status |\n|---|---:|---|---|---|\n", f);
	for (size_t i = 0; i < b->n; i++) {
		const struct check *c = &b->checks[i];

		fprintf(f, "| %s | ", metric_defs[c->metric].name);
		md_cell(f, value_text(c, value, sizeof(value)));
		fputs(" | ", f);
		md_cell(f, limit_text(c, limit, sizeof(limit)));
		fprintf(f, " | %s | %s%s%s", level_name[c->level], c->status == ST_PASS ? "" : "**",
			status_name[c->status], c->status == ST_PASS ? "" : "**");
		if (c->reason) {
			fputs(": ", f);
			md_cell(f, c->reason);
		}
		fputs(" |\n", f);
	}
	if (!b->n)
		fputs("| (no checks) | | | | |\n", f);
	fputs("\n<details><summary>All metrics</summary>\n\n| metric | value |\n|---|---:|\n", f);
	for (int m = 0; m < M_COUNT; m++)
		if (g->metrics.have[m])
			fprintf(f, "| %s | %s |\n", metric_defs[m].name, FMT(m, g->metrics.v[m]));
	fputs("\n</details>\n", f);
	if (g->nruns) {
		const struct run *r = &g->runs[g->median_run];

		md_chart(f, r);
		if (r->noffenders) {
			fprintf(f, "\nTop offenders%s:\n\n| kind | duplicate | path |\n|---|---:|---|\n",
				o->command ? " at the peak" : "");
			for (size_t i = 0; i < r->noffenders; i++) {
				fprintf(f, "| %s | %s | ", r->offenders[i].group ? "group" : "file",
					HB(r->offenders[i].dup_bytes));
				md_cell(f, r->offenders[i].path);
				fputs(" |\n", f);
			}
		}
	}
}

/* ------------------------------------------------------------ annotations */

/* Workflow command data: % CR LF escaped (GitHub's toolkit rules). */
static void gh_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '%')
			fputs("%25", f);
		else if (*s == '\r')
			fputs("%0D", f);
		else if (*s == '\n')
			fputs("%0A", f);
		else
			fputc(*s, f);
	}
}

/* Failed checks first (errors, then warnings), then the largest offenders: at most 10 lines. */
static void annotate(const struct gate_result *g)
{
	const struct budget *b = &g->opts->budget;
	const char *worst = NULL;
	int lines = 0;

	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < b->n && lines < ANNOTATIONS; i++) {
			const struct check *c = &b->checks[i];
			bool error = c->status == ST_FAIL || c->status == ST_UNMEASURED;
			char *text;

			if (pass == 0 ? !error : c->status != ST_WARN)
				continue;
			worst = worst ? worst : error ? "error" : "warning";
			text = sentence(c);
			printf("::%s title=dupcache gate::", error ? "error" : "warning");
			gh_escape(stdout, text);
			putchar('\n');
			free(text);
			lines++;
		}
	if (worst && g->nruns) {
		const struct run *r = &g->runs[g->median_run];
		bool *said = xcalloc(r->noffenders, sizeof(*said));

		/* Largest first, groups and files mixed (a group before its files at a tie). */
		for (; lines < ANNOTATIONS; lines++) {
			const struct offender *o = NULL;
			size_t best = 0;

			for (size_t i = 0; i < r->noffenders; i++)
				if (!said[i] && (!o || r->offenders[i].dup_bytes > o->dup_bytes))
					o = &r->offenders[best = i];
			if (!o)
				break;
			said[best] = true;
			printf("::%s title=dupcache gate offender::%s %s duplicate page cache: ", worst,
			       o->group ? "group" : "file", HB(o->dup_bytes));
			gh_escape(stdout, o->path);
			putchar('\n');
		}
		free(said);
	}
	fflush(stdout);
}

/* --------------------------------------------------------------- files */

/* Through a temporary renamed over it: a reader never sees half a file. */
static int write_file(const char *path, const char *what, void (*render)(FILE *, const struct gate_result *),
		      const struct gate_result *g, bool append)
{
	char *tmp = NULL;
	FILE *f;
	int err = 0;

	if (append) {
		f = fopen(path, "ae");
	} else {
		if (asprintf(&tmp, "%s.tmp%d", path, (int)getpid()) < 0)
			return 1;
		f = fopen(tmp, "we");
	}
	if (!f) {
		msg("gate: %s %s: %s", what, path, strerror(errno));
		free(tmp);
		return 1;
	}
	render(f, g);
	if (ferror(f))
		err = EIO;
	if (fclose(f) && !err)
		err = errno;
	if (!err && tmp && rename(tmp, path))
		err = errno;
	if (err) {
		msg("gate: %s %s: %s", what, path, strerror(err));
		if (tmp)
			unlink(tmp);
	}
	free(tmp);
	return !!err;
}

static void render_json(FILE *f, const struct gate_result *g)
{
	json_object *root = gate_json(g);

	fprintf(f, "%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
							  JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
}

int gate_write(const struct gate_result *g)
{
	const struct gate_opts *o = g->opts;
	const char *summary = getenv("GITHUB_STEP_SUMMARY");
	const char *actions = getenv("GITHUB_ACTIONS");
	int failed = 0;

	print_table(g);
	if (actions && !strcmp(actions, "true"))
		annotate(g);
	if (o->json)
		failed += write_file(o->json, "--json", render_json, g, false);
	if (o->save_baseline)
		failed += write_file(o->save_baseline, "--save-baseline", render_json, g, false);
	if (o->junit)
		failed += write_file(o->junit, "--junit", write_junit, g, false);
	if (o->markdown)
		failed += write_file(o->markdown, "--markdown", write_markdown, g, false);
	/* GitHub shows the step summary file; steps append to it. */
	if (summary && *summary)
		failed += write_file(summary, "GITHUB_STEP_SUMMARY", write_markdown, g, true);
	return failed;
}
