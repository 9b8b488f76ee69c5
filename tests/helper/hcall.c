/*
 * hcall.c: a test client for banger-helper that can say anything, including
 * what a correct client never would (tests/integration/t_helper.sh).
 *
 *   hcall SOCK METHOD [PARAMS-JSON] [--op OP] [--then CMD ARGS...]
 *       send one request, print the reply as one JSON line; exit 0 when it
 *       is ok, 1 when it is an error, 3 on a transport problem.  PARAMS-JSON
 *       is converted to msgpack as it is (ints >= 0 become unsigned), so wrong
 *       types can be sent; "-" as METHOD omits the method, --op "" omits op.
 *       A descriptor passed with the reply is reported as "fd": "/dev/loopN"
 *       (its /proc/self/fd target) and held while --then CMD runs (CMD gets
 *       it as HCALL_FD).
 *   hcall SOCK --raw CASE
 *       hostile frames: garbage oversize zero truncated hdr-only notmap
 *       trailing dupkey extrakey noop nomethod-type hang-up
 *       (hang-up: a valid net.tap.create for tap bgdead01 on bridge $HCALL_BRIDGE,
 *       then close before the reply).  Prints what came back, or "closed".
 *   hcall --open-tap NAME
 *       open an existing tap as the calling user (TUNSETIFF), as a
 *       hypervisor would; exit 0 when that works.
 *   hcall SOCK --peer-check
 *       connect and read without sending: prints what the helper says to a
 *       peer it refuses (or "timeout" after 2 s for one it accepts).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <msgpack.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int sock_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "hcall: socket path too long\n");
		exit(3);
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "hcall: connect %s: %s\n", path, strerror(errno));
		exit(3);
	}
	return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* the helper may have closed on us: that is a result */
		c += w;
		n -= (size_t)w;
	}
}

static void send_frame(int fd, const void *body, size_t n)
{
	unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
			      (unsigned char)(n >> 8), (unsigned char)n};
	send_all(fd, h, 4);
	send_all(fd, body, n);
}

/* Read n bytes within timeout_ms; collects a passed descriptor into *pfd. */
static int recv_n(int fd, void *buf, size_t n, int *pfd, int timeout_ms)
{
	size_t got = 0;
	while (got < n) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int pr = poll(&p, 1, timeout_ms);
		if (pr == 0)
			return -2;
		union {
			char b[CMSG_SPACE(sizeof(int))];
			struct cmsghdr a;
		} u;
		struct iovec iov = {(char *)buf + got, n - got};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
				    .msg_controllen = sizeof(u.b)};
		ssize_t r = recvmsg(fd, &mh, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		if (cm && cm->cmsg_type == SCM_RIGHTS && pfd)
			memcpy(pfd, CMSG_DATA(cm), sizeof(int));
		got += (size_t)r;
	}
	return 0;
}

static json_t *to_json(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return json_null();
	case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer(o->via.i64);
	case MSGPACK_OBJECT_STR: return json_stringn(o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_BIN: return json_stringn(o->via.bin.ptr, o->via.bin.size);
	case MSGPACK_OBJECT_ARRAY: {
		json_t *a = json_array();
		for (uint32_t i = 0; i < o->via.array.size; i++)
			json_array_append_new(a, to_json(&o->via.array.ptr[i]));
		return a;
	}
	case MSGPACK_OBJECT_MAP: {
		json_t *m = json_object();
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;
			char key[256];
			snprintf(key, sizeof(key), "%.*s",
				 k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
				 k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?");
			json_object_set_new(m, key, to_json(&o->via.map.ptr[i].val));
		}
		return m;
	}
	default: return json_string("?");
	}
}

static void pack_json(msgpack_packer *pk, json_t *j)
{
	const char *k;
	json_t *v;
	size_t i;
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		msgpack_pack_map(pk, json_object_size(j));
		json_object_foreach(j, k, v)
		{
			msgpack_pack_str(pk, strlen(k));
			msgpack_pack_str_body(pk, k, strlen(k));
			pack_json(pk, v);
		}
		break;
	case JSON_ARRAY:
		msgpack_pack_array(pk, json_array_size(j));
		json_array_foreach(j, i, v) pack_json(pk, v);
		break;
	case JSON_STRING:
		msgpack_pack_str(pk, json_string_length(j));
		msgpack_pack_str_body(pk, json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		if (json_integer_value(j) >= 0)
			msgpack_pack_uint64(pk, (uint64_t)json_integer_value(j));
		else
			msgpack_pack_int64(pk, json_integer_value(j));
		break;
	case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
	case JSON_TRUE: msgpack_pack_true(pk); break;
	case JSON_FALSE: msgpack_pack_false(pk); break;
	case JSON_NULL: msgpack_pack_nil(pk); break;
	}
}

