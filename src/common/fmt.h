/* Tiny async-signal-safe formatting into a fixed buffer, for reports
 * written from signal handlers (no stdio, no malloc). Internal. */
#ifndef WEFT_FMT_H
#define WEFT_FMT_H

#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

struct weft__fmt {
    char  *buf;
    size_t cap, len;
};
#define WEFT__FMT_INIT(b) { (b), sizeof(b), 0 }

static inline void weft__fmt_str(struct weft__fmt *f, const char *s)
{
    while (*s && f->len < f->cap)
        f->buf[f->len++] = *s++;
}

static inline void weft__fmt_u64(struct weft__fmt *f, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n > 0 && f->len < f->cap)
        f->buf[f->len++] = tmp[--n];
}

static inline void weft__fmt_hex(struct weft__fmt *f, uint64_t v)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n > 0 && f->len < f->cap)
        f->buf[f->len++] = tmp[--n];
}

static inline void weft__fmt_write(const struct weft__fmt *f, int fd)
{
    size_t off = 0;
    while (off < f->len) {
        ssize_t w = write(fd, f->buf + off, f->len - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

#endif
