/*
 * Fiber and coroutine stacks.
 *
 * A stack is one anonymous private mapping, committed lazily by the kernel
 * as the stack grows, with a guard region below it and its descriptor
 * (struct weft__stack) in its top 64 bytes:
 *
 *   map                    lo                                        top   map+map_size
 *   | guard (64 KiB)        | reserve | usable stack, grows down  <---  | desc |
 *
 * Reserve. A pooled stack (nominal size up to 1 MiB) is mapped with as
 * much again below its nominal size. It is address space only: nothing is
 * committed until touched. It exists for the scheduler's inline join
 * (sched.c, weft__join_inline): a fiber that joins a child that has not
 * started yet may run the child on its own stack, but only where the room
 * left there is at least the child's own stack size, so the child never
 * gets less stack than it asked for. The reserve makes that room exist in
 * the common case (a fiber of the default size running a child of the
 * default size). A fiber that outgrows its nominal size runs into the
 * reserve before the guard: the guard still catches every overflow of the
 * whole mapping, so stack sizes are minimums, as with threads.
 *
 * Guard. MADV_GUARD_INSTALL (Linux >= 6.13) turns the guard pages into
 * fault-on-access pages inside the same VMA, so a guarded stack costs one
 * VMA, which the kernel can even merge with its neighbours. Older kernels
 * get mprotect(PROT_NONE), which splits the mapping: two VMAs per stack.
 *
 * Map budget. A process may hold only vm.max_map_count VMAs; past that
 * mmap and mprotect fail with ENOMEM while memory remains. New stacks get
 * a guard while the process holds at most half of that many mappings (the
 * rest is the application's). The mappings are counted for real, from
 * /proc/self/maps, not estimated per stack: guards made with
 * MADV_GUARD_INSTALL take no mapping of their own and guarded neighbours
 * merge (a million stacks measured 141 mappings), while mprotect guards
 * take two. Reading the file costs a system call per page of text, so it
 * is read lazily: each guarded stack is charged what it may cost (1 or 2
 * mappings) against the room the last count left, and the file is read
 * again only when the charges use that room up (and, once a count has
 * found no room, again only every RECOUNT_EVERY unguarded stacks, or
 * sooner when guarded stacks go away). A stack is never handed out
 * unguarded while a guard can be had: the old rule, half the budget
 * charged at one mapping a stack with no count, stopped guarding after
 * 32,765 stacks although 141 mappings were in use.
 *
 * Canary stacks. Past the budget (or when mprotect itself fails, or when
 * mmap does and the stack comes from the allocator), a stack gets no
 * guard but keeps the 64 KiB below it as a gap of its own memory (the
 * same mapping, or the same allocation), and a canary word in its lowest
 * usable word. A canary alone is not enough: a frame that reaches below
 * the stack need not write that word (a big local, mostly untouched),
 * and without the gap it wrote into whatever was mapped below, another
 * stack's top, silently. With the gap such a frame lands in memory of
 * its own, and at every switch away from the stack (every park, yield and
 * exit of what runs on it: weft__ctx_check_canary) both the canary word
 * and the stack pointer are checked; a frame still reaching below the
 * stack, or one that came back up over the canary, is reported as an
 * overflow. What this cannot catch: a single frame larger than the gap
 * that writes past it, or an overflow that stayed within the gap and
 * returned without touching the canary (which harmed nothing but the
 * gap). So creating a stack fails only when memory itself runs out.
 *
 * Pool. Sizes up to 1 MiB are rounded up to a power of two (16 KiB, 32
 * KiB, ... 1 MiB: address space only, pages are committed as touched), and
 * each such class is reused: a per-thread cache of CACHE_MAX stacks (no
 * lock, no system call), backed by a global list of up to POOL_MAX (and
 * 256 MiB) under a mutex. Everything past that, and every larger stack, is
 * unmapped. A stack that
 * goes back to the pool after its owner touched more than KEEP bytes gets
 * the pages below the top KEEP bytes dropped (MADV_DONTNEED), so one deep
 * call does not pin memory for the life of the process. "Touched" is
 * judged by eight probe words in the page just below that line: dropped
 * and fresh pages read as zero, and a call chain that went deeper wrote
 * frames all across that page (a frame made only of a zero-filled buffer
 * spanning the whole page would fool it: best effort, by design, since
 * this runs on every fiber exit). Reading an untouched page maps the
 * shared zero page: probing commits no memory.
 */
