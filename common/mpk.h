/*
 * mpk.h: small conveniences over msgpack-c for the map-shaped messages banger
 * exchanges (RPC frames, undo records, job params).
 *
 * Lookups return pointers into the msgpack_object tree; they stay valid as long
 * as the msgpack_unpacked / zone that owns the tree.
 */
#ifndef BANGER_MPK_H
#define BANGER_MPK_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Value for key in a map object, or NULL (also NULL when obj is not a map). */
const msgpack_object *mpk_get(const msgpack_object *map, const char *key);
/* Typed getters: 0 on success, BG_ERR_NOENT if absent, BG_ERR_INVAL on a
 * wrong type.  Strings are not NUL-terminated: use the length. */
int mpk_get_int(const msgpack_object *map, const char *key, int64_t *out);
int mpk_get_bool(const msgpack_object *map, const char *key, bool *out);
int mpk_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len);
/* A copy of a string field, NUL-terminated and owned by the caller; NULL if
 * absent or not a string. */
char *mpk_dup_str(const msgpack_object *map, const char *key);
/* Integer value of an object (positive or negative int); false otherwise. */
bool mpk_as_int(const msgpack_object *o, int64_t *out);
/* True when o is a str equal to s. */
bool mpk_str_eq(const msgpack_object *o, const char *s);

/* Packing helpers: write a string, or a key/value pair into a map being
 * packed (the caller packs the map header with the right count). */
void mpk_pack_str(msgpack_packer *pk, const char *s);
void mpk_pack_strn(msgpack_packer *pk, const char *s, size_t n);
void mpk_kv_str(msgpack_packer *pk, const char *k, const char *v); /* v may be NULL: nil */
void mpk_kv_int(msgpack_packer *pk, const char *k, int64_t v);
void mpk_kv_bool(msgpack_packer *pk, const char *k, bool v);
void mpk_kv_nil(msgpack_packer *pk, const char *k);
/* Pack a pre-encoded msgpack value (raw bytes) under key k; nil when len 0. */
void mpk_kv_raw(msgpack_packer *pk, const char *k, const void *raw, size_t len);

/* Check that buf holds exactly one msgpack object whose containers claim no
 * more elements than there are bytes left, without allocating: run before
 * msgpack-c decodes untrusted bytes (it reserves room for a container's
 * declared count up front).  0 or BG_ERR_PROTO. */
int mpk_prescan(const void *buf, size_t len);

/* Deep-copy an object into a freshly encoded buffer (caller frees *out). */
int mpk_encode(const msgpack_object *o, char **out, size_t *len);

#endif
