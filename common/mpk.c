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