#include "ctx/ctx.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define DEFAULT_SIZE   (256u * 1024)
#define MIN_SIZE       (16u * 1024)
#define MAX_SIZE       ((size_t)1 << 30)
#define GUARD_SIZE     (64u * 1024)
#define DESC_SIZE      64u
#define KEEP           (64u * 1024)
#define NCLASSES       7
#define POOLED_MAX     ((size_t)MIN_SIZE << (NCLASSES - 1)) /* 1 MiB */
#define CACHE_MAX      16
#define POOL_MAX       1024
#define RECOUNT_EVERY  256   /* unguarded stacks between counts that find no room */

_Static_assert(sizeof(weft__stack) <= DESC_SIZE, "stack descriptor must fit its slot");

static size_t page_size(void)
{
    static size_t ps;
    if (!ps)
        ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

static size_t round_pages(size_t n)
{
    size_t ps = page_size();
    return (n + ps - 1) & ~(ps - 1);
}

static size_t size_class(size_t size, int *cls);

/* ---- settings and counters ------------------------------------------ */

/* Relaxed throughout: each is a setting or a statistic read on its own;
 * no other memory is published through them. */
static _Atomic size_t default_size = DEFAULT_SIZE;
static _Atomic size_t map_budget = (size_t)-1;  /* -1: not read yet */
static _Atomic int    guard_madv = 0;           /* 0 unknown, 1 works, -1 not */
static _Atomic size_t guarded_vmas;             /* charged to live guarded stacks */
/* Charges that the last count of the mappings allows (-1: not counted
 * yet), and the stacks refused a guard since that count. */
static _Atomic size_t guard_allow = (size_t)-1;
static _Atomic size_t refused_since_count;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic size_t stacks_mapped;
static _Atomic size_t stacks_trimmed;

size_t weft__stack_default_size(void)
{
    return atomic_load_explicit(&default_size, memory_order_relaxed);
}

int weft__stack_set_default_size(size_t size)
{
    if (size == 0)
        size = DEFAULT_SIZE;
    if (size < MIN_SIZE || size > MAX_SIZE)
        return -EINVAL;
    int cls;
    atomic_store_explicit(&default_size, size_class(size, &cls), memory_order_relaxed);
    return 0;
}

static size_t read_map_budget(void)
{
    size_t b = atomic_load_explicit(&map_budget, memory_order_relaxed);
    if (b != (size_t)-1)
        return b;
    long max = 65530; /* the kernel's default, if /proc cannot be read */
    int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[32];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n > 0) {
            buf[n] = 0;
            long v = strtol(buf, NULL, 10);
            if (v > 0)
                max = v;
        }
        close(fd);
    }
    b = (size_t)max / 2;
    atomic_store_explicit(&map_budget, b, memory_order_relaxed);
    return b;
}

void weft__stack_set_map_budget(size_t vmas)
{
    atomic_store_explicit(&map_budget, vmas, memory_order_relaxed);
    /* Count afresh against the new budget. */
    atomic_store_explicit(&guard_allow, (size_t)-1, memory_order_relaxed);
    atomic_store_explicit(&refused_since_count, 0, memory_order_relaxed);
}

void weft__stack_force_mprotect_guard(int on)
{
    atomic_store_explicit(&guard_madv, on ? -1 : 0, memory_order_relaxed);
}

