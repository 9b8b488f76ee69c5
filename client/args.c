/*
 * args.c: command-line parsing for the banger CLI (see args.h).
 *
 * Deliberately small: long options with an optional short letter, values as
 * "--opt=V" or "--opt V", positionals anywhere, "--" to end options.  No
 * bundling of short flags.  Unknown options get a "did you mean" from
 * suggest_closest(), the same one the spec and config errors use.
 */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "suggest.h"
#include "util.h"

struct found {
	const struct args_opt *opt;
	struct args *out;
	int idx;
};

static bool find_in(const struct args_opt *opts, struct args *out, const char *name, size_t len,
		    char shortname, struct found *f)
{
	if (!opts || !out)
		return false;
	for (int i = 0; i < ARGS_MAX_OPTS && opts[i].name; i++) {
		bool hit = shortname ? opts[i].shortname == shortname
				     : strlen(opts[i].name) == len &&
						   memcmp(opts[i].name, name, len) == 0;
		if (hit) {
			f->opt = &opts[i];
			f->out = out;
			f->idx = i;
			return true;
		}
	}
	return false;
}

static char *unknown_option(const char *word, size_t len, const struct args_opt *a,
			    const struct args_opt *b)
{
	const char *cands[2 * ARGS_MAX_OPTS];
	char *owned[2 * ARGS_MAX_OPTS];
	size_t n = 0;
	const struct args_opt *tables[2] = {a, b};
	for (int t = 0; t < 2; t++)
		for (int i = 0; tables[t] && i < ARGS_MAX_OPTS && tables[t][i].name; i++) {
			owned[n] = xasprintf("--%s", tables[t][i].name);
			cands[n] = owned[n];
			n++;
		}
	char *w = xstrndup(word, len);
	const char *s = suggest_closest(w, cands, n);
	char *msg = s ? xasprintf("unknown option '%s' (did you mean '%s'?)", w, s)
		      : xasprintf("unknown option '%s'", w);
	free(w);
	for (size_t i = 0; i < n; i++)
		free(owned[i]);
	return msg;
}

int args_parse(const struct args_opt *cmd_opts, struct args *a, const struct args_opt *global_opts,
	       struct args *g, int argc, char **argv, bool stop_at_pos, int *used, char **errmsg)
{
	bool dashdash = false;
	*errmsg = NULL;
	for (int i = 0; i < argc; i++) {
		const char *w = argv[i];
		if (!dashdash && strcmp(w, "--") == 0) {
			if (stop_at_pos) {
				*used = i + 1;
				return 0;
			}
			dashdash = true;
			continue;
		}
		if (!dashdash && w[0] == '-' && w[1] != '\0') {
			struct found f;
			const char *name, *eq = NULL;
			size_t len;
			char shortname = 0;
			if (w[1] == '-') {
				name = w + 2;
				eq = strchr(name, '=');
				len = eq ? (size_t)(eq - name) : strlen(name);
			} else {
				name = w + 1;
				len = strlen(name);
				if (len != 1) {
					*errmsg = unknown_option(w, strlen(w), cmd_opts, global_opts);
					return -1;
				}
				shortname = w[1];
			}
			if (!find_in(cmd_opts, a, name, len, shortname, &f) &&
			    !find_in(global_opts, g, name, len, shortname, &f)) {
				*errmsg = unknown_option(w, eq ? (size_t)(eq - w) : strlen(w), cmd_opts,
							 global_opts);
				return -1;
			}
			const char *val = "";
			if (f.opt->metavar) {
				if (eq) {
					val = eq + 1;
				} else if (i + 1 < argc) {
					val = argv[++i];
				} else {
					*errmsg = xasprintf("option '--%s' needs a value (--%s %s)",
							    f.opt->name, f.opt->name, f.opt->metavar);
					return -1;
				}
			} else if (eq) {
				*errmsg = xasprintf("option '--%s' takes no value", f.opt->name);
				return -1;
			}
			f.out->val[f.idx] = val;
			continue;
		}
		if (stop_at_pos) {
			*used = i;
			return 0;
		}
		if (!a || a->npos >= ARGS_MAX_POS) {
			*errmsg = xasprintf("unexpected argument '%s'", w);
			return -1;
		}
		a->pos[a->npos++] = w;
	}
	*used = argc;
	return 0;
}

static void opt_label(const struct args_opt *o, char *buf, size_t n)
{
	if (o->shortname)
		snprintf(buf, n, "-%c, --%s%s%s", o->shortname, o->name, o->metavar ? " " : "",
			 o->metavar ? o->metavar : "");
	else
		snprintf(buf, n, "    --%s%s%s", o->name, o->metavar ? " " : "",
			 o->metavar ? o->metavar : "");
}

void args_print_opts(FILE *f, const char *heading, const struct args_opt *opts)
{
	char label[96];
	size_t w = 0;
	if (!opts || !opts[0].name)
		return;
	for (int i = 0; opts[i].name; i++) {
		opt_label(&opts[i], label, sizeof(label));
		if (strlen(label) > w)
			w = strlen(label);
	}
	fprintf(f, "%s:\n", heading);
	for (int i = 0; opts[i].name; i++) {
		opt_label(&opts[i], label, sizeof(label));
		fprintf(f, "  %-*s  %s\n", (int)w, label, opts[i].help);
	}
}

void args_print_usage(FILE *f, const struct args_cmd *cmd, const struct args_opt *global_opts)
{
	fprintf(f, "usage: banger %s%s%s\n\n%s\n", cmd->name, cmd->synopsis[0] ? " " : "",
		cmd->synopsis, cmd->summary);
	if (cmd->details)
		fprintf(f, "\n%s", cmd->details);
	fputc('\n', f);
	if (cmd->opts && cmd->opts[0].name) {
		args_print_opts(f, "options", cmd->opts);
		fputc('\n', f);
	}
	args_print_opts(f, "global options", global_opts);
}
