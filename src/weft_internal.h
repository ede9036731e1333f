/* Shared internal declarations of libweft. Never installed. */
#ifndef WEFT_INTERNAL_H
#define WEFT_INTERNAL_H

#include <stddef.h>
#include <string.h>

#include <weft.h>

/* Copy a user-supplied name into a fixed buffer, truncating, always
 * NUL-terminated; NULL gives the empty name. */
static inline void weft__copy_name(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = 0;
}

#endif