uint64_t weft__stack_canary_value(const weft__stack *s)
{
    return UINT64_C(0x5745465443414e41) ^ (uint64_t)(uintptr_t)s->lo;
}

/* ---- making and unmaking ------------------------------------------- */

static unsigned vmas_of(const weft__stack *s)
{
    return s->kind == WEFT__STACK_GUARD_MADV ? 1 : s->kind == WEFT__STACK_GUARD_MPROT ? 2 : 0;
}

static void finish_desc(weft__stack *s, void *map, size_t map_size, size_t guard,
                        size_t nominal, unsigned kind)
{
    s->map = map;
    s->map_size = map_size;
    s->guard = guard;
    s->lo = (char *)map + guard;
    s->top = (char *)s;
    s->size = nominal;
    s->kind = kind;
    s->next = NULL;
    s->vg_id = 0;
    if (kind == WEFT__STACK_CANARY_MMAP || kind == WEFT__STACK_CANARY_HEAP) {
        uint64_t v = weft__stack_canary_value(s);
        memcpy(s->lo, &v, sizeof v);
    }
#if WEFT__VALGRIND
    s->vg_id = VALGRIND_STACK_REGISTER(s->lo, s->top);
#endif
}

/* The mappings this process holds now: the lines of /proc/self/maps. 0
 * if the file cannot be read. It allocates nothing, reading into a
 * static buffer (it may run when memory is short, and on a small fiber
 * stack), and leaves errno alone. With count_lock held. */
static size_t count_mappings(void)
{
    static char buf[16384];
    int saved = errno;
    size_t n = 0;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        for (;;) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            for (ssize_t i = 0; i < r; i++)
                n += buf[i] == '\n';
        }
        close(fd);
    }
    errno = saved;
    return n;
}

/* May a new stack have a guard that costs up to `per` more mappings? See
 * "Map budget" at the top. Any thread. */
static int guard_affordable(size_t per)
{
    size_t charged = atomic_load_explicit(&guarded_vmas, memory_order_relaxed);
    size_t allow = atomic_load_explicit(&guard_allow, memory_order_relaxed);
    if (allow != (size_t)-1) {
        if (charged + per <= allow)
            return 1;
        /* No room by the last count: count again at the first refusal
         * after it, then only every RECOUNT_EVERY refusals. */
        if (atomic_fetch_add_explicit(&refused_since_count, 1, memory_order_relaxed) %
                RECOUNT_EVERY != 0)
            return 0;
    }
    size_t budget = read_map_budget();
    pthread_mutex_lock(&count_lock);
    size_t held = count_mappings();
    charged = atomic_load_explicit(&guarded_vmas, memory_order_relaxed);
    if (held == 0)
        allow = budget; /* cannot count: charges alone, as an estimate */
    else if (held <= budget)
        allow = charged + (budget - held);
    else /* over: guarded stacks must go before guards come back */
        allow = charged > held - budget ? charged - (held - budget) : 0;
    atomic_store_explicit(&guard_allow, allow, memory_order_relaxed);
    atomic_store_explicit(&refused_since_count, charged + per <= allow ? 0 : 1,
                          memory_order_relaxed);
    pthread_mutex_unlock(&count_lock);
    return charged + per <= allow;
}

/* Try to guard [addr, addr+len); returns the stack kind, or 0. */
static unsigned install_guard(void *addr, size_t len)
{
    if (atomic_load_explicit(&guard_madv, memory_order_relaxed) >= 0) {
        if (madvise(addr, len, MADV_GUARD_INSTALL) == 0) {
            atomic_store_explicit(&guard_madv, 1, memory_order_relaxed);
            return WEFT__STACK_GUARD_MADV;
        }
        if (errno == EINVAL || errno == ENOSYS)
            atomic_store_explicit(&guard_madv, -1, memory_order_relaxed);
    }
    if (mprotect(addr, len, PROT_NONE) == 0)
        return WEFT__STACK_GUARD_MPROT;
    return 0;
}