static void pstr(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

/* Read one reply: print it; returns 0 ok, 1 error reply, 3 transport. */
static int print_reply(int fd, int *pfd, int timeout_ms)
{
	unsigned char h[4];
	int rc = recv_n(fd, h, 4, pfd, timeout_ms);
	if (rc) {
		puts(rc == -2 ? "timeout" : "closed");
		return 3;
	}
	uint32_t n = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
	if (n == 0 || n > (1u << 20)) {
		puts("bad-reply-length");
		return 3;
	}
	char *body = malloc(n);
	if (!body || recv_n(fd, body, n, pfd, timeout_ms)) {
		puts("truncated");
		return 3;
	}
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0;
	if (msgpack_unpack_next(&up, body, n, &off) != MSGPACK_UNPACK_SUCCESS) {
		puts("bad-reply");
		return 3;
	}
	json_t *j = to_json(&up.data);
	if (pfd && *pfd >= 0) {
		char lp[64], target[256];
		snprintf(lp, sizeof(lp), "/proc/self/fd/%d", *pfd);
		ssize_t tl = readlink(lp, target, sizeof(target) - 1);
		target[tl > 0 ? tl : 0] = '\0';
		json_object_set_new(j, "fd", json_string(target));
	}
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	puts(s);
	fflush(stdout);
	json_t *ok = json_object_get(j, "ok");
	rc = json_is_true(ok) ? 0 : 1;
	free(s);
	json_decref(j);
	msgpack_unpacked_destroy(&up);
	free(body);
	return rc;
}

static int raw_case(const char *sock, const char *c)
{
	int fd = sock_connect(sock);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (!strcmp(c, "garbage")) {
		send_frame(fd, "\xc1\xc1\xc1 not msgpack", 16);
	} else if (!strcmp(c, "oversize")) {
		send_all(fd, "\x00\x01\x00\x01xxxxxxxx", 12); /* 65537 bytes announced */
	} else if (!strcmp(c, "zero")) {
		send_all(fd, "\x00\x00\x00\x00", 4);
	} else if (!strcmp(c, "truncated")) {
		send_all(fd, "\x00\x00\x00\x64\x84\xa2id\x01", 9); /* 100 announced, 5 sent */
		shutdown(fd, SHUT_WR);
	} else if (!strcmp(c, "hdr-only")) {
		send_all(fd, "\x00\x00", 2);
		shutdown(fd, SHUT_WR);
	} else if (!strcmp(c, "notmap")) {
		send_frame(fd, "\x93\x01\x02\x03", 4);
	} else if (!strcmp(c, "trailing")) {
		/* a good ping, then one more byte in the same frame */
		msgpack_pack_map(&pk, 4);
		pstr(&pk, "id"), msgpack_pack_uint64(&pk, 7);
		pstr(&pk, "method"), pstr(&pk, "ping");
		pstr(&pk, "op"), pstr(&pk, "t-trailing");
		pstr(&pk, "params"), msgpack_pack_map(&pk, 0);
		msgpack_pack_nil(&pk);
		send_frame(fd, sb.data, sb.size);
	} else if (!strcmp(c, "dupkey") || !strcmp(c, "extrakey") || !strcmp(c, "noop") ||
		   !strcmp(c, "nomethod-type")) {
		bool dup = !strcmp(c, "dupkey"), extra = !strcmp(c, "extrakey");
		bool noop = !strcmp(c, "noop");
		msgpack_pack_map(&pk, noop ? 3 : 4 + extra);
		pstr(&pk, "id"), msgpack_pack_uint64(&pk, 9);
		pstr(&pk, "method");
		if (!strcmp(c, "nomethod-type"))
			msgpack_pack_uint64(&pk, 5);
		else
			pstr(&pk, dup ? "net.tap.remove" : "ping");
		if (!noop)
			pstr(&pk, "op"), pstr(&pk, "t-raw");
		pstr(&pk, "params");
		if (dup) {
			/* the same key twice: a checker that looks at the first
			 * and a handler that uses the second must never happen */
			msgpack_pack_map(&pk, 2);
			pstr(&pk, "tap"), pstr(&pk, "bg01");
			pstr(&pk, "tap"), pstr(&pk, "eth0");
		} else {
			msgpack_pack_map(&pk, 0);
		}
		if (extra)
			pstr(&pk, "sudo"), msgpack_pack_true(&pk);
		send_frame(fd, sb.data, sb.size);
	} else if (!strcmp(c, "hang-up")) {
		const char *br = getenv("HCALL_BRIDGE");
		msgpack_pack_map(&pk, 4);
		pstr(&pk, "id"), msgpack_pack_uint64(&pk, 1);
		pstr(&pk, "method"), pstr(&pk, "net.tap.create");
		pstr(&pk, "op"), pstr(&pk, "t-hangup");
		pstr(&pk, "params"), msgpack_pack_map(&pk, 2);
		pstr(&pk, "tap"), pstr(&pk, "bgdead01");
		pstr(&pk, "bridge"), pstr(&pk, br ? br : "bgbr0");
		send_frame(fd, sb.data, sb.size);
		close(fd);
		puts("sent and closed");
		msgpack_sbuffer_destroy(&sb);
		return 0;
	} else {
		fprintf(stderr, "hcall: unknown raw case '%s'\n", c);
		return 2;
	}
	msgpack_sbuffer_destroy(&sb);
	/* print every frame until the helper closes (or 3 s of silence) */
	for (int i = 0; i < 4; i++) {
		if (print_reply(fd, NULL, 3000) == 3)
			break;
	}
	close(fd);
	return 0;
}

static int open_tap(const char *name)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
		printf("cannot open tap %s as uid %u: %s\n", name, (unsigned)getuid(),
		       strerror(errno));
		return 1;
	}
	printf("opened tap %s as uid %u\n", name, (unsigned)getuid());
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "--open-tap"))
		return open_tap(argv[2]);
	if (argc < 3) {
		fprintf(stderr, "usage: hcall SOCK METHOD [PARAMS-JSON] [--op OP] [--then CMD...]\n"
				"       hcall SOCK --raw CASE | --peer-check\n"
				"       hcall --open-tap NAME\n");
		return 2;
	}
	const char *sock = argv[1];
	if (!strcmp(argv[2], "--raw") && argc >= 4)
		return raw_case(sock, argv[3]);
	if (!strcmp(argv[2], "--peer-check")) {
		int fd = sock_connect(sock);
		print_reply(fd, NULL, 2000);
		return 0;
	}
	const char *method = argv[2], *params = "{}", *op = "t-hcall";
	char **then = NULL;
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--op") && i + 1 < argc)
			op = argv[++i];
		else if (!strcmp(argv[i], "--then") && i + 1 < argc) {
			then = argv + i + 1;
			break;
		} else
			params = argv[i];
	}
	json_error_t je;
	json_t *pj = json_loads(params, JSON_DECODE_ANY, &je);
	if (!pj) {
		fprintf(stderr, "hcall: params: %s\n", je.text);
		return 2;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	bool has_method = strcmp(method, "-") != 0, has_op = *op != '\0';
	msgpack_pack_map(&pk, 2 + has_method + has_op);
	pstr(&pk, "id"), msgpack_pack_uint64(&pk, 1);
	if (has_method)
		pstr(&pk, "method"), pstr(&pk, method);
	if (has_op)
		pstr(&pk, "op"), pstr(&pk, op);
	pstr(&pk, "params");
	pack_json(&pk, pj);
	json_decref(pj);
	int fd = sock_connect(sock);
	send_frame(fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	int pfd = -1;
	int rc = print_reply(fd, &pfd, 60000);
	close(fd);
	if (then) {
		char num[16];
		snprintf(num, sizeof(num), "%d", pfd);
		if (pfd >= 0) {
			/* let the command see it: clear close-on-exec */
			int fl = fcntl(pfd, F_GETFD);
			fcntl(pfd, F_SETFD, fl & ~FD_CLOEXEC);
		}
		setenv("HCALL_FD", num, 1);
		fflush(stdout);
		pid_t p = fork();
		if (p == 0) {
			execvp(then[0], then);
			_exit(127);
		}
		int st;
		waitpid(p, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			rc = rc ? rc : 4;
	}
	if (pfd >= 0)
		close(pfd);
	return rc;
}
