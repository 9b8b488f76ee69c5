/*
 * migrations.h: the SQL migrations embedded from schema/ at build time
 * (schema/embed.sh).  version N is the number in NNN_name.sql; they are
 * applied in order and the database's user_version records the last one.
 */
#ifndef BANGER_MIGRATIONS_H
#define BANGER_MIGRATIONS_H

struct migration {
	int version;
	const char *name;
	const char *sql;
};

extern const struct migration migrations[];
extern const int migrations_count;

#endif
