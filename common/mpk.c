/*
 * mpk.c: msgpack-c conveniences (see mpk.h).
 */
#include <string.h>

#include "err.h"
#include "mpk.h"
#include "util.h"

const msgpack_object *mpk_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	size_t kl = strlen(key);
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
		    memcmp(k->via.str.ptr, key, kl) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

bool mpk_as_int(const msgpack_object *o, int64_t *out)
{
	if (!o)
		return false;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > INT64_MAX)
			return false;
		*out = (int64_t)o->via.u64;
		return true;
	}
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*out = o->via.i64;
		return true;
	}
	return false;
}

int mpk_get_int(const msgpack_object *map, const char *key, int64_t *out)
{
	const msgpack_object *o = mpk_get(map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return BG_ERR_NOENT;
	return mpk_as_int(o, out) ? 0 : BG_ERR_INVAL;
}

int mpk_get_bool(const msgpack_object *map, const char *key, bool *out)
{
	const msgpack_object *o = mpk_get(map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return BG_ERR_NOENT;
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return BG_ERR_INVAL;
	*out = o->via.boolean;
	return 0;
}

int mpk_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len)
{
	const msgpack_object *o = mpk_get(map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return BG_ERR_NOENT;
	if (o->type == MSGPACK_OBJECT_STR) {
		*s = o->via.str.ptr;
		*len = o->via.str.size;
		return 0;
	}
	if (o->type == MSGPACK_OBJECT_BIN) {
		*s = o->via.bin.ptr;
		*len = o->via.bin.size;
		return 0;
	}
	return BG_ERR_INVAL;
}

char *mpk_dup_str(const msgpack_object *map, const char *key)
{
	const char *s;
	size_t n;
	if (mpk_get_str(map, key, &s, &n) != 0)
		return NULL;
	return xstrndup(s, n);
}

bool mpk_str_eq(const msgpack_object *o, const char *s)
{
	size_t n = strlen(s);
	return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
	       memcmp(o->via.str.ptr, s, n) == 0;
}

void mpk_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

void mpk_pack_str(msgpack_packer *pk, const char *s)
{
	mpk_pack_strn(pk, s, strlen(s));
}

void mpk_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	mpk_pack_str(pk, k);
	if (v)
		mpk_pack_str(pk, v);
	else
		msgpack_pack_nil(pk);
}

void mpk_kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
	mpk_pack_str(pk, k);
	msgpack_pack_int64(pk, v);
}

void mpk_kv_bool(msgpack_packer *pk, const char *k, bool v)
{
	mpk_pack_str(pk, k);
	if (v)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

void mpk_kv_nil(msgpack_packer *pk, const char *k)
{
	mpk_pack_str(pk, k);
	msgpack_pack_nil(pk);
}

void mpk_kv_raw(msgpack_packer *pk, const char *k, const void *raw, size_t len)
{
	mpk_pack_str(pk, k);
	if (!raw || len == 0) {
		msgpack_pack_nil(pk);
		return;
	}
	/* The packer's callback appends bytes as they are: a pre-encoded value
	 * goes in verbatim. */
	pk->callback(pk->data, raw, len);
}

int mpk_encode(const msgpack_object *o, char **out, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (msgpack_pack_object(&pk, *o) != 0) {
		msgpack_sbuffer_destroy(&sb);
		return BG_ERR_NOMEM;
	}
	*len = sb.size;
	*out = msgpack_sbuffer_release(&sb);
	return 0;
}

/*
 * Walk the msgpack bytes without allocating: every container's declared
 * count must fit in the bytes that are left (each element takes at least
 * one), so that decoding cannot be asked to allocate more than O(len) (a
 * five-byte array32 header may otherwise claim four billion elements and
 * msgpack-c reserves room for all of them up front).  The bytes must hold
 * exactly one object.
 */
int mpk_prescan(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t i = 0;
	uint64_t pending = 1; /* objects still to read */
	while (pending > 0) {
		if (i >= len || pending > len - i)
			return BG_ERR_PROTO;
		unsigned char c = p[i++];
		pending--;
		uint64_t skip = 0, add = 0;
		size_t lenbytes = 0;
		if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
			continue;
		if (c >= 0x80 && c <= 0x8f) {
			add = 2u * (c & 0x0f);
		} else if (c >= 0x90 && c <= 0x9f) {
			add = c & 0x0f;
		} else if (c >= 0xa0 && c <= 0xbf) {
			skip = c & 0x1f;
		} else {
			switch (c) {
			case 0xc4: case 0xd9: lenbytes = 1; break; /* bin8, str8 */
			case 0xc5: case 0xda: lenbytes = 2; break;
			case 0xc6: case 0xdb: lenbytes = 4; break;
			case 0xc7: lenbytes = 1, skip = 1; break;  /* ext8: + type */
			case 0xc8: lenbytes = 2, skip = 1; break;
			case 0xc9: lenbytes = 4, skip = 1; break;
			case 0xca: skip = 4; break;
			case 0xcb: skip = 8; break;
			case 0xcc: case 0xd0: skip = 1; break;
			case 0xcd: case 0xd1: skip = 2; break;
			case 0xce: case 0xd2: skip = 4; break;
			case 0xcf: case 0xd3: skip = 8; break;
			case 0xd4: skip = 2; break; /* fixext1: type + 1 */
			case 0xd5: skip = 3; break;
			case 0xd6: skip = 5; break;
			case 0xd7: skip = 9; break;
			case 0xd8: skip = 17; break;
			case 0xdc: case 0xde: lenbytes = 2; break;
			case 0xdd: case 0xdf: lenbytes = 4; break;
			default: return BG_ERR_PROTO; /* 0xc1: never used */
			}
			if (lenbytes) {
				if (len - i < lenbytes)
					return BG_ERR_PROTO;
				uint64_t n = 0;
				for (size_t k = 0; k < lenbytes; k++)
					n = (n << 8) | p[i++];
				if (c == 0xdc || c == 0xdd)
					add = n;
				else if (c == 0xde || c == 0xdf)
					add = 2 * n;
				else
					skip += n;
			}
		}
		if (skip > len - i)
			return BG_ERR_PROTO;
		i += (size_t)skip;
		pending += add;
	}
	return i == len ? 0 : BG_ERR_PROTO;
}
