/*
 * registry.c: the OCI distribution API v2 client (see registry.h for the
 * contract).
 *
 * Layout of this file: reference parsing, WWW-Authenticate parsing, the
 * credentials file, then the client: per-registry state (scheme, auth
 * scheme, tokens), a pool of curl easy handles (so connections are reused
 * across requests and threads), and one request loop (xfer_run) that every
 * call goes through: it builds the URL, adds what auth it knows, performs,
 * answers a 401 once by authenticating, retries what is worth retrying, and
 * turns everything else into an error message a person can act on.
 *
 * Threads: the client's mutable state (hosts, tokens, the handle pool) is
 * behind c->mu, held only for short bookkeeping, never across a transfer.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "registry.h"
#include "util.h"

#define MANIFEST_MAX (4u << 20)
#define TOKEN_MAX (1u << 20)
#define ERRBODY_MAX (64u << 10)
#define HANDLE_POOL 8

static const char ACCEPT_MANIFESTS[] =
	"Accept: " MT_OCI_INDEX ", " MT_DOCKER_LIST ", " MT_OCI_MANIFEST ", " MT_DOCKER_MANIFEST;

/* ---------------------------------------------------------------------- */
/* references                                                              */

static bool is_lower_alnum(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

static bool is_alnum(char ch)
{
	return isalnum((unsigned char)ch) != 0;
}

static int ref_err(char **errmsg, const char *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int ref_err(char **errmsg, const char *s, const char *fmt, ...)
{
	struct sb sb;
	sb_init(&sb);
	sb_addf(&sb, "invalid reference '%s': ", s);
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(&sb, fmt, ap);
	va_end(ap);
	*errmsg = sb_detach(&sb);
	return BG_ERR_INVAL;
}

/* One path component: [a-z0-9]+ ((.|_|__|-+)[a-z0-9]+)*  */
static const char *check_component(const char *p, size_t n)
{
	if (n == 0)
		return "empty path component";
	for (size_t i = 0; i < n; i++)
		if (p[i] >= 'A' && p[i] <= 'Z')
			return "repository names must be lowercase";
	if (!is_lower_alnum(p[0]) || !is_lower_alnum(p[n - 1]))
		return "each path component must start and end with a lowercase letter or digit";
	size_t i = 0;
	while (i < n) {
		if (is_lower_alnum(p[i])) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < n && !is_lower_alnum(p[j]))
			j++;
		size_t len = j - i;
		bool ok = false;
		if (len == 1 && (p[i] == '.' || p[i] == '_' || p[i] == '-'))
			ok = true;
		else if (len == 2 && p[i] == '_' && p[i + 1] == '_')
			ok = true;
		else {
			ok = true;
			for (size_t k = i; k < j; k++)
				if (p[k] != '-')
					ok = false;
		}
		if (!ok)
			return "path components may only contain lowercase letters, digits and "
			       "single separators ('.', '_', '__' or dashes)";
		i = j;
	}
	return NULL;
}

/* host[:port], host a DNS name, IPv4 address or [IPv6]. */
static const char *check_domain(const char *p, size_t n)
{
	size_t hostlen = n;
	const char *colon = NULL;
	if (n > 0 && p[0] == '[') {
		const char *close = memchr(p, ']', n);
		if (!close)
			return "unterminated '[' in the registry address";
		for (const char *q = p + 1; q < close; q++)
			if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
				return "bad IPv6 address in the registry address";
		if (close == p + 1)
			return "empty IPv6 address";
		hostlen = (size_t)(close - p) + 1;
		if (hostlen < n) {
			if (p[hostlen] != ':')
				return "unexpected text after ']' in the registry address";
			colon = p + hostlen;
		}
	} else {
		colon = memchr(p, ':', n);
		if (colon)
			hostlen = (size_t)(colon - p);
		if (hostlen == 0)
			return "empty registry host";
		/* components separated by dots, each alnum with inner dashes */
		size_t i = 0;
		while (i < hostlen) {
			size_t j = i;
			while (j < hostlen && p[j] != '.')
				j++;
			if (j == i)
				return "empty label in the registry host";
			if (!is_alnum(p[i]) || !is_alnum(p[j - 1]))
				return "registry host labels must start and end with a letter or digit";
			for (size_t k = i; k < j; k++)
				if (!is_alnum(p[k]) && p[k] != '-')
					return "bad character in the registry host";
			i = j + 1;
			if (j < hostlen && i == hostlen)
				return "registry host ends with a dot";
		}
	}
	if (colon) {
		const char *port = colon + 1;
		size_t plen = n - (size_t)(port - p);
		if (plen == 0 || plen > 5)
			return "bad port in the registry address";
		long v = 0;
		for (size_t i = 0; i < plen; i++) {
			if (!isdigit((unsigned char)port[i]))
				return "bad port in the registry address";
			v = v * 10 + (port[i] - '0');
		}
		if (v < 1 || v > 65535)
			return "port out of range in the registry address";
	}
	return NULL;
}

static bool looks_like_domain(const char *p, size_t n)
{
	if (n == 9 && memcmp(p, "localhost", 9) == 0)
		return true;
	for (size_t i = 0; i < n; i++)
		if (p[i] == '.' || p[i] == ':' || p[i] == '[' || (p[i] >= 'A' && p[i] <= 'Z'))
			return true;
	return false;
}

int reg_ref_parse(const char *s, struct reg_ref *out, char **errmsg)
{
	memset(out, 0, sizeof(*out));
	*errmsg = NULL;
	if (!s || !*s)
		return ref_err(errmsg, s ? s : "", "empty reference");
	size_t total = strlen(s);
	if (total > 1024)
		return ref_err(errmsg, "...", "reference longer than 1024 characters");
	for (size_t i = 0; i < total; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return ref_err(errmsg, s, "contains whitespace or a non-ASCII character");

	const char *at = strchr(s, '@');
	size_t namelen = at ? (size_t)(at - s) : total;
	if (at) {
		const char *d = at + 1;
		if (strchr(d, '@'))
			return ref_err(errmsg, s, "more than one '@'");
		const char *c = strchr(d, ':');
		if (!c)
			return ref_err(errmsg, s, "digest must look like sha256:<64 hex digits>");
		if ((size_t)(c - d) != 6 || memcmp(d, "sha256", 6) != 0)
			return ref_err(errmsg, s, "unsupported digest algorithm '%.*s' (only sha256)",
				       (int)(c - d), d);
		const char *hex = c + 1;
		size_t hl = strlen(hex);
		if (hl != 64)
			return ref_err(errmsg, s, "sha256 digest must have 64 hex digits, not %zu", hl);
		for (size_t i = 0; i < 64; i++)
			if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
				return ref_err(errmsg, s, "digest must be lowercase hex");
		snprintf(out->digest, sizeof(out->digest), "sha256:%s", hex);
	}
	if (namelen == 0)
		return ref_err(errmsg, s, "missing repository name");

	/* tag: after the last ':' that follows the last '/' */
	const char *lastslash = NULL;
	for (const char *p = s; p < s + namelen; p++)
		if (*p == '/')
			lastslash = p;
	const char *tagc = NULL;
	for (const char *p = lastslash ? lastslash : s; p < s + namelen; p++)
		if (*p == ':')
			tagc = p;
	/* "[::1]:5000" alone has no '/'; a colon inside brackets is not a tag */
	if (tagc && !lastslash && memchr(s, ']', namelen) && tagc < (const char *)memchr(s, ']', namelen))
		tagc = NULL;
	size_t repolen = namelen;
	if (tagc) {
		const char *t = tagc + 1;
		size_t tl = (size_t)(s + namelen - t);
		if (tl == 0)
			return ref_err(errmsg, s, "empty tag after ':'");
		if (tl > 128)
			return ref_err(errmsg, s, "tag longer than 128 characters");
		if (!(is_alnum(t[0]) || t[0] == '_'))
			return ref_err(errmsg, s, "tag must start with a letter, digit or '_'");
		for (size_t i = 0; i < tl; i++)
			if (!(is_alnum(t[i]) || t[i] == '_' || t[i] == '.' || t[i] == '-'))
				return ref_err(errmsg, s,
					       "tag may only contain letters, digits, '_', '.' and '-'");
		memcpy(out->tag, t, tl);
		out->tag[tl] = '\0';
		repolen = (size_t)(tagc - s);
	}

	const char *slash = memchr(s, '/', repolen);
	const char *path = s;
	size_t pathlen = repolen;
	if (slash && looks_like_domain(s, (size_t)(slash - s))) {
		size_t dl = (size_t)(slash - s);
		const char *why = check_domain(s, dl);
		if (why)
			return ref_err(errmsg, s, "%s", why);
		if (dl >= sizeof(out->registry))
			return ref_err(errmsg, s, "registry address too long");
		memcpy(out->registry, s, dl);
		out->registry[dl] = '\0';
		path = slash + 1;
		pathlen = repolen - dl - 1;
	} else {
		snprintf(out->registry, sizeof(out->registry), "docker.io");
	}
	if (pathlen == 0)
		return ref_err(errmsg, s, "missing repository name after the registry");
	size_t i = 0;
	while (i <= pathlen) {
		size_t j = i;
		while (j < pathlen && path[j] != '/')
			j++;
		const char *why = check_component(path + i, j - i);
		if (why)
			return ref_err(errmsg, s, "%s", why);
		i = j + 1;
	}
	bool hub = strcmp(out->registry, "docker.io") == 0;
	bool lib = hub && !memchr(path, '/', pathlen);
	if (pathlen + (lib ? 8 : 0) + strlen(out->registry) + 1 > 255)
		return ref_err(errmsg, s, "repository name longer than 255 characters");
	snprintf(out->repository, sizeof(out->repository), "%s%.*s", lib ? "library/" : "",
		 (int)pathlen, path);
	if (!out->tag[0] && !out->digest[0])
		snprintf(out->tag, sizeof(out->tag), "latest");
	return 0;
}

char *reg_ref_format(const struct reg_ref *r)
{
	struct sb sb;
	sb_init(&sb);
	sb_addf(&sb, "%s/%s", r->registry, r->repository);
	if (r->tag[0])
		sb_addf(&sb, ":%s", r->tag);
	if (r->digest[0])
		sb_addf(&sb, "@%s", r->digest);
	return sb_detach(&sb);
}

bool reg_host_is_loopback(const char *hp)
{
	char host[256];
	size_t n;
	if (hp[0] == '[') {
		const char *e = strchr(hp, ']');
		if (!e)
			return false;
		n = (size_t)(e - hp - 1);
		if (n >= sizeof(host))
			return false;
		memcpy(host, hp + 1, n);
	} else {
		const char *c = strchr(hp, ':');
		n = c ? (size_t)(c - hp) : strlen(hp);
		if (n >= sizeof(host))
			return false;
		memcpy(host, hp, n);
	}
	host[n] = '\0';
	if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0)
		return true;
	unsigned a, b, c, d;
	char extra;
	if (sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 &&
	    c < 256 && d < 256)
		return true;
	return false;
}

/* ---------------------------------------------------------------------- */
/* WWW-Authenticate                                                        */

static bool is_tchar(char ch)
{
	return is_alnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

void reg_challenge_release(struct reg_challenge *c)
{
	free(c->scheme);
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	memset(c, 0, sizeof(*c));
}

/* A quoted-string at p (p[0] == '"'); *out gets the unescaped text. */
static const char *parse_quoted(const char *p, char **out)
{
	struct sb sb;
	sb_init(&sb);
	p++;
	while (*p && *p != '"') {
		if (*p == '\\') {
			p++;
			if (!*p)
				break;
		}
		sb_add(&sb, p, 1);
		p++;
	}
	if (*p != '"') {
		sb_release(&sb);
		return NULL;
	}
	*out = sb_detach(&sb);
	return p + 1;
}

int reg_www_auth_parse(const char *value, struct reg_challenge *out, size_t max)
{
	size_t n = 0;
	const char *p = value;
	struct reg_challenge cur = {0};
	bool have = false;
	for (size_t i = 0; i < max; i++)
		memset(&out[i], 0, sizeof(out[i]));
	for (;;) {
		p = skip_ows(p);
		while (*p == ',')
			p = skip_ows(p + 1);
		if (!*p)
			break;
		/* a token: either a new scheme, or (after a scheme) a param name */
		const char *t = p;
		while (is_tchar(*p))
			p++;
		if (p == t)
			goto bad;
		size_t tl = (size_t)(p - t);
		const char *q = skip_ows(p);
		if (have && *q == '=' && q[1] != '=' && q[1] != ',' && q[1] != '\0') {
			/* auth-param of the current challenge */
			char *val = NULL;
			q = skip_ows(q + 1);
			if (*q == '"') {
				q = parse_quoted(q, &val);
				if (!q)
					goto bad;
			} else {
				const char *v = q;
				while (is_tchar(*q) || *q == '/' || *q == ':')
					q++;
				if (q == v)
					goto bad;
				val = xstrndup(v, (size_t)(q - v));
			}
			char **slot = NULL;
			if (tl == 5 && strncasecmp(t, "realm", 5) == 0)
				slot = &cur.realm;
			else if (tl == 7 && strncasecmp(t, "service", 7) == 0)
				slot = &cur.service;
			else if (tl == 5 && strncasecmp(t, "scope", 5) == 0)
				slot = &cur.scope;
			else if (tl == 5 && strncasecmp(t, "error", 5) == 0)
				slot = &cur.error;
			if (slot) {
				free(*slot);
				*slot = val;
			} else {
				free(val);
			}
			p = skip_ows(q);
			if (*p && *p != ',')
				goto bad;
			continue;
		}
		if (have && *q == '=') {
			/* token68 (e.g. "Negotiate abc=="): skip it */
			while (*q == '=')
				q++;
			p = skip_ows(q);
			if (*p && *p != ',')
				goto bad;
			continue;
		}
		/* a new challenge */
		if (have) {
			if (n < max)
				out[n] = cur;
			else
				reg_challenge_release(&cur);
			n++;
			memset(&cur, 0, sizeof(cur));
		}
		cur.scheme = xstrndup(t, tl);
		for (char *s = cur.scheme; *s; s++)
			*s = (char)tolower((unsigned char)*s);
		have = true;
		p = q;
		if (*p && *p != ',' && !is_tchar(*p))
			goto bad;
	}
	if (have) {
		if (n < max)
			out[n] = cur;
		else
			reg_challenge_release(&cur);
		n++;
	}
	if (n == 0)
		return BG_ERR_INVAL;
	return (int)(n < max ? n : max);
bad:
	reg_challenge_release(&cur);
	for (size_t i = 0; i < n && i < max; i++)
		reg_challenge_release(&out[i]);
	return BG_ERR_INVAL;
}

/* ---------------------------------------------------------------------- */
/* credentials                                                             */

static int b64val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+' || ch == '-')
		return 62;
	if (ch == '/' || ch == '_')
		return 63;
	return -1;
}

/* Decode base64 (standard or URL alphabet, padding optional); NULL if bad. */
static char *b64_decode(const char *s, size_t *outlen)
{
	size_t n = strlen(s);
	char *out = xmalloc(n / 4 * 3 + 4);
	size_t o = 0;
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '=')
			break;
		int v = b64val((unsigned char)s[i]);
		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

/* "https://host:port/v1/" -> "host:port" (into buf). */
static void auth_key_host(const char *key, char *buf, size_t size)
{
	const char *p = key;
	const char *sch = strstr(p, "://");
	if (sch)
		p = sch + 3;
	size_t n = strcspn(p, "/");
	if (n >= size)
		n = size - 1;
	memcpy(buf, p, n);
	buf[n] = '\0';
}

static bool auth_key_matches(const char *key, const char *registry)
{
	char host[512];
	auth_key_host(key, host, sizeof(host));
	if (strcmp(host, registry) == 0)
		return true;
	if (strcmp(registry, "docker.io") == 0)
		return strcmp(host, "index.docker.io") == 0 ||
		       strcmp(host, "registry-1.docker.io") == 0;
	return false;
}

int reg_creds_lookup(const char *auth_file, const char *registry, char **user, char **pass,
		     char **errmsg)
{
	*user = *pass = NULL;
	*errmsg = NULL;
	if (!auth_file)
		return 0;
	int fd = open(auth_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		int rc = bg_errno(errno);
		*errmsg = xasprintf("cannot open the registry credentials file %s: %s", auth_file,
				    strerror(errno));
		return rc;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		*errmsg = xasprintf("registry credentials file %s is not a regular file", auth_file);
		return BG_ERR_INVAL;
	}
	if (st.st_uid != geteuid()) {
		close(fd);
		*errmsg = xasprintf("registry credentials file %s belongs to uid %u, not to this "
				    "user (uid %u): refusing to use credentials someone else can change",
				    auth_file, (unsigned)st.st_uid, (unsigned)geteuid());
		return BG_ERR_PERM;
	}
	if (st.st_mode & 077) {
		close(fd);
		*errmsg = xasprintf("registry credentials file %s has mode %04o: group and others "
				    "must have no access to it (run: chmod 600 %s)",
				    auth_file, (unsigned)(st.st_mode & 07777), auth_file);
		return BG_ERR_PERM;
	}
	json_error_t je;
	json_t *root = json_loadfd(fd, JSON_REJECT_DUPLICATES, &je);
	close(fd);
	if (!root) {
		*errmsg = xasprintf("%s:%d:%d: %s", auth_file, je.line, je.column, je.text);
		return BG_ERR_INVAL;
	}
	int rc = 0;
	if (!json_is_object(root)) {
		*errmsg = xasprintf("%s: expected a JSON object with \"auths\"", auth_file);
		rc = BG_ERR_INVAL;
		goto out;
	}
	json_t *auths = json_object_get(root, "auths");
	if (auths && !json_is_object(auths)) {
		*errmsg = xasprintf("%s: \"auths\" must be an object", auth_file);
		rc = BG_ERR_INVAL;
		goto out;
	}
	const char *key;
	json_t *ent;
	json_t *found = NULL;
	if (auths) {
		json_object_foreach(auths, key, ent)
		{
			if (auth_key_matches(key, registry)) {
				found = ent;
				break;
			}
		}
	}
	if (!found) {
		json_t *helpers = json_object_get(root, "credHelpers");
		if (json_object_get(root, "credsStore") ||
		    (helpers && json_object_get(helpers, registry))) {
			*errmsg = xasprintf("%s: credential helpers (credsStore, credHelpers) are not "
					    "supported; write the credentials for %s into \"auths\"",
					    auth_file, registry);
			rc = BG_ERR_UNSUPPORTED;
		}
		goto out;
	}
	if (!json_is_object(found)) {
		*errmsg = xasprintf("%s: auths[\"%s\"] must be an object", auth_file, key);
		rc = BG_ERR_INVAL;
		goto out;
	}
	const char *a = json_string_value(json_object_get(found, "auth"));
	const char *u = json_string_value(json_object_get(found, "username"));
	const char *pw = json_string_value(json_object_get(found, "password"));
	if (a && *a) {
		size_t dl;
		char *dec = b64_decode(a, &dl);
		char *colon = dec ? memchr(dec, ':', dl) : NULL;
		if (!colon || memchr(dec, '\0', dl)) {
			free(dec);
			*errmsg = xasprintf("%s: auths[\"%s\"].auth is not base64 of "
					    "\"user:password\"",
					    auth_file, key);
			rc = BG_ERR_INVAL;
			goto out;
		}
		*user = xstrndup(dec, (size_t)(colon - dec));
		*pass = xstrdup(colon + 1);
		OPENSSL_cleanse(dec, dl);
		free(dec);
	} else if (u && pw) {
		*user = xstrdup(u);
		*pass = xstrdup(pw);
	} else if (json_object_get(found, "identitytoken")) {
		*errmsg = xasprintf("%s: auths[\"%s\"] holds an identitytoken (OAuth), which is "
				    "not supported; use \"auth\" or \"username\"/\"password\"",
				    auth_file, key);
		rc = BG_ERR_UNSUPPORTED;
	} else {
		*errmsg = xasprintf("%s: auths[\"%s\"] has neither \"auth\" nor "
				    "\"username\"/\"password\"",
				    auth_file, key);
		rc = BG_ERR_INVAL;
	}
out:
	json_decref(root);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* the client                                                              */

enum { SCHEME_UNKNOWN, SCHEME_HTTPS, SCHEME_HTTP };
enum { AUTH_NONE, AUTH_BASIC, AUTH_BEARER };

struct token {
	char *scope;
	char *token;
	int64_t expires_mono;
	struct token *next;
};

struct host_state {
	char *host;
	int scheme;
	int auth;
	struct token *tokens;
	struct host_state *next;
};

struct reg_client {
	pthread_mutex_t mu;
	struct host_state *hosts;
	CURL *pool[HANDLE_POOL];
	int npool;
	char *auth_file, *ca_file, *ua;
	char **insecure;
	int attempts;
	int64_t backoff_us, connect_us, stall_us, request_us;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int reg_client_create(const struct reg_opts *o, struct reg_client **out, char **errmsg)
{
	static const struct reg_opts defaults = {0};
	*out = NULL;
	*errmsg = NULL;
	if (!o)
		o = &defaults;
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK) {
		*errmsg = xasprintf("cannot initialise libcurl: %s", curl_easy_strerror(curl_init_rc));
		return BG_ERR_IO;
	}
	if (o->ca_file && access(o->ca_file, R_OK) != 0) {
		*errmsg = xasprintf("cannot read the CA bundle %s: %s", o->ca_file, strerror(errno));
		return bg_errno(errno);
	}
	struct reg_client *c = xcalloc(1, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	c->auth_file = o->auth_file ? xstrdup(o->auth_file) : NULL;
	c->ca_file = o->ca_file ? xstrdup(o->ca_file) : NULL;
	c->ua = xstrdup(o->user_agent ? o->user_agent : "banger");
	size_t ni = 0;
	while (o->insecure && o->insecure[ni])
		ni++;
	c->insecure = xcalloc(ni + 1, sizeof(char *));
	for (size_t i = 0; i < ni; i++)
		c->insecure[i] = xstrdup(o->insecure[i]);
	c->attempts = o->attempts > 0 ? o->attempts : 5;
	c->backoff_us = o->backoff_us > 0 ? o->backoff_us : 500000;
	c->connect_us = o->connect_timeout_us > 0 ? o->connect_timeout_us : 10000000;
	c->stall_us = o->stall_timeout_us > 0 ? o->stall_timeout_us : 30000000;
	c->request_us = o->request_timeout_us > 0 ? o->request_timeout_us : 60000000;
	*out = c;
	return 0;
}

void reg_client_destroy(struct reg_client *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->npool; i++)
		curl_easy_cleanup(c->pool[i]);
	while (c->hosts) {
		struct host_state *h = c->hosts;
		c->hosts = h->next;
		while (h->tokens) {
			struct token *t = h->tokens;
			h->tokens = t->next;
			free(t->scope);
			OPENSSL_cleanse(t->token, strlen(t->token));
			free(t->token);
			free(t);
		}
		free(h->host);
		free(h);
	}
	for (char **p = c->insecure; *p; p++)
		free(*p);
	free(c->insecure);
	free(c->auth_file);
	free(c->ca_file);
	free(c->ua);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

/* Caller holds c->mu. */
static struct host_state *host_get(struct reg_client *c, const char *host)
{
	for (struct host_state *h = c->hosts; h; h = h->next)
		if (strcmp(h->host, host) == 0)
			return h;
	struct host_state *h = xcalloc(1, sizeof(*h));
	h->host = xstrdup(host);
	h->next = c->hosts;
	c->hosts = h;
	return h;
}

static bool host_insecure(const struct reg_client *c, const char *hostport)
{
	char host[256];
	snprintf(host, sizeof(host), "%s", hostport);
	char *colon = host[0] == '[' ? strstr(host, "]:") : strchr(host, ':');
	for (char **p = c->insecure; *p; p++) {
		if (strcmp(*p, hostport) == 0)
			return true;
		if (colon) {
			size_t hl = (size_t)(colon - host) + (host[0] == '[' ? 1 : 0);
			if (strlen(*p) == hl && strncmp(*p, host, hl) == 0)
				return true;
		}
	}
	return false;
}

static bool plain_allowed(const struct reg_client *c, const char *hostport)
{
	return reg_host_is_loopback(hostport) || host_insecure(c, hostport);
}

static const char *api_host(const char *registry)
{
	return strcmp(registry, "docker.io") == 0 ? "registry-1.docker.io" : registry;
}

static CURL *handle_get(struct reg_client *c)
{
	CURL *h = NULL;
	pthread_mutex_lock(&c->mu);
	if (c->npool > 0)
		h = c->pool[--c->npool];
	pthread_mutex_unlock(&c->mu);
	if (!h)
		h = curl_easy_init();
	else
		curl_easy_reset(h);
	if (!h)
		abort(); /* only fails on out of memory */
	return h;
}

static void handle_put(struct reg_client *c, CURL *h)
{
	pthread_mutex_lock(&c->mu);
	if (c->npool < HANDLE_POOL) {
		c->pool[c->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->mu);
	if (h)
		curl_easy_cleanup(h);
}

/* ---------------------------------------------------------------------- */
/* one transfer                                                            */

struct xfer {
	/* request */
	const char *url;
	bool head;
	const char *accept; /* full header line or NULL */
	const char *bearer; /* token or NULL */
	const char *user, *pass; /* basic or NULL */
	bool verify_tls;
	bool blob;         /* stall timeout instead of a total one */
	uint64_t range_from;
	const struct reg_sink *sink; /* 2xx bodies go here when set */
	uint64_t size;     /* blob size limit (sink) */
	size_t body_max;   /* 2xx bodies kept in body, at most this */
	reg_cancel_fn cancelled;
	void *arg;
	const char *redir_protocols;
	/* response */
	long status;
	struct sb body;
	char *content_type, *dcd, *www, *retry_after, *content_range;
	bool first_write_done;
	bool stalled;      /* no byte for stall_us: aborted, counts as a timeout */
	int64_t stall_us;
	curl_off_t last_dn;
	int64_t last_move;
	bool too_big;
	bool bad_range;
	int sink_rc;
	uint64_t got; /* body bytes this attempt (sink) */
	char errbuf[CURL_ERROR_SIZE];
};

static void xfer_reset_response(struct xfer *x)
{
	x->status = 0;
	sb_release(&x->body);
	free(x->content_type);
	free(x->dcd);
	free(x->www);
	free(x->retry_after);
	free(x->content_range);
	x->content_type = x->dcd = x->www = x->retry_after = x->content_range = NULL;
	x->first_write_done = x->too_big = x->bad_range = x->stalled = false;
	x->last_dn = 0;
	x->last_move = mono_us();
	x->sink_rc = 0;
	x->got = 0;
	x->errbuf[0] = '\0';
}

static void xfer_release(struct xfer *x)
{
	xfer_reset_response(x);
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nitems;
	if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		/* a new response (after a redirect or 100-continue) */
		free(x->content_type);
		free(x->dcd);
		free(x->www);
		free(x->retry_after);
		free(x->content_range);
		x->content_type = x->dcd = x->www = x->retry_after = x->content_range = NULL;
		return n;
	}
	const char *colon = memchr(buf, ':', n);
	if (!colon)
		return n;
	size_t kl = (size_t)(colon - buf);
	const char *v = colon + 1;
	const char *end = buf + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	char *val = xstrndup(v, (size_t)(end - v));
	char **slot = NULL;
	if (kl == 12 && strncasecmp(buf, "content-type", 12) == 0)
		slot = &x->content_type;
	else if (kl == 21 && strncasecmp(buf, "docker-content-digest", 21) == 0)
		slot = &x->dcd;
	else if (kl == 11 && strncasecmp(buf, "retry-after", 11) == 0)
		slot = &x->retry_after;
	else if (kl == 13 && strncasecmp(buf, "content-range", 13) == 0)
		slot = &x->content_range;
	else if (kl == 16 && strncasecmp(buf, "www-authenticate", 16) == 0) {
		if (x->www) {
			char *j = xasprintf("%s, %s", x->www, val);
			free(x->www);
			free(val);
			x->www = j;
		} else {
			x->www = val;
		}
		return n;
	}
	if (slot) {
		free(*slot);
		*slot = val;
	} else {
		free(val);
	}
	return n;
}

/* "bytes START-END/TOTAL" -> START */
static bool content_range_start(const char *cr, uint64_t *start)
{
	if (!cr || strncasecmp(cr, "bytes ", 6) != 0)
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(cr + 6, &end, 10);
	if (errno || *end != '-')
		return false;
	*start = v;
	return true;
}

static size_t on_write(char *buf, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nmemb;
	long st = x->status;
	bool ok = st >= 200 && st < 300;
	if (ok && x->sink) {
		if (!x->first_write_done) {
			x->first_write_done = true;
			if (st == 206) {
				uint64_t start;
				if (!content_range_start(x->content_range, &start) ||
				    start != x->range_from) {
					x->bad_range = true;
					return 0;
				}
			} else if (x->range_from > 0) {
				/* the server ignored the Range: start over */
				int rc = x->sink->reset(x->sink->arg);
				if (rc) {
					x->sink_rc = rc;
					return 0;
				}
				x->range_from = 0;
			}
		}
		if (x->range_from + x->got + n > x->size) {
			x->too_big = true;
			return 0;
		}
		int rc = x->sink->write(x->sink->arg, buf, n);
		if (rc) {
			x->sink_rc = rc;
			return 0;
		}
		x->got += n;
		return n;
	}
	size_t limit = ok ? x->body_max : ERRBODY_MAX;
	if (x->body.len + n > limit) {
		if (ok) {
			x->too_big = true;
			return 0;
		}
		n = limit - x->body.len; /* keep the start of an error body */
		sb_add(&x->body, buf, n);
		return size * nmemb;
	}
	sb_add(&x->body, buf, n);
	return n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct xfer *x = ud;
	(void)dt, (void)ut, (void)un;
	if (x->cancelled && x->cancelled(x->arg))
		return 1;
	int64_t now = mono_us();
	if (dn != x->last_dn) {
		x->last_dn = dn;
		x->last_move = now;
	} else if (x->stall_us > 0 && now - x->last_move > x->stall_us) {
		x->stalled = true; /* curl calls this at least once a second */
		return 1;
	}
	return 0;
}

/* The status is needed inside on_write; curl knows it once headers are in.
 * This header callback wrapper records it when the header block ends. */
struct xfer_h {
	struct xfer *x;
	CURL *h;
};

static size_t on_header_h(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer_h *xh = ud;
	size_t n = on_header(buf, size, nitems, xh->x);
	if (size * nitems <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
		long code = 0;
		curl_easy_getinfo(xh->h, CURLINFO_RESPONSE_CODE, &code);
		xh->x->status = code;
	}
	return n;
}

static CURLcode xfer_perform(struct reg_client *c, struct xfer *x)
{
	CURL *h = handle_get(c);
	struct xfer_h xh = {x, h};
	struct curl_slist *hdrs = NULL;
	char *auth = NULL;
	xfer_reset_response(x);
	curl_easy_setopt(h, CURLOPT_URL, x->url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, x->redir_protocols);
	curl_easy_setopt(h, CURLOPT_USERAGENT, c->ua);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_us / 1000));
	if (x->blob) {
		/* no total limit: on_progress aborts a transfer idle for stall_us */
		x->stall_us = c->stall_us;
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
	} else {
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(c->request_us / 1000));
	}
	if (c->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
	if (!x->verify_tls) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (x->head)
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	if (x->accept)
		hdrs = curl_slist_append(hdrs, x->accept);
	if (x->bearer) {
		auth = xasprintf("Authorization: Bearer %s", x->bearer);
		hdrs = curl_slist_append(hdrs, auth);
	} else if (x->user) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, x->user);
		curl_easy_setopt(h, CURLOPT_PASSWORD, x->pass);
	}
	if (hdrs)
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	char range[48];
	if (x->range_from > 0) {
		snprintf(range, sizeof(range), "%llu-", (unsigned long long)x->range_from);
		curl_easy_setopt(h, CURLOPT_RANGE, range);
	}
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header_h);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &xh);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);

	CURLcode rc = curl_easy_perform(h);
	long code = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (code)
		x->status = code;
	curl_slist_free_all(hdrs);
	if (auth) {
		OPENSSL_cleanse(auth, strlen(auth));
		free(auth);
	}
	/* forget credentials before the handle goes back to the pool */
	curl_easy_setopt(h, CURLOPT_USERNAME, NULL);
	curl_easy_setopt(h, CURLOPT_PASSWORD, NULL);
	handle_put(c, h);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* error text                                                              */

