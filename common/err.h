/*
 * err.h: banger's one error convention.
 *
 * Functions return int: 0 on success, a negative BG_E* code on failure.  The
 * table below gives each code its name and the message a person reads, the way
 * libuv's UV_ERRNO_MAP does.  errno values are converted with bg_errno() where
 * the syscall fails; SQLite codes are mapped only in the queue backend.
 */
#ifndef BANGER_ERR_H
#define BANGER_ERR_H

#define BG_ERR_MAP(X)                                                         \
	X(INVAL, "invalid argument")                                          \
	X(NOMEM, "out of memory")                                             \
	X(IO, "input/output error")                                           \
	X(NOENT, "not found")                                                 \
	X(EXIST, "already exists")                                            \
	X(PERM, "permission denied")                                          \
	X(BUSY, "resource busy")                                              \
	X(NOSPC, "no space left on device")                                   \
	X(TIMEDOUT, "timed out")                                              \
	X(CANCELED, "cancelled")                                              \
	X(PROTO, "protocol error")                                            \
	X(TOOBIG, "message too large")                                        \
	X(STALE, "lease lost (stale epoch)")                                  \
	X(STATE, "operation not allowed in this state")                       \
	X(DB, "database error")                                               \
	X(SCHEMA, "database schema is newer than this binary")                \
	X(SPEC, "invalid spec")                                               \
	X(FAILPOINT, "failpoint triggered")                                   \
	X(STEP, "step failed")                                                \
	X(CONN, "cannot connect to bangerd")                                  \
	X(CLOSED, "connection closed")                                        \
	X(UNSUPPORTED, "not supported")                                       \
	X(INTERRUPTED, "interrupted by daemon restart")

enum {
	BG_OK = 0,
#define X(name, msg) BG_E##name,
	BG_ERR_FIRST_ = 999,
	BG_ERR_MAP(X)
#undef X
};

#define X(name, msg) BG_ERR_##name = -BG_E##name,
enum { BG_ERR_MAP(X) BG_ERR_PAD_ = 0 };
#undef X

/* Static strings; never NULL (unknown codes give "unknown error"). */
const char *bg_strerror(int code);
const char *bg_errname(int code);
/* Code for a name as bg_errname() gives it; BG_ERR_IO when unknown. */
int bg_errcode(const char *name);
/* Map an errno value (positive) to a BG_ERR_* code. */
int bg_errno(int e);

#endif
