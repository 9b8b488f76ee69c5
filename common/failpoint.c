/*
 * failpoint.c: BANGER_FAILPOINTS parsing and triggering (see failpoint.h).
 */
#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "failpoint.h"
#include "util.h"

enum fp_action { FP_CRASH, FP_ERROR, FP_SLEEP };

struct failpoint {
	char *pattern;
	enum fp_action action;
	int sleep_ms;
	long nth; /* 0: every hit */
	atomic_long hits;
};

#define MAX_FP 32
static struct failpoint fps[MAX_FP];
static int nfps;

int failpoint_enabled(void)
{
	return nfps > 0;
}

int failpoint_init(char **errmsg)
{
	const char *env = getenv("BANGER_FAILPOINTS");
	if (!env || !*env)
		return 0;
	char *copy = xstrdup(env), *save = NULL;
	int rc = 0;
	for (char *tok = strtok_r(copy, ";,", &save); tok; tok = strtok_r(NULL, ";,", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq || eq == tok || nfps == MAX_FP) {
			*errmsg = xasprintf("BANGER_FAILPOINTS: bad entry '%s' (want NAME=ACTION)", tok);
			rc = BG_ERR_INVAL;
			break;
		}
		*eq = '\0';
		char *act = eq + 1;
		struct failpoint *fp = &fps[nfps];
		fp->nth = 0;
		char *star = strchr(act, '*');
		if (star) {
			fp->nth = strtol(act, NULL, 10);
			act = star + 1;
		}
		if (strcmp(act, "crash") == 0)
			fp->action = FP_CRASH;
		else if (strcmp(act, "error") == 0)
			fp->action = FP_ERROR;
		else if (strncmp(act, "sleep:", 6) == 0) {
			fp->action = FP_SLEEP;
			fp->sleep_ms = atoi(act + 6);
		} else {
			*errmsg = xasprintf("BANGER_FAILPOINTS: unknown action '%s' for '%s' "
					    "(want crash, error or sleep:MS)", act, tok);
			rc = BG_ERR_INVAL;
			break;
		}
		fp->pattern = xstrdup(tok);
		atomic_init(&fp->hits, 0);
		nfps++;
	}
	free(copy);
	return rc;
}

int failpoint_hit(const char *name)
{
	for (int i = 0; i < nfps; i++) {
		struct failpoint *fp = &fps[i];
		if (fnmatch(fp->pattern, name, 0) != 0)
			continue;
		long n = atomic_fetch_add(&fp->hits, 1) + 1;
		if (fp->nth && n != fp->nth)
			continue;
		switch (fp->action) {
		case FP_CRASH: {
			char buf[256];
			int len = snprintf(buf, sizeof(buf),
					   "{\"level\":\"error\",\"msg\":\"failpoint %s: crash\"}\n", name);
			if (len > 0 && write(2, buf, (size_t)len) < 0) {
				/* crashing anyway */
			}
			kill(getpid(), SIGKILL);
			pause();
			break;
		}
		case FP_ERROR:
			return BG_ERR_FAILPOINT;
		case FP_SLEEP: {
			struct timespec ts = {fp->sleep_ms / 1000, (fp->sleep_ms % 1000) * 1000000L};
			nanosleep(&ts, NULL);
			break;
		}
		}
	}
	return 0;
}

int failpoint_hitf(const char *fmt, ...)
{
	if (!nfps)
		return 0;
	char name[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	return failpoint_hit(name);
}
