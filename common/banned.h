/*
 * banned.h: functions banger's code must not call.
 *
 * Included (via -include) in every translation unit of the project so that a
 * use of one of these is a compile error, as in git's banned.h.  Each has a
 * bounded replacement: snprintf, memcpy with a checked length, strtok_r.
 */
#ifndef BANGER_BANNED_H
#define BANGER_BANNED_H

#define BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef gets
#define gets(x) BANNED(gets)

#endif
