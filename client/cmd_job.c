/*
 * cmd_job.c: `banger job submit | list | show | cancel | retry | tail`.
 *
 * Each command packs its params, makes one call through cli_call() (or
 * tail_run() for streams) and renders the result: a table or key: value
 * lines for people, the result converted to JSON with --json.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmd.h"
#include "err.h"
#include "mpk.h"
#include "output.h"
#include "protocol.h"
#include "tail.h"
#include "util.h"

/* ---- helpers ------------------------------------------------------------------ */

static void params_begin(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t n)
{
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(pk, n);
}

/* A call whose params are { job: ID }. */
static int call_job(struct cli *cli, const char *method, const char *id_text,
		    msgpack_unpacked *reply, const msgpack_object **result, int64_t *id)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char subject[48];
	int st = cli_parse_id(id_text, "job id", id);
	if (st)
		return st;
	params_begin(&sb, &pk, 1);
	mpk_kv_int(&pk, "job", *id);
	snprintf(subject, sizeof(subject), "job %lld", (long long)*id);
	st = cli_call(cli, method, &sb, subject, reply, result);
	msgpack_sbuffer_destroy(&sb);
	return st;
}

/* ---- submit ----------------------------------------------------------------- */

enum { SUBMIT_KEY, SUBMIT_FOLLOW, SUBMIT_JSON };

static const struct args_opt submit_opts[] = {
	[SUBMIT_KEY] = {"key", 0, "K", "idempotency key: submitting again with the same key returns "
				       "the first submission"},
	[SUBMIT_FOLLOW] = {"follow", 'f', NULL, "print the submission's events until every job is "
						"final, and exit with its status"},
	[SUBMIT_JSON] = {"json", 0, NULL, "print the result (and with --follow each event) as JSON"},
	{NULL, 0, NULL, NULL},
};

/* "8 MiB" for the limit: whole units without a decimal. */
static void limit_text(char *buf, size_t n, uint64_t bytes)
{
	if (bytes % (1024 * 1024) == 0)
		snprintf(buf, n, "%llu MiB", (unsigned long long)(bytes / (1024 * 1024)));
	else
		out_size(buf, n, bytes);
}

/*
 * Read the spec file into *text (caller frees), refusing anything larger than
 * BG_SPEC_MAX_BYTES before sending it.  Returns 0 or CLI_EXIT_USAGE after
 * printing why.
 */
static int read_spec(const char *path, char **text, size_t *len)
{
	char lim[32], sz[32];
	struct stat st;
	struct sb sb;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	limit_text(lim, sizeof(lim), BG_SPEC_MAX_BYTES);
	if (fd < 0) {
		cli_error("cannot read spec '%s': %s", path, strerror(errno));
		return CLI_EXIT_USAGE;
	}
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		cli_error("cannot read spec '%s': %s", path, strerror(EISDIR));
		close(fd);
		return CLI_EXIT_USAGE;
	}
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > BG_SPEC_MAX_BYTES) {
		out_size(sz, sizeof(sz), (uint64_t)st.st_size);
		cli_error("%s: file is %s, larger than the %s limit for a spec", path, sz, lim);
		close(fd);
		return CLI_EXIT_USAGE;
	}
	/* Not a regular file (a pipe, /dev/stdin): read up to the limit. */
	sb_init(&sb);
	for (;;) {
		char buf[65536];
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			cli_error("cannot read spec '%s': %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		if (sb.len + (size_t)n > BG_SPEC_MAX_BYTES) {
			cli_error("%s: file is larger than the %s limit for a spec", path, lim);
			goto fail;
		}
		sb_add(&sb, buf, (size_t)n);
	}
	close(fd);
	*len = sb.len;
	*text = sb_detach(&sb);
	return 0;
fail:
	sb_release(&sb);
	close(fd);
	return CLI_EXIT_USAGE;
}