/* The reserve below a stack of this nominal size (see the top). */
static size_t stack_reserve(size_t nominal)
{
    return nominal <= POOLED_MAX ? nominal : 0;
}

static weft__stack *stack_map(size_t nominal)
{
    /* The GUARD_SIZE below the stack is its guard if one can be had, and
     * its gap otherwise (see "Canary stacks" at the top). */
    size_t per = atomic_load_explicit(&guard_madv, memory_order_relaxed) > 0 ? 1 : 2;
    size_t len = GUARD_SIZE + stack_reserve(nominal) + nominal;
    void *map = mmap(NULL, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    unsigned kind = 0;
    if (map != MAP_FAILED) {
        if (guard_affordable(per))
            kind = install_guard(map, GUARD_SIZE); /* 0: out of VMAs after all */
        if (!kind)
            kind = WEFT__STACK_CANARY_MMAP;
    } else {
        if (errno != ENOMEM)
            return NULL;
        /* mmap itself is out of VMAs: the allocator still has memory in
         * mappings it already holds. */
        len = GUARD_SIZE + nominal;
        map = aligned_alloc(page_size(), len);
        if (!map) {
            errno = ENOMEM;
            return NULL;
        }
        /* Probes and the high-water scan expect zeros; the gap below is
         * never read. */
        memset((char *)map + GUARD_SIZE, 0, nominal);
        kind = WEFT__STACK_CANARY_HEAP;
    }
    weft__stack *s = (weft__stack *)(void *)((char *)map + len - DESC_SIZE);
    finish_desc(s, map, len, GUARD_SIZE, nominal, kind);
    atomic_fetch_add_explicit(&guarded_vmas, vmas_of(s), memory_order_relaxed);
    atomic_fetch_add_explicit(&stacks_mapped, 1, memory_order_relaxed);
    return s;
}

static void stack_unmap(weft__stack *s)
{
#if WEFT__VALGRIND
    if (s->vg_id)
        VALGRIND_STACK_DEREGISTER(s->vg_id);
#endif
    atomic_fetch_sub_explicit(&guarded_vmas, vmas_of(s), memory_order_relaxed);
    atomic_fetch_sub_explicit(&stacks_mapped, 1, memory_order_relaxed);
    if (s->kind == WEFT__STACK_CANARY_HEAP)
        free(s->map);
    else
        munmap(s->map, s->map_size);
}

/* Drop the pages of a stack that went deeper than KEEP. Called on every
 * return to the pool, so it reads one page at most: a call chain deeper
 * than KEEP wrote its frames across the whole page just below the keep
 * line, and return addresses, saved registers and locals leave non-zero
 * words in it; eight probes spread over that page see them. */
#if WEFT__ASAN
__attribute__((no_sanitize_address))
#endif
static void stack_trim(weft__stack *s)
{
    char *line = s->top + DESC_SIZE - KEEP; /* top of the mapping - KEEP */
    if (line <= s->lo + 2 * page_size())
        return;
#if WEFT__VALGRIND
    /* Memcheck marks what lies below a stack pointer as inaccessible; the
     * stack is ours again and the probes read it on purpose. */
    VALGRIND_MAKE_MEM_DEFINED(line - page_size(), page_size());
#endif
    int touched = 0;
    for (int i = 0; i < 8 && !touched; i++)
        touched = *(volatile uint64_t *)(void *)(line - 8 - (size_t)i * 512) != 0;
    if (!touched)
        return;
    if (s->kind == WEFT__STACK_CANARY_HEAP) {
        memset(s->lo, 0, (size_t)(line - s->lo));
    } else {
        size_t len = (size_t)(line - s->lo) & ~(page_size() - 1);
        madvise(s->lo, len, MADV_DONTNEED);
    }
    if (s->kind == WEFT__STACK_CANARY_MMAP || s->kind == WEFT__STACK_CANARY_HEAP) {
        uint64_t v = weft__stack_canary_value(s);
        memcpy(s->lo, &v, sizeof v);
    }
    atomic_fetch_add_explicit(&stacks_trimmed, 1, memory_order_relaxed);
}

#if WEFT__ASAN
__attribute__((no_sanitize_address))
#endif
size_t weft__stack_used(const weft__stack *s)
{
    const char *p = s->lo;
#if WEFT__VALGRIND
    VALGRIND_MAKE_MEM_DEFINED(s->lo, (size_t)(s->top - s->lo));
#endif
    if (s->kind == WEFT__STACK_CANARY_MMAP || s->kind == WEFT__STACK_CANARY_HEAP)
        p += sizeof(uint64_t);
    for (; p < s->top; p += sizeof(uint64_t))
        if (*(const volatile uint64_t *)(const void *)p != 0)
            break;
    return (size_t)(s->top - p);
}

/* ---- pool ------------------------------------------------------------ */

/*
 * Size classes: powers of two from MIN_SIZE to POOLED_MAX, each with its
 * own per-thread cache and global list. Larger stacks are made and
 * unmapped one by one. The per-thread cache is reached through one
 * initial-exec pointer (8 bytes of static TLS, so dlopen stays possible)
 * and allocated on a thread's first put.
 */
#define POOL_BYTES ((size_t)256 << 20) /* per class, at most */
#define MIN_SHIFT  14
_Static_assert(MIN_SIZE == (size_t)1 << MIN_SHIFT, "MIN_SHIFT is log2(MIN_SIZE)");

struct cache {
    weft__stack *slot[NCLASSES][CACHE_MAX];
    unsigned     n[NCLASSES];
};

static __thread struct cache *tcache __attribute__((tls_model("initial-exec")));
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static weft__stack *pool_head[NCLASSES];   /* with pool_lock held */
/* Written with pool_lock held; read without it only as a hint (relaxed:
 * a stale value costs one needless lock or one fresh mapping). */
static _Atomic size_t pool_len[NCLASSES];
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t cache_key;

/* The size a request is served with, and its class (-1: not pooled). */
static size_t size_class(size_t size, int *cls)
{
    size = round_pages(size < MIN_SIZE ? MIN_SIZE : size);
    if (size > POOLED_MAX) {
        *cls = -1;
        return size;
    }
    int c = 0;
    size_t cs = MIN_SIZE;
    while (cs < size) {
        cs <<= 1;
        c++;
    }
    *cls = c;
    return cs;
}

/* The class of a size size_class() has already served (a stack's own
 * size, the default): a power of two from MIN_SIZE up to POOLED_MAX, or a
 * larger one (-1). The get and put fast paths, without the loop. */
static inline int served_class(size_t size)
{
    return size <= POOLED_MAX ? __builtin_ctzl(size) - MIN_SHIFT : -1;
}

static size_t pool_cap(int cls)
{
    size_t cap = POOL_BYTES / ((size_t)MIN_SIZE << cls);
    return cap < POOL_MAX ? cap : POOL_MAX;
}

static void pool_push_or_unmap(weft__stack *s, int cls)
{
    pthread_mutex_lock(&pool_lock);
    if (atomic_load_explicit(&pool_len[cls], memory_order_relaxed) < pool_cap(cls)) {
        s->next = pool_head[cls];
        pool_head[cls] = s;
        atomic_fetch_add_explicit(&pool_len[cls], 1, memory_order_relaxed);
        s = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    if (s) {
        stack_unmap(s);
    }
}

/* Thread exit: the cache goes to the global pool. */
static void cache_flush(void *p)
{
    struct cache *c = p;
    for (int cls = 0; cls < NCLASSES; cls++)
        while (c->n[cls] > 0)
            pool_push_or_unmap(c->slot[cls][--c->n[cls]], cls);
    tcache = NULL;
    free(c);
}

static void key_init(void)
{
    pthread_key_create(&cache_key, cache_flush);
}

/* The calling thread's cache, made on first use; NULL if out of memory
 * (the global pool still works). */
static struct cache *cache_get(void)
{
    struct cache *c = tcache;
    if (__builtin_expect(c != NULL, 1))
        return c;
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_once(&key_once, key_init);
    pthread_setspecific(cache_key, c);
    tcache = c;
    return c;
}

size_t weft__stack_served_size(size_t size)
{
    int cls;
    if (size == 0)
        return weft__stack_default_size();
    return size > MAX_SIZE ? SIZE_MAX : size_class(size, &cls);
}

weft__stack *weft__stack_get(size_t size)
{
    int cls;
    if (size == 0) {
        size = weft__stack_default_size(); /* served already */
        cls = served_class(size);
    } else if (size > MAX_SIZE) {
        errno = EINVAL;
        return NULL;
    } else {
        size = size_class(size, &cls);
    }
    if (cls >= 0) {
        weft__stack *s = NULL;
        struct cache *c = tcache;
        if (c && c->n[cls] > 0) {
            s = c->slot[cls][--c->n[cls]];
        } else if (atomic_load_explicit(&pool_len[cls], memory_order_relaxed) > 0) {
            pthread_mutex_lock(&pool_lock);
            if ((s = pool_head[cls]) != NULL) {
                pool_head[cls] = s->next;
                atomic_fetch_sub_explicit(&pool_len[cls], 1, memory_order_relaxed);
            }
            pthread_mutex_unlock(&pool_lock);
        }
        if (s) {
            return s;
        }
    }
    return stack_map(size);
}

void weft__stack_put(weft__stack *s)
{
    if (!s)
        return;
#if WEFT__ASAN
    /* Frames that never returned (a freed suspended coroutine) leave
     * poisoned redzones behind; the next owner starts clean. */
    __asan_unpoison_memory_region(s->lo, (size_t)(s->top - s->lo));
#endif
    int cls = served_class(s->size);
    if (cls < 0) {
        stack_unmap(s);
        return;
    }
    stack_trim(s);
#if WEFT__VALGRIND
    /* The next owner starts with nothing defined on it. */
    VALGRIND_MAKE_MEM_UNDEFINED(s->lo, (size_t)(s->top - s->lo));
#endif
    s->next = NULL;
    struct cache *c = cache_get();
    if (c && c->n[cls] < CACHE_MAX) {
        c->slot[cls][c->n[cls]++] = s;
        return;
    }
    pool_push_or_unmap(s, cls);
}

void weft__stack_pool_drain(void)
{
    struct cache *c = tcache;
    for (int cls = 0; cls < NCLASSES; cls++) {
        while (c && c->n[cls] > 0) {
            stack_unmap(c->slot[cls][--c->n[cls]]);
        }
        pthread_mutex_lock(&pool_lock);
        weft__stack *s = pool_head[cls];
        pool_head[cls] = NULL;
        atomic_store_explicit(&pool_len[cls], 0, memory_order_relaxed);
        pthread_mutex_unlock(&pool_lock);
        while (s) {
            weft__stack *next = s->next;
            stack_unmap(s);
            s = next;
        }
    }
}

void weft__stack_stats(struct weft__stack_stats *out)
{
    out->mapped = atomic_load_explicit(&stacks_mapped, memory_order_relaxed);
    out->guarded_vmas = atomic_load_explicit(&guarded_vmas, memory_order_relaxed);
    out->trims = atomic_load_explicit(&stacks_trimmed, memory_order_relaxed);
    /* Counted here rather than on every get and put, where a shared
     * counter would be one contended cache line for all workers. */
    size_t pooled = 0;
    struct cache *c = tcache;
    for (int cls = 0; cls < NCLASSES; cls++) {
        pooled += atomic_load_explicit(&pool_len[cls], memory_order_relaxed);
        if (c)
            pooled += c->n[cls];
    }
    out->pooled = pooled;
}