/* The registry's error JSON ({"errors":[{code,message,detail}]}, or a token
 * server's {"details"|"error"|"message": ...}), else the start of the body. */
static void describe_body(struct sb *out, const char *body, size_t len)
{
	if (len == 0)
		return;
	json_error_t je;
	json_t *j = json_loadb(body, len, 0, &je);
	size_t before = out->len;
	if (j && json_is_object(j)) {
		json_t *errs = json_object_get(j, "errors");
		size_t i;
		json_t *e;
		if (json_is_array(errs)) {
			json_array_foreach(errs, i, e)
			{
				const char *code = json_string_value(json_object_get(e, "code"));
				const char *msg = json_string_value(json_object_get(e, "message"));
				if (!code && !msg)
					continue;
				sb_adds(out, out->len > before ? "; " : "");
				if (code && msg)
					sb_addf(out, "%s: %s", code, msg);
				else
					sb_adds(out, code ? code : msg);
				json_t *d = json_object_get(e, "detail");
				if (d && !json_is_null(d)) {
					char *ds = json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY);
					if (ds && strlen(ds) <= 300 && strcmp(ds, "{}") && strcmp(ds, "[]"))
						sb_addf(out, " (detail: %s)", ds);
					free(ds);
				}
			}
		}
		const char *keys[] = {"details", "error_description", "error", "message"};
		for (size_t k = 0; out->len == before && k < ARRAY_LEN(keys); k++) {
			const char *v = json_string_value(json_object_get(j, keys[k]));
			if (v)
				sb_adds(out, v);
		}
	}
	if (j)
		json_decref(j);
	if (out->len == before) {
		sb_adds(out, "body: \"");
		for (size_t i = 0; i < len && i < 200; i++) {
			unsigned char ch = (unsigned char)body[i];
			if (ch == '\n' || ch == '\r' || ch == '\t')
				sb_adds(out, " ");
			else if (ch >= 0x20 && ch < 0x7f && ch != '"')
				sb_add(out, &body[i], 1);
			else
				sb_adds(out, "?");
		}
		sb_adds(out, len > 200 ? "...\"" : "\"");
	}
}