static void print_job_lines(const msgpack_object *jobs)
{
	struct out_table t;
	out_table_init(&t, 4);
	for (uint32_t i = 0; jobs && jobs->type == MSGPACK_OBJECT_ARRAY && i < jobs->via.array.size;
	     i++) {
		const msgpack_object *j = &jobs->via.array.ptr[i];
		out_table_add(&t, out_field(j, "id", OUT_INT));
		out_table_add(&t, out_field(j, "name", OUT_STR));
		out_table_add(&t, out_field(j, "kind", OUT_STR));
		out_table_add(&t, out_field(j, "state", OUT_STR));
	}
	out_table_print(&t, stdout, "  ");
	out_table_release(&t);
}

/* The directory relative paths in the spec are resolved against: the
 * spec file's own (symlinks resolved), or the current one for a spec read
 * from a pipe.  NULL when it cannot be resolved. */
static char *spec_dir(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
		return realpath(".", NULL);
	char *full = realpath(path, NULL);
	if (!full)
		return NULL;
	char *slash = strrchr(full, '/');
	if (slash == full)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	return full;
}

static int submit_run(struct cli *cli, const struct args *a)
{
	const char *path = a->pos[0];
	const char *key = a->val[SUBMIT_KEY];
	bool follow = a->val[SUBMIT_FOLLOW] != NULL, json = a->val[SUBMIT_JSON] != NULL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked reply;
	const msgpack_object *result;
	char *text, *subject;
	size_t len;
	int64_t submission = 0;

	int st = read_spec(path, &text, &len);
	if (st)
		return st;
	char *dir = spec_dir(path);
	params_begin(&sb, &pk, 2 + (key != NULL) + (dir != NULL));
	mpk_pack_str(&pk, "spec");
	mpk_pack_strn(&pk, text, len);
	mpk_kv_str(&pk, "path", path);
	if (dir)
		mpk_kv_str(&pk, "dir", dir);
	free(dir);
	if (key)
		mpk_kv_str(&pk, "key", key);
	free(text);
	subject = xasprintf("cannot submit '%s'", path);
	st = cli_call(cli, BG_M_JOB_SUBMIT, &sb, subject, &reply, &result);
	msgpack_sbuffer_destroy(&sb);
	free(subject);
	if (st)
		return st;

	const msgpack_object *jobs = mpk_get(result, "jobs");
	if (mpk_get_int(result, "submission", &submission) != 0 || submission <= 0 || !jobs ||
	    jobs->type != MSGPACK_OBJECT_ARRAY) {
		cli_error("'%s': malformed reply from bangerd (no submission or jobs)", path);
		msgpack_unpacked_destroy(&reply);
		return CLI_EXIT_FAIL;
	}
	if (json) {
		st = out_json_print(result, !follow);
	} else {
		bool existing = false;
		mpk_get_bool(result, "existing", &existing);
		printf("submission %lld%s\n", (long long)submission, existing ? " (existing)" : "");
		print_job_lines(jobs);
		fflush(stdout);
	}
	msgpack_unpacked_destroy(&reply);
	if (st || !follow)
		return st;

	struct tail_req req = {
		.submission = true, .id = submission, .from = 1, .follow = true, .json = json};
	return tail_run(cli, &req);
}

const struct args_cmd cmd_job_submit = {
	.name = "job submit",
	.synopsis = "SPEC.yaml [--key K] [--follow] [--json]",
	.summary = "Submit the jobs of a spec file.",
	.details = "Prints 'submission N' and one line per job: id, name, kind, state.\n"
		   "A spec error prints bangerd's 'file:line:col: message' lines and exits 2.\n"
		   "With --follow, exits 0 when every job succeeded, else the exit code of the\n"
		   "first job that failed with one, else 1.\n",
	.opts = submit_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = submit_run,
};

/* ---- list ----------------------------------------------------------------------- */

enum { LIST_STATE, LIST_SUBMISSION, LIST_LIMIT, LIST_JSON };

