/*
 * err.c: names and messages for banger's error codes (see err.h).
 */
#include <errno.h>
#include <string.h>

#include "err.h"

struct errent {
	int code;
	const char *name;
	const char *msg;
};

static const struct errent table[] = {
#define X(name, msg) {BG_ERR_##name, #name, msg},
	BG_ERR_MAP(X)
#undef X
};

static const struct errent *find(int code)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].code == code)
			return &table[i];
	return NULL;
}

const char *bg_strerror(int code)
{
	const struct errent *e = find(code);
	return e ? e->msg : "unknown error";
}

const char *bg_errname(int code)
{
	const struct errent *e = find(code);
	return e ? e->name : "UNKNOWN";
}

int bg_errcode(const char *name)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strcmp(table[i].name, name) == 0)
			return table[i].code;
	return BG_ERR_IO;
}

int bg_errno(int e)
{
	switch (e) {
	case 0: return 0;
	case ENOMEM: return BG_ERR_NOMEM;
	case ENOENT: return BG_ERR_NOENT;
	case EEXIST: return BG_ERR_EXIST;
	case EACCES:
	case EPERM: return BG_ERR_PERM;
	case EBUSY:
	case EAGAIN: return BG_ERR_BUSY;
	case ENOSPC:
	case EDQUOT: return BG_ERR_NOSPC;
	case ETIMEDOUT: return BG_ERR_TIMEDOUT;
	case ECANCELED: return BG_ERR_CANCELED;
	case EINVAL: return BG_ERR_INVAL;
	case EMSGSIZE: return BG_ERR_TOOBIG;
	case ECONNREFUSED: return BG_ERR_CONN;
	case EPIPE:
	case ECONNRESET: return BG_ERR_CLOSED;
	default: return BG_ERR_IO;
	}
}
