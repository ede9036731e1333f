/* Memory for the runtime's own objects: jemalloc's sized API when the
 * build has jemalloc, the C library's otherwise. Internal. */
#ifndef WEFT_ALLOC_H
#define WEFT_ALLOC_H

#include <stddef.h>
#include <stdlib.h>

#if defined(WEFT_HAVE_JEMALLOC) && WEFT_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
/* n > 0. NULL on failure. Any thread. */
static inline void *weft__malloc(size_t n) { return mallocx(n, 0); }
static inline void *weft__calloc(size_t n) { return mallocx(n, MALLOCX_ZERO); }
/* p from weft__malloc/calloc with the same n, or NULL. Any thread. */
static inline void weft__free(void *p, size_t n) { if (p) sdallocx(p, n, 0); }
/* n > 0, a multiple of align (a power of two). NULL on failure. */
static inline void *weft__aligned_alloc(size_t align, size_t n)
{
    return mallocx(n, MALLOCX_ALIGN(align));
}
/* p from weft__aligned_alloc with the same align and n, or NULL. */
static inline void weft__aligned_free(void *p, size_t align, size_t n)
{
    if (p)
        sdallocx(p, n, MALLOCX_ALIGN(align));
}
#else
static inline void *weft__malloc(size_t n) { return malloc(n); }
static inline void *weft__calloc(size_t n) { return calloc(1, n); }
static inline void weft__free(void *p, size_t n) { (void)n; free(p); }
static inline void *weft__aligned_alloc(size_t align, size_t n) { return aligned_alloc(align, n); }
static inline void weft__aligned_free(void *p, size_t align, size_t n)
{
    (void)align;
    (void)n;
    free(p);
}
#endif

#endif