static const struct args_opt list_opts[] = {
	[LIST_STATE] = {"state", 0, "S", "only jobs in state S (queued, running, succeeded, ...)"},
	[LIST_SUBMISSION] = {"submission", 0, "N", "only the jobs of submission N"},
	[LIST_LIMIT] = {"limit", 0, "N", "at most N jobs (bangerd's default: 100)"},
	[LIST_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

static int list_run(struct cli *cli, const struct args *a)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked reply;
	const msgpack_object *result;
	int64_t submission = 0, limit = 0;
	int st;

	if (a->val[LIST_SUBMISSION] &&
	    (st = cli_parse_id(a->val[LIST_SUBMISSION], "submission", &submission)))
		return st;
	if (a->val[LIST_LIMIT] && (st = cli_parse_id(a->val[LIST_LIMIT], "limit", &limit)))
		return st;
	params_begin(&sb, &pk,
		     (a->val[LIST_STATE] != NULL) + (submission > 0) + (limit > 0));
	if (a->val[LIST_STATE])
		mpk_kv_str(&pk, "state", a->val[LIST_STATE]);
	if (submission > 0)
		mpk_kv_int(&pk, "submission", submission);
	if (limit > 0)
		mpk_kv_int(&pk, "limit", limit);
	st = cli_call(cli, BG_M_JOB_LIST, &sb, "job list", &reply, &result);
	msgpack_sbuffer_destroy(&sb);
	if (st)
		return st;

	const msgpack_object *jobs = mpk_get(result, "jobs");
	if (!jobs || jobs->type != MSGPACK_OBJECT_ARRAY) {
		cli_error("job list: malformed reply from bangerd (no jobs)");
		msgpack_unpacked_destroy(&reply);
		return CLI_EXIT_FAIL;
	}
	if (a->val[LIST_JSON]) {
		st = out_json_print(result, true);
		msgpack_unpacked_destroy(&reply);
		return st;
	}
	struct out_table t;
	out_table_init(&t, 6);
	static const char *const head[] = {"ID", "NAME", "KIND", "STATE", "ATTEMPTS", "AGE"};
	for (size_t i = 0; i < ARRAY_LEN(head); i++)
		out_table_add(&t, xstrdup(head[i]));
	for (uint32_t i = 0; i < jobs->via.array.size; i++) {
		const msgpack_object *j = &jobs->via.array.ptr[i];
		out_table_add(&t, out_field(j, "id", OUT_INT));
		out_table_add(&t, out_field(j, "name", OUT_STR));
		out_table_add(&t, out_field(j, "kind", OUT_STR));
		out_table_add(&t, out_field(j, "state", OUT_STR));
		char *n = out_field(j, "attempts", OUT_INT), *m = out_field(j, "max_attempts", OUT_INT);
		out_table_addf(&t, "%s/%s", n, m);
		free(n);
		free(m);
		out_table_add(&t, out_field(j, "created", OUT_AGE));
	}
	out_table_print(&t, stdout, NULL);
	out_table_release(&t);
	msgpack_unpacked_destroy(&reply);
	return 0;
}

const struct args_cmd cmd_job_list = {
	.name = "job list",
	.synopsis = "[--state S] [--submission N] [--limit N] [--json]",
	.summary = "List jobs: ID NAME KIND STATE ATTEMPTS AGE.",
	.details = NULL,
	.opts = list_opts,
	.min_pos = 0,
	.max_pos = 0,
	.run = list_run,
};

/* ---- show ------------------------------------------------------------------------ */

enum { SHOW_JSON };

static const struct args_opt json_only_opts[] = {
	[SHOW_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

/* Keys show prints itself; any other key of the JOB map is printed after
 * them as JSON, so fields added to the protocol later are not hidden. */
static const char *const show_known[] = {
	"id",      "name",     "kind",      "state",       "exit_code",     "error",
	"submission", "key",   "priority",  "attempts",    "max_attempts",  "epoch",
	"needs",   "when",     "created",   "run_after",   "started",       "finished",
	"timeout", "lease_owner", "lease_expires", "params", "result",
};

/* "key:           value", continuation lines of value aligned under it. */
static void kv(const char *key, char *owned)
{
	char label[32];
	snprintf(label, sizeof(label), "%s:", key);
	printf("%-15s ", label);
	out_text(stdout, owned, strlen(owned), "                ");
	fputc('\n', stdout);
	free(owned);
}

static void kv_field(const msgpack_object *job, const char *key, enum out_fmt fmt, bool always)
{
	if (always || out_has(job, key))
		kv(key, out_field(job, key, fmt));
}

/* "41, 40" for an array of ids, "none" when empty. */
static char *id_list(const msgpack_object *arr)
{
	struct sb sb;
	int64_t v;
	if (!arr || arr->type == MSGPACK_OBJECT_NIL)
		return xstrdup("-");
	if (arr->type != MSGPACK_OBJECT_ARRAY)
		return xstrdup("?");
	if (arr->via.array.size == 0)
		return xstrdup("none");
	sb_init(&sb);
	for (uint32_t i = 0; i < arr->via.array.size; i++) {
		if (i)
			sb_adds(&sb, ", ");
		if (mpk_as_int(&arr->via.array.ptr[i], &v))
			sb_addf(&sb, "%lld", (long long)v);
		else
			sb_adds(&sb, "?");
	}
	return sb_detach(&sb);
}

static void show_human(const msgpack_object *job)
{
	kv_field(job, "id", OUT_INT, true);
	kv_field(job, "name", OUT_STR, true);
	kv_field(job, "kind", OUT_STR, true);
	kv_field(job, "state", OUT_STR, true);
	kv_field(job, "exit_code", OUT_INT, false);
	kv_field(job, "error", OUT_TEXT, false);
	kv_field(job, "submission", OUT_INT, true);
	kv_field(job, "key", OUT_STR, false);
	kv_field(job, "priority", OUT_INT, true);
	char *n = out_field(job, "attempts", OUT_INT), *m = out_field(job, "max_attempts", OUT_INT);
	kv("attempts", xasprintf("%s of %s", n, m));
	free(n);
	free(m);
	kv_field(job, "epoch", OUT_INT, true);
	kv("needs", id_list(mpk_get(job, "needs")));
	kv_field(job, "when", OUT_STR, true);
	kv_field(job, "created", OUT_TIME, true);
	kv_field(job, "run_after", OUT_TIME, true);
	kv_field(job, "started", OUT_TIME, false);
	kv_field(job, "finished", OUT_TIME, false);
	if (out_has(job, "started") && out_has(job, "finished"))
		kv("ran", out_span(job, "started", "finished"));
	kv_field(job, "timeout", OUT_DURATION, true);
	kv_field(job, "lease_owner", OUT_STR, false);
	kv_field(job, "lease_expires", OUT_TIME, false);
	kv_field(job, "params", OUT_JSON, true);
	kv_field(job, "result", OUT_JSON, false);

	for (uint32_t i = 0; job->type == MSGPACK_OBJECT_MAP && i < job->via.map.size; i++) {
		const msgpack_object_kv *p = &job->via.map.ptr[i];
		bool known = false;
		if (p->key.type != MSGPACK_OBJECT_STR)
			continue;
		for (size_t k = 0; k < ARRAY_LEN(show_known) && !known; k++)
			known = mpk_str_eq(&p->key, show_known[k]);
		if (known || p->val.type == MSGPACK_OBJECT_NIL)
			continue;
		char *name = xstrndup(p->key.via.str.ptr, p->key.via.str.size);
		for (char *c = name; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = '?';
		kv(name, out_json_text(&p->val));
		free(name);
	}
}

static int show_run(struct cli *cli, const struct args *a)
{
	msgpack_unpacked reply;
	const msgpack_object *result;
	int64_t id;
	int st = call_job(cli, BG_M_JOB_SHOW, a->pos[0], &reply, &result, &id);
	if (st)
		return st;
	if (a->val[SHOW_JSON]) {
		st = out_json_print(result, true);
	} else if (result->type != MSGPACK_OBJECT_MAP) {
		cli_error("job %lld: malformed reply from bangerd (not a map)", (long long)id);
		st = CLI_EXIT_FAIL;
	} else {
		show_human(result);
	}
	msgpack_unpacked_destroy(&reply);
	return st;
}

const struct args_cmd cmd_job_show = {
	.name = "job show",
	.synopsis = "ID [--json]",
	.summary = "Show one job as 'key: value' lines (local times).",
	.details = NULL,
	.opts = json_only_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = show_run,
};

/* ---- cancel, retry ------------------------------------------------------------- */

static int state_change(struct cli *cli, const struct args *a, const char *method)
{
	msgpack_unpacked reply;
	const msgpack_object *result;
	int64_t id;
	int st = call_job(cli, method, a->pos[0], &reply, &result, &id);
	if (st)
		return st;
	if (a->val[SHOW_JSON]) {
		st = out_json_print(result, true);
	} else {
		char *state = out_field(result, "state", OUT_STR);
		printf("job %lld: %s\n", (long long)id, state);
		free(state);
	}
	msgpack_unpacked_destroy(&reply);
	return st;
}

static int cancel_run(struct cli *cli, const struct args *a)
{
	return state_change(cli, a, BG_M_JOB_CANCEL);
}

static int retry_run(struct cli *cli, const struct args *a)
{
	return state_change(cli, a, BG_M_JOB_RETRY);
}

const struct args_cmd cmd_job_cancel = {
	.name = "job cancel",
	.synopsis = "ID [--json]",
	.summary = "Cancel a job; print its resulting state.",
	.details = "A queued job is cancelled at once; a running one is stopped and rolled\n"
		   "back, and the reply comes once the request is durable.\n",
	.opts = json_only_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = cancel_run,
};

const struct args_cmd cmd_job_retry = {
	.name = "job retry",
	.synopsis = "ID [--json]",
	.summary = "Queue a failed job again; print its resulting state.",
	.details = "A job in a final state other than succeeded goes back to queued with a\n"
		   "fresh attempt budget.\n",
	.opts = json_only_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = retry_run,
};

/* ---- tail ------------------------------------------------------------------------ */

enum { TAIL_FROM, TAIL_NO_FOLLOW, TAIL_JSON };

static const struct args_opt tail_opts[] = {
	[TAIL_FROM] = {"from", 0, "SEQ", "start at event SEQ (default 1: the whole history)"},
	[TAIL_NO_FOLLOW] = {"no-follow", 0, NULL, "print the events so far and exit"},
	[TAIL_JSON] = {"json", 0, NULL, "one JSON object per event per line"},
	{NULL, 0, NULL, NULL},
};

static int tail_cmd_run(struct cli *cli, const struct args *a)
{
	struct tail_req req = {.from = 1, .follow = a->val[TAIL_NO_FOLLOW] == NULL,
			       .json = a->val[TAIL_JSON] != NULL};
	int st = cli_parse_id(a->pos[0], "job id", &req.id);
	if (st)
		return st;
	if (a->val[TAIL_FROM] && (st = cli_parse_id(a->val[TAIL_FROM], "seq", &req.from)))
		return st;
	return tail_run(cli, &req);
}

const struct args_cmd cmd_job_tail = {
	.name = "job tail",
	.synopsis = "ID [--from SEQ] [--no-follow] [--json]",
	.summary = "Print a job's events as they happen; exit with its status.",
	.details = "Job output is written raw to stdout and stderr; other events print as\n"
		   "'[job N] state S', '[job N] step SEQ NAME: PHASE', '[job N] MESSAGE' and\n"
		   "'[job N] progress k=v ...' lines.  Exits 0 when the job succeeded, its exit\n"
		   "code when it has one, else 1 (with --no-follow, 0 while it is not final).\n"
		   "If bangerd restarts, banger reconnects for up to 30 s and resumes where it\n"
		   "stopped.\n",
	.opts = tail_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = tail_cmd_run,
};