/* "HTTP 404 from URL (CODE: message)" */
static char *http_error(const struct xfer *x)
{
	struct sb sb;
	sb_init(&sb);
	sb_addf(&sb, "HTTP %ld from %s", x->status, x->url);
	if (x->body.len) {
		struct sb d;
		sb_init(&d);
		describe_body(&d, x->body.buf, x->body.len);
		if (d.len)
			sb_addf(&sb, " (%s)", d.buf);
		sb_release(&d);
	}
	return sb_detach(&sb);
}

static int status_code(long st)
{
	if (st == 404)
		return BG_ERR_NOENT;
	if (st == 401 || st == 403)
		return BG_ERR_PERM;
	if (st >= 500 || st == 429)
		return BG_ERR_IO;
	return BG_ERR_PROTO;
}

static bool curl_transient(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

/* Sleep us, in slices, stopping early when cancelled. */
static int sleep_cancellable(int64_t us, reg_cancel_fn cancelled, void *arg)
{
	int64_t end = mono_us() + us;
	for (;;) {
		if (cancelled && cancelled(arg))
			return BG_ERR_CANCELED;
		int64_t left = end - mono_us();
		if (left <= 0)
			return 0;
		if (left > 50000)
			left = 50000;
		struct timespec ts = {0, (long)left * 1000};
		nanosleep(&ts, NULL);
	}
}

static int64_t backoff_delay(const struct reg_client *c, int n, const char *retry_after)
{
	int64_t d = c->backoff_us;
	for (int i = 1; i < n && d < 10000000; i++)
		d *= 2;
	if (d > 10000000)
		d = 10000000;
	d += (mono_us() % 1000) * d / 4000; /* up to 25% jitter */
	if (retry_after) {
		char *end;
		long s = strtol(retry_after, &end, 10);
		if (*end == '\0' && s > 0) {
			int64_t ra = (int64_t)(s > 30 ? 30 : s) * 1000000;
			if (ra > d)
				d = ra;
		}
	}
	return d;
}

/* ---------------------------------------------------------------------- */
/* auth                                                                    */

static char *scope_for(const struct reg_ref *ref)
{
	return xasprintf("repository:%s:pull", ref->repository);
}

/* Bearer token cached for host+scope (copy) or NULL. */
static char *token_find(struct reg_client *c, const char *host, const char *scope, int *auth)
{
	char *tok = NULL;
	pthread_mutex_lock(&c->mu);
	struct host_state *h = host_get(c, host);
	*auth = h->auth;
	int64_t now = mono_us();
	for (struct token *t = h->tokens; t; t = t->next)
		if (strcmp(t->scope, scope) == 0 && t->expires_mono > now) {
			tok = xstrdup(t->token);
			break;
		}
	pthread_mutex_unlock(&c->mu);
	return tok;
}

static void token_store(struct reg_client *c, const char *host, const char *scope,
			const char *token, int64_t expires_in_s)
{
	pthread_mutex_lock(&c->mu);
	struct host_state *h = host_get(c, host);
	h->auth = AUTH_BEARER;
	struct token *t = NULL;
	for (t = h->tokens; t; t = t->next)
		if (strcmp(t->scope, scope) == 0)
			break;
	if (!t) {
		t = xcalloc(1, sizeof(*t));
		t->scope = xstrdup(scope);
		t->next = h->tokens;
		h->tokens = t;
	} else {
		free(t->token);
	}
	t->token = xstrdup(token);
	/* refresh a little early so a token never expires mid-request */
	int64_t life = expires_in_s > 0 ? expires_in_s : 60;
	t->expires_mono = mono_us() + (life > 20 ? life - 10 : life / 2) * 1000000;
	pthread_mutex_unlock(&c->mu);
}

static void set_host_auth(struct reg_client *c, const char *host, int auth)
{
	pthread_mutex_lock(&c->mu);
	host_get(c, host)->auth = auth;
	pthread_mutex_unlock(&c->mu);
}

static int host_scheme(struct reg_client *c, const char *host)
{
	pthread_mutex_lock(&c->mu);
	int s = host_get(c, host)->scheme;
	pthread_mutex_unlock(&c->mu);
	return s;
}

static void set_host_scheme(struct reg_client *c, const char *host, int scheme)
{
	pthread_mutex_lock(&c->mu);
	host_get(c, host)->scheme = scheme;
	pthread_mutex_unlock(&c->mu);
}

struct creds {
	char *user, *pass;
	bool loaded;
};

static void creds_release(struct creds *cr)
{
	if (cr->pass)
		OPENSSL_cleanse(cr->pass, strlen(cr->pass));
	free(cr->user);
	free(cr->pass);
	memset(cr, 0, sizeof(*cr));
}

static int creds_load(struct reg_client *c, const char *registry, struct creds *cr,
		      char **errmsg)
{
	if (cr->loaded)
		return 0;
	int rc = reg_creds_lookup(c->auth_file, registry, &cr->user, &cr->pass, errmsg);
	if (rc == 0)
		cr->loaded = true;
	return rc;
}

static char *creds_hint(const struct reg_client *c, const char *registry)
{
	if (!c->auth_file)
		return xasprintf("no registry credentials file is configured; put an entry for '%s' "
				 "in one (mode 0600)",
				 registry);
	return xasprintf("add an entry for '%s' to %s", registry, c->auth_file);
}

/* GET the token for scope from the challenge's realm. */
static int fetch_token(struct reg_client *c, const struct reg_ref *ref,
		       const struct reg_challenge *ch, const char *scope, struct creds *cr,
		       reg_cancel_fn cancelled, void *arg, char **errmsg)
{
	if (!ch->realm || !*ch->realm) {
		*errmsg = xasprintf("registry %s asked for a bearer token but named no realm",
				    ref->registry);
		return BG_ERR_PROTO;
	}
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *url = NULL;
	int rc = 0;
	if (curl_url_set(u, CURLUPART_URL, ch->realm, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		*errmsg = xasprintf("registry %s named a token realm that is not a URL: '%s'",
				    ref->registry, ch->realm);
		rc = BG_ERR_PROTO;
		goto out;
	}
	curl_url_get(u, CURLUPART_PORT, &port, 0);
	char hostport[300];
	snprintf(hostport, sizeof(hostport), "%s%s%s", host, port ? ":" : "", port ? port : "");
	bool https = strcmp(scheme, "https") == 0;
	if (!https && !(strcmp(scheme, "http") == 0 && plain_allowed(c, hostport))) {
		*errmsg = xasprintf("registry %s wants credentials sent to %s, which is not HTTPS "
				    "(plain HTTP is only used on loopback or for registries listed "
				    "as insecure)",
				    ref->registry, ch->realm);
		rc = BG_ERR_PERM;
		goto out;
	}
	if (ch->service) {
		char *q = xasprintf("service=%s", ch->service);
		curl_url_set(u, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE);
		free(q);
	}
	char *q = xasprintf("scope=%s", scope);
	curl_url_set(u, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE);
	free(q);
	curl_url_get(u, CURLUPART_URL, &url, 0);

	rc = creds_load(c, ref->registry, cr, errmsg);
	if (rc)
		goto out;
	struct xfer x = {0};
	x.url = url;
	x.user = cr->user;
	x.pass = cr->pass;
	x.verify_tls = !host_insecure(c, hostport);
	x.body_max = TOKEN_MAX;
	x.cancelled = cancelled;
	x.arg = arg;
	x.redir_protocols = https ? "https" : "http,https";
	int tries = 0;
	for (;;) {
		CURLcode cc = xfer_perform(c, &x);
		tries++;
		if (x.too_big) {
			*errmsg = xasprintf("token from %s is larger than 1 MiB", ch->realm);
			rc = BG_ERR_PROTO;
			break;
		}
		if (cc == CURLE_ABORTED_BY_CALLBACK) {
			*errmsg = xstrdup("cancelled");
			rc = BG_ERR_CANCELED;
			break;
		}
		bool again = (cc != CURLE_OK && curl_transient(cc)) ||
			     (cc == CURLE_OK && (x.status >= 500 || x.status == 429));
		if (again && tries < c->attempts) {
			rc = sleep_cancellable(backoff_delay(c, tries, x.retry_after), cancelled, arg);
			if (rc) {
				*errmsg = xstrdup("cancelled");
				break;
			}
			continue;
		}
		if (cc != CURLE_OK) {
			*errmsg = xasprintf("cannot get a token from %s: %s", ch->realm,
					    x.errbuf[0] ? x.errbuf : curl_easy_strerror(cc));
			rc = cc == CURLE_OPERATION_TIMEDOUT ? BG_ERR_TIMEDOUT : BG_ERR_IO;
			break;
		}
		if (x.status == 401 || x.status == 403) {
			char *he = http_error(&x);
			if (cr->user) {
				*errmsg = xasprintf("token server refused the credentials of user '%s' "
						    "(from %s) for %s: %s",
						    cr->user, c->auth_file, scope, he);
			} else {
				char *hint = creds_hint(c, ref->registry);
				*errmsg = xasprintf("token server refused anonymous access to %s: %s; %s",
						    scope, he, hint);
				free(hint);
			}
			free(he);
			rc = BG_ERR_PERM;
			break;
		}
		if (x.status != 200) {
			char *he = http_error(&x);
			*errmsg = xasprintf("cannot get a token for %s: %s", scope, he);
			free(he);
			rc = status_code(x.status);
			break;
		}
		json_error_t je;
		json_t *j = json_loadb(x.body.buf ? x.body.buf : "", x.body.len, 0, &je);
		const char *tok = NULL;
		if (j) {
			tok = json_string_value(json_object_get(j, "token"));
			if (!tok || !*tok)
				tok = json_string_value(json_object_get(j, "access_token"));
		}
		if (!tok || !*tok) {
			*errmsg = xasprintf("token server %s answered without a token%s%s", ch->realm,
					    j ? "" : ": invalid JSON: ", j ? "" : je.text);
			rc = BG_ERR_PROTO;
		} else {
			json_int_t exp = json_integer_value(json_object_get(j, "expires_in"));
			token_store(c, ref->registry, scope, tok, exp < 60 ? 60 : exp);
		}
		if (j)
			json_decref(j);
		break;
	}
	xfer_release(&x);
out:
	curl_free(url);
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}

/* The registry said 401: learn how to authenticate.  0 when the request is
 * worth trying again; otherwise an error in *errmsg. */
static int authenticate(struct reg_client *c, const struct reg_ref *ref, struct xfer *x,
			const char *scope, struct creds *cr, reg_cancel_fn cancelled, void *arg,
			char **errmsg)
{
	struct reg_challenge ch[4];
	int n = x->www ? reg_www_auth_parse(x->www, ch, ARRAY_LEN(ch)) : BG_ERR_INVAL;
	if (n <= 0) {
		char *he = http_error(x);
		*errmsg = x->www ? xasprintf("cannot parse the registry's WWW-Authenticate "
					     "header '%s': %s",
					     x->www, he)
				 : xasprintf("registry %s requires authentication but sent no "
					     "WWW-Authenticate header: %s",
					     ref->registry, he);
		free(he);
		return BG_ERR_PROTO;
	}
	const struct reg_challenge *bearer = NULL, *basic = NULL;
	for (int i = 0; i < n; i++) {
		if (strcmp(ch[i].scheme, "bearer") == 0 && !bearer)
			bearer = &ch[i];
		else if (strcmp(ch[i].scheme, "basic") == 0 && !basic)
			basic = &ch[i];
	}
	int rc;
	if (bearer) {
		/* the token must cover what this request needs (our scope); the
		 * registry's scope may name more (e.g. push) */
		rc = fetch_token(c, ref, bearer, scope, cr, cancelled, arg, errmsg);
	} else if (basic) {
		rc = creds_load(c, ref->registry, cr, errmsg);
		if (rc == 0 && !cr->user) {
			char *he = http_error(x);
			char *hint = creds_hint(c, ref->registry);
			*errmsg = xasprintf("registry %s requires a user name and password: %s; %s",
					    ref->registry, he, hint);
			free(hint);
			free(he);
			rc = BG_ERR_PERM;
		} else if (rc == 0) {
			set_host_auth(c, ref->registry, AUTH_BASIC);
		}
	} else {
		*errmsg = xasprintf("registry %s asks for an unsupported authentication scheme "
				    "'%s' (supported: basic, bearer)",
				    ref->registry, ch[0].scheme);
		rc = BG_ERR_UNSUPPORTED;
	}
	for (int i = 0; i < n; i++)
		reg_challenge_release(&ch[i]);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* the request loop                                                        */

enum req_kind { REQ_MANIFEST, REQ_HEAD, REQ_BLOB };

struct req {
	enum req_kind kind;
	const struct reg_ref *ref;
	const char *reference; /* tag or digest */
	const struct reg_sink *sink;
	uint64_t size;
	reg_cancel_fn cancelled;
	void *arg;
};

/* Runs r until a 2xx (x holds the response) or an error (*errmsg). */
static int xfer_run(struct reg_client *c, const struct req *r, struct xfer *x, char **errmsg)
{
	const char *reg = r->ref->registry;
	char *scope = scope_for(r->ref);
	struct creds cr = {0};
	int rc = 0;
	int fails = 0;     /* attempts that failed without moving a byte */
	int loops = 0;
	int auths = 0;
	char *url = NULL;
	char *token = NULL;
	const char *path = r->kind == REQ_BLOB ? "blobs" : "manifests";
	bool plain_ok = plain_allowed(c, reg);

	for (;;) {
		if (++loops > c->attempts * 10 + 10) {
			*errmsg = xasprintf("giving up on %s after %d tries", url ? url : reg, loops - 1);
			rc = BG_ERR_IO;
			break;
		}
		int scheme = host_scheme(c, reg);
		free(url);
		url = xasprintf("%s://%s/v2/%s/%s/%s", scheme == SCHEME_HTTP ? "http" : "https",
				api_host(reg), r->ref->repository, path, r->reference);
		int auth;
		free(token);
		token = token_find(c, reg, scope, &auth);
		if (auth == AUTH_BASIC && !cr.loaded) {
			rc = creds_load(c, reg, &cr, errmsg);
			if (rc)
				break;
		}
		x->url = url;
		x->head = r->kind == REQ_HEAD;
		x->accept = r->kind == REQ_BLOB ? NULL : ACCEPT_MANIFESTS;
		x->bearer = token;
		x->user = auth == AUTH_BASIC ? cr.user : NULL;
		x->pass = auth == AUTH_BASIC ? cr.pass : NULL;
		x->verify_tls = !host_insecure(c, reg);
		x->blob = r->kind == REQ_BLOB;
		x->sink = r->sink;
		x->size = r->size;
		x->body_max = MANIFEST_MAX;
		x->cancelled = r->cancelled;
		x->arg = r->arg;
		x->redir_protocols = scheme == SCHEME_HTTP ? "http,https" : "https";
		x->range_from = 0;
		if (r->sink) {
			x->range_from = r->sink->offset(r->sink->arg);
			if (x->range_from >= r->size && r->size > 0) {
				rc = 0; /* everything is already here */
				x->status = 200;
				break;
			}
		}
		CURLcode cc = xfer_perform(c, x);

		if (cc == CURLE_SSL_CONNECT_ERROR && scheme == SCHEME_UNKNOWN && plain_ok) {
			/* loopback or insecure registry that does not speak TLS */
			set_host_scheme(c, reg, SCHEME_HTTP);
			continue;
		}
		if (cc == CURLE_OK && scheme == SCHEME_UNKNOWN)
			set_host_scheme(c, reg, url[4] == 's' ? SCHEME_HTTPS : SCHEME_HTTP);
		if (cc == CURLE_ABORTED_BY_CALLBACK && x->stalled) {
			snprintf(x->errbuf, sizeof(x->errbuf),
				 "no data for %lld s (after %llu bytes)",
				 (long long)(c->stall_us / 1000000), (unsigned long long)x->got);
			cc = CURLE_OPERATION_TIMEDOUT;
		}
		if (cc == CURLE_ABORTED_BY_CALLBACK) {
			*errmsg = xstrdup("cancelled");
			rc = BG_ERR_CANCELED;
			break;
		}
		if (x->too_big) {
			*errmsg = r->kind == REQ_BLOB
					  ? xasprintf("%s sent more than the %llu bytes the manifest "
						      "gives for this blob",
						      url, (unsigned long long)r->size)
					  : xasprintf("%s sent a manifest larger than %u MiB", url,
						      MANIFEST_MAX >> 20);
			rc = BG_ERR_PROTO;
			break;
		}
		if (x->sink_rc) {
			*errmsg = xasprintf("cannot store the blob from %s: %s", url,
					    bg_strerror(x->sink_rc));
			rc = x->sink_rc;
			break;
		}
		if (x->bad_range) {
			*errmsg = xasprintf("%s answered a request for bytes %llu- with the wrong "
					    "range (Content-Range: %s)",
					    url, (unsigned long long)x->range_from,
					    x->content_range ? x->content_range : "none");
			rc = BG_ERR_PROTO;
			break;
		}
		bool progressed = x->got > 0;
		if (cc != CURLE_OK) {
			if (curl_transient(cc)) {
				if (!progressed)
					fails++;
				if (fails < c->attempts) {
					rc = sleep_cancellable(progressed ? c->backoff_us / 4
									  : backoff_delay(c, fails, NULL),
							       r->cancelled, r->arg);
					if (rc) {
						*errmsg = xstrdup("cancelled");
						break;
					}
					continue;
				}
			}
			const char *why = x->errbuf[0] ? x->errbuf : curl_easy_strerror(cc);
			if (cc == CURLE_PEER_FAILED_VERIFICATION)
				*errmsg = xasprintf("cannot verify the TLS certificate of %s: %s "
						    "(give the registry's CA bundle, or list %s as "
						    "insecure)",
						    reg, why, reg);
			else if (fails > 1)
				*errmsg = xasprintf("cannot fetch %s: %s (%d attempts)", url, why,
						    fails);
			else
				*errmsg = xasprintf("cannot fetch %s: %s", url, why);
			rc = cc == CURLE_OPERATION_TIMEDOUT ? BG_ERR_TIMEDOUT : BG_ERR_IO;
			break;
		}
		long st = x->status;
		if (st == 401) {
			if (auths++ > 0) {
				/* we authenticated as asked and were still refused */
				char *he = http_error(x);
				if (token)
					*errmsg = xasprintf("registry %s refused the token it asked for "
							    "(scope %s): %s",
							    reg, scope, he);
				else
					*errmsg = xasprintf("registry %s refused the credentials of user "
							    "'%s' (from %s): %s",
							    reg, cr.user ? cr.user : "?",
							    c->auth_file ? c->auth_file : "?", he);
				free(he);
				rc = BG_ERR_PERM;
				break;
			}
			/* first 401 of this request (a cached token may have expired) */
			rc = authenticate(c, r->ref, x, scope, &cr, r->cancelled, r->arg, errmsg);
			if (rc)
				break;
			continue;
		}
		if (st >= 500 || st == 429) {
			fails++;
			if (fails < c->attempts) {
				rc = sleep_cancellable(backoff_delay(c, fails, x->retry_after),
						       r->cancelled, r->arg);
				if (rc) {
					*errmsg = xstrdup("cancelled");
					break;
				}
				continue;
			}
			char *he = http_error(x);
			*errmsg = xasprintf("%s (%d attempts)", he, fails);
			free(he);
			rc = BG_ERR_IO;
			break;
		}
		if (st == 416 && r->sink && x->range_from > 0) {
			/* the held bytes do not fit the blob: start again */
			rc = r->sink->reset(r->sink->arg);
			if (rc) {
				*errmsg = xasprintf("cannot restart the download of %s: %s", url,
						    bg_strerror(rc));
				break;
			}
			fails++;
			continue;
		}
		if (st >= 200 && st < 300) {
			if (r->sink && r->size > 0 && r->sink->offset(r->sink->arg) < r->size) {
				/* the body ended early without a transport error */
				fails++;
				if (fails < c->attempts)
					continue;
				*errmsg = xasprintf("%s ended the blob after %llu of %llu bytes", url,
						    (unsigned long long)r->sink->offset(r->sink->arg),
						    (unsigned long long)r->size);
				rc = BG_ERR_IO;
				break;
			}
			rc = 0;
			break;
		}
		char *he = http_error(x);
		if (st == 404 && r->kind == REQ_BLOB)
			*errmsg = xasprintf("blob %s not found in %s/%s: %s", r->reference, reg,
					    r->ref->repository, he);
		else if (st == 404)
			*errmsg = xasprintf("manifest '%s' not found in %s/%s: %s", r->reference, reg,
					    r->ref->repository, he);
		else if (st == 401 || st == 403)
			*errmsg = xasprintf("access to %s/%s denied: %s", reg, r->ref->repository, he);
		else
			*errmsg = xasprintf("unexpected answer: %s", he);
		free(he);
		rc = status_code(st);
		break;
	}
	x->url = NULL;
	free(url);
	free(token);
	free(scope);
	creds_release(&cr);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* public calls                                                            */

static void sha256_digest(const void *p, size_t n, char out[REG_DIGEST_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdl = 0;
	EVP_Digest(p, n, md, &mdl, EVP_sha256(), NULL);
	static const char hx[] = "0123456789abcdef";
	memcpy(out, "sha256:", 7);
	for (unsigned i = 0; i < mdl && i < 32; i++) {
		out[7 + 2 * i] = hx[md[i] >> 4];
		out[8 + 2 * i] = hx[md[i] & 15];
	}
	out[7 + 64] = '\0';
}

void reg_manifest_release(struct reg_manifest *m)
{
	free(m->data);
	free(m->media_type);
	memset(m, 0, sizeof(*m));
}

static char *media_type_of(const char *ct)
{
	if (!ct)
		return xstrdup("");
	size_t n = strcspn(ct, "; \t");
	char *m = xstrndup(ct, n);
	for (char *p = m; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return m;
}

int reg_manifest_get(struct reg_client *c, const struct reg_ref *ref, struct reg_manifest *out,
		     reg_cancel_fn cancelled, void *arg, char **errmsg)
{
	memset(out, 0, sizeof(*out));
	*errmsg = NULL;
	struct req r = {REQ_MANIFEST, ref, ref->digest[0] ? ref->digest : ref->tag, NULL, 0,
			cancelled, arg};
	struct xfer x = {0};
	int rc = xfer_run(c, &r, &x, errmsg);
	if (rc)
		goto out;
	char dg[REG_DIGEST_MAX];
	sha256_digest(x.body.buf ? x.body.buf : "", x.body.len, dg);
	const char *want = ref->digest[0] ? ref->digest : NULL;
	if (!want && x.dcd && strncmp(x.dcd, "sha256:", 7) == 0)
		want = x.dcd;
	if (want && strcmp(want, dg) != 0) {
		*errmsg = xasprintf("manifest from %s/%s/manifests/%s does not match its digest: "
				    "expected %s, got %s",
				    ref->registry, ref->repository, r.reference, want, dg);
		rc = BG_ERR_PROTO;
		goto out;
	}
	out->len = x.body.len;
	out->data = sb_detach(&x.body);
	out->media_type = media_type_of(x.content_type);
	memcpy(out->digest, dg, sizeof(dg));
out:
	xfer_release(&x);
	return rc;
}

int reg_manifest_head(struct reg_client *c, const struct reg_ref *ref,
		      char digest[REG_DIGEST_MAX], reg_cancel_fn cancelled, void *arg,
		      char **errmsg)
{
	*errmsg = NULL;
	digest[0] = '\0';
	struct req r = {REQ_HEAD, ref, ref->digest[0] ? ref->digest : ref->tag, NULL, 0,
			cancelled, arg};
	struct xfer x = {0};
	int rc = xfer_run(c, &r, &x, errmsg);
	if (rc == 0) {
		if (x.dcd && strlen(x.dcd) == 71 && strncmp(x.dcd, "sha256:", 7) == 0) {
			memcpy(digest, x.dcd, 72);
		} else {
			*errmsg = xasprintf("registry %s sent no Docker-Content-Digest for %s",
					    ref->registry, r.reference);
			rc = BG_ERR_NOENT;
		}
	}
	xfer_release(&x);
	return rc;
}

int reg_blob_get(struct reg_client *c, const struct reg_ref *ref, const char *digest,
		 uint64_t size, const struct reg_sink *sink, char **errmsg)
{
	*errmsg = NULL;
	struct req r = {REQ_BLOB, ref, digest, sink, size, sink->cancelled, sink->arg};
	struct xfer x = {0};
	int rc = xfer_run(c, &r, &x, errmsg);
	xfer_release(&x);
	return rc;
}
