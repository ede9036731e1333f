/*
 * A small strict JSON reader for the dump tests: parses a whole document
 * into a tree (RFC 8259 syntax; strings keep their escapes decoded to
 * UTF-8, numbers as double), or fails. Header-only; test code only.
 */
#ifndef WEFT_TESTS_JSON_MINI_H
#define WEFT_TESTS_JSON_MINI_H

#include <stdlib.h>
#include <string.h>

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
    enum jtype t;
    double num;          /* J_NUM; J_BOOL: 0 or 1 */
    char *str;           /* J_STR */
    size_t n;            /* J_ARR, J_OBJ: items */
    struct jval *items;  /* J_ARR, J_OBJ */
    char **keys;         /* J_OBJ */
};

struct jparser {
    const char *p, *end;
    int depth;
};

static int jparse_value(struct jparser *s, struct jval *v);

static void jskip(struct jparser *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int jlit(struct jparser *s, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int jhex(struct jparser *s, unsigned *out)
{
    if (s->end - s->p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *s->p++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static int jstring(struct jparser *s, char **out)
{
    if (s->p >= s->end || *s->p != '"')
        return -1;
    s->p++;
    size_t cap = 32, len = 0;
    char *b = malloc(cap);
    if (!b)
        return -1;
    for (;;) {
        if (s->p >= s->end)
            goto bad;
        unsigned char c = (unsigned char)*s->p++;
        unsigned cp;
        if (c == '"')
            break;
        if (c < 0x20)
            goto bad;
        if (len + 5 > cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb)
                goto bad;
            b = nb;
        }
        if (c != '\\') {
            b[len++] = (char)c;
            continue;
        }
        if (s->p >= s->end)
            goto bad;
        c = (unsigned char)*s->p++;
        switch (c) {
        case '"': case '\\': case '/': b[len++] = (char)c; continue;
        case 'b': b[len++] = '\b'; continue;
        case 'f': b[len++] = '\f'; continue;
        case 'n': b[len++] = '\n'; continue;
        case 'r': b[len++] = '\r'; continue;
        case 't': b[len++] = '\t'; continue;
        case 'u':
            if (jhex(s, &cp))
                goto bad;
            if (cp >= 0xd800 && cp < 0xdc00) {
                unsigned lo;
                if (jlit(s, "\\u") || jhex(s, &lo) || lo < 0xdc00 || lo >= 0xe000)
                    goto bad;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                goto bad;
            }
            if (cp < 0x80) {
                b[len++] = (char)cp;
            } else if (cp < 0x800) {
                b[len++] = (char)(0xc0 | (cp >> 6));
                b[len++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                b[len++] = (char)(0xe0 | (cp >> 12));
                b[len++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                b[len++] = (char)(0x80 | (cp & 0x3f));
            } else {
                b[len++] = (char)(0xf0 | (cp >> 18));
                b[len++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                b[len++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                b[len++] = (char)(0x80 | (cp & 0x3f));
            }
            continue;
        default:
            goto bad;
        }
    }
    b[len] = 0;
    *out = b;
    return 0;
bad:
    free(b);
    return -1;
}

static int jnumber(struct jparser *s, double *out)
{
    const char *q = s->p;
    if (q < s->end && *q == '-')
        q++;
    if (q >= s->end)
        return -1;
    if (*q == '0')
        q++;
    else if (*q >= '1' && *q <= '9')
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    else
        return -1;
    if (q < s->end && *q == '.') {
        q++;
        if (q >= s->end || *q < '0' || *q > '9')
            return -1;
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < s->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < s->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= s->end || *q < '0' || *q > '9')
            return -1;
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    }
    char tmp[64];
    size_t n = (size_t)(q - s->p);
    if (n >= sizeof tmp)
        return -1;
    memcpy(tmp, s->p, n);
    tmp[n] = 0;
    *out = strtod(tmp, NULL);
    s->p = q;
    return 0;
}

static void jfree(struct jval *v)
{
    if (v->t == J_STR)
        free(v->str);
    if (v->t == J_ARR || v->t == J_OBJ) {
        for (size_t i = 0; i < v->n; i++) {
            jfree(&v->items[i]);
            if (v->keys)
                free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
    memset(v, 0, sizeof *v);
}

static int jpush(struct jval *v, size_t *cap, struct jval *item, char *key)
{
    if (v->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        struct jval *ni = realloc(v->items, nc * sizeof *ni);
        if (!ni)
            return -1;
        v->items = ni;
        if (v->t == J_OBJ) {
            char **nk = realloc(v->keys, nc * sizeof *nk);
            if (!nk)
                return -1;
            v->keys = nk;
        }
        *cap = nc;
    }
    v->items[v->n] = *item;
    if (v->t == J_OBJ)
        v->keys[v->n] = key;
    v->n++;
    return 0;
}

static int jcontainer(struct jparser *s, struct jval *v, int obj)
{
    v->t = obj ? J_OBJ : J_ARR;
    size_t cap = 0;
    s->p++;
    jskip(s);
    if (s->p < s->end && *s->p == (obj ? '}' : ']')) {
        s->p++;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        jskip(s);
        if (obj) {
            if (jstring(s, &key))
                return -1;
            jskip(s);
            if (s->p >= s->end || *s->p != ':') {
                free(key);
                return -1;
            }
            s->p++;
        }
        struct jval item;
        memset(&item, 0, sizeof item);
        if (jparse_value(s, &item) || jpush(v, &cap, &item, key)) {
            jfree(&item);
            free(key);
            return -1;
        }
        jskip(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == (obj ? '}' : ']')) {
            s->p++;
            return 0;
        }
        return -1;
    }
}

static int jparse_value(struct jparser *s, struct jval *v)
{
    memset(v, 0, sizeof *v);
    jskip(s);
    if (s->p >= s->end || ++s->depth > 64)
        return -1;
    int r;
    switch (*s->p) {
    case '{': r = jcontainer(s, v, 1); break;
    case '[': r = jcontainer(s, v, 0); break;
    case '"': v->t = J_STR; r = jstring(s, &v->str); break;
    case 't': v->t = J_BOOL; v->num = 1; r = jlit(s, "true"); break;
    case 'f': v->t = J_BOOL; r = jlit(s, "false"); break;
    case 'n': v->t = J_NULL; r = jlit(s, "null"); break;
    default: v->t = J_NUM; r = jnumber(s, &v->num); break;
    }
    s->depth--;
    return r;
}

/* Parse the whole of text[0..len). 0, or -1 (then *v is empty). */
static inline int json_parse(const char *text, size_t len, struct jval *v)
{
    struct jparser s = { text, text + len, 0 };
    if (jparse_value(&s, v) == 0) {
        jskip(&s);
        if (s.p == s.end)
            return 0;
    }
    jfree(v);
    return -1;
}

static inline void json_free(struct jval *v)
{
    jfree(v);
}

/* Member key of an object, or NULL. */
static inline const struct jval *json_get(const struct jval *o, const char *key)
{
    if (!o || o->t != J_OBJ)
        return NULL;
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0)
            return &o->items[i];
    return NULL;
}

/* The string member key, or NULL. */
static inline const char *json_str(const struct jval *o, const char *key)
{
    const struct jval *v = json_get(o, key);
    return v && v->t == J_STR ? v->str : NULL;
}

#endif
