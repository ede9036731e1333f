/*
 * Unwinding suspended contexts and naming code addresses (see unwind.h).
 *
 * The walk. A suspended context's saved frame (arch/x86_64_sysv.S) holds
 * rbx, rbp, r12-r15 and the address weft__ctx_jump returns to; just above
 * it is the stack pointer the caller had. That is exactly a register set
 * at the return address, so the unwinder starts there: rip = the return
 * address, rsp = sp + 64, the callee-saved registers as saved. libdwfl
 * (elfutils) then walks the frames with each object's CFI; we give it a
 * thread of our own making (Dwfl_Thread_Callbacks) whose registers come
 * from that frame and whose memory reads come from the caller's copy of
 * the stack, or weft__peek for anything outside it. Nothing is ptrace'd
 * or stopped: the context is suspended, and a torn copy only makes a
 * wrong backtrace.
 *
 * The memo. A CFI walk costs microseconds per frame (elfutils interprets
 * the CIE and FDE programs afresh each time), too slow for a report of
 * 100,000 fibers parked in a handful of places. But a walk is a function
 * of its inputs: the starting registers and the words it reads. Which
 * pcs come out depends only on the values that become pcs (return
 * addresses) and on the values that serve as addresses: compiler-made
 * CFI computes each canonical frame address from rsp or rbp, that is
 * from stack addresses, and finds the caller's rip and saved registers
 * at fixed offsets from it. So each walk logs its reads, and one that
 * read only inside the stack is recorded with the reads that matter:
 * those whose value points into the stack (made relative to the stack's
 * top, as are the addresses), those whose value is one of the pcs it
 * produced, and zeros (an end of the walk). The rest are saved data
 * registers (a fiber's own pointers, counters), which could change the
 * walk only by serving as an address, and then the walk would have read
 * outside the stack and not been recorded. The starting registers are
 * the key: rip, the depth (top - sp), and each callee-saved register's
 * relative value when it points into the stack. Another context with the
 * same key whose stack holds the same recorded values at the same
 * relative places makes the same walk, so its pcs are reused after a
 * check of those few words (two or three per frame). Stack tops of one
 * size class lie a multiple of the page size apart, so even a CFI
 * expression that masks a stack address (realignment) commutes with the
 * translation.
 *
 * Names: dwfl_module_addrinfo (the symbol table, static functions
 * included) and dwfl_module_getsrc (DWARF line tables, when the object
 * has debug information or a separate debuginfo file is installed).
 * Without libdw, dladdr(), which knows exported symbols only.
 */
#define _GNU_SOURCE
#include "ctx/unwind.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/peek.h"

#if defined(WEFT_HAVE_LIBDW) && WEFT_HAVE_LIBDW && defined(__x86_64__)
#define USE_DW 1
#include <elfutils/libdwfl.h>
#else
#define USE_DW 0
#endif

/* The saved frame, offsets from the saved sp (arch/x86_64_sysv.S). */
enum {
    SAVED_R12 = 0x08, SAVED_R13 = 0x10, SAVED_R14 = 0x18, SAVED_R15 = 0x20,
    SAVED_RBX = 0x28, SAVED_RBP = 0x30, SAVED_RET = 0x38, SAVED_SIZE = 0x40,
};

#define ARENA_CHUNK   (64u * 1024)
#define MEMO_READS    256      /* a walk that reads more is not recorded   */
#define MEMO_MAX      65536    /* records per session                      */
#define MEMO_SAME_KEY 16       /* records per key (each lookup tries them) */
#define FAKE_TID      1        /* the one "thread" our callbacks describe  */

/* ---- the session's memory --------------------------------------------- */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
};

struct symslot {
    uintptr_t key;         /* pc << 1 | is_ret; 0: empty */
    struct weft__sym sym;
};

#if USE_DW
/* The callee-saved registers of the saved frame, in the memo's key. */
static const int saved_reg_off[] = { SAVED_RBP, SAVED_RBX, SAVED_R12, SAVED_R13, SAVED_R14,
                                     SAVED_R15 };
#define NSAVED (int)(sizeof saved_reg_off / sizeof *saved_reg_off)

struct log_read {
    uintptr_t addr, val;
};

struct memo_read {
    uintptr_t off;         /* address - top */
    uintptr_t val;         /* value - top when val_rel */
    uint8_t   val_rel;
};

struct memo_key {
    uintptr_t rip, depth;
    uintptr_t reg[NSAVED]; /* value - top when it points into the stack, else 0 */
    uint8_t   reg_rel[NSAVED];
};

struct memo {
    struct memo *next;     /* hash chain */
    struct memo_key key;
    int       npcs, nreads;
    uintptr_t *pcs;
    struct memo_read *reads;
};
#endif

struct weft__unwind {
    struct arena_chunk *arena;
    struct symslot *syms;
    size_t nsyms, symcap;  /* symcap: a power of two */
#if USE_DW
    Dwfl *dwfl;
    int attached;          /* dwfl_attach_state worked: we can walk */
    /* The walk in progress. */
    const struct weft__unwind_stack *cur;
    uintptr_t *pcs;
    int npcs, max;
    struct log_read log[MEMO_READS];
    int nlog, log_bad;     /* log_bad: overflowed, or read outside the stack */
    /* Recorded walks. */
    struct memo **memo;
    size_t memo_cap, nmemo;
#endif
};

static void *arena_alloc(struct weft__unwind *u, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct arena_chunk *c = u->arena;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->next = u->arena;
        c->used = 0;
        c->cap = cap;
        u->arena = c;
    }
    void *p = c->mem + c->used;
    c->used += n;
    return p;
}

static const char *arena_strdup(struct weft__unwind *u, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = arena_alloc(u, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static size_t hash_word(uintptr_t x)
{
    uint64_t h = (uint64_t)x * 0x9e3779b97f4a7c15ull;
    return (size_t)(h ^ (h >> 29));
}

/* ---- reading the saved frame ---------------------------------------- */

/* The word at address a, from the caller's copy when it covers a. 0 or
 * -EFAULT. */
static int read_word(const struct weft__unwind_stack *s, uintptr_t a, uintptr_t *out)
{
    if (a >= s->sp && a - s->sp + sizeof *out <= s->copy_len) {
        memcpy(out, s->copy + (a - s->sp), sizeof *out);
        return 0;
    }
    return weft__peek(out, (const void *)a, sizeof *out);
}

/* ---- the walk (libdwfl) ----------------------------------------------- */

#if USE_DW

static int in_stack(const struct weft__unwind_stack *s, uintptr_t v)
{
    return v >= s->lo && v < s->top + 64; /* the descriptor sits above top */
}

static pid_t cb_next_thread(Dwfl *dwfl, void *arg, void **thread_argp)
{
    (void)dwfl;
    (void)arg;
    (void)thread_argp;
    return 0; /* we never enumerate: each walk asks for FAKE_TID */
}

static bool cb_get_thread(Dwfl *dwfl, pid_t tid, void *arg, void **thread_argp)
{
    (void)dwfl;
    (void)tid;
    *thread_argp = arg;
    return true;
}

static bool cb_memory_read(Dwfl *dwfl, Dwarf_Addr addr, Dwarf_Word *result, void *arg)
{
    (void)dwfl;
    struct weft__unwind *u = arg;
    const struct weft__unwind_stack *s = u->cur;
    uintptr_t v;
    if (!in_stack(s, (uintptr_t)addr) || u->nlog == MEMO_READS)
        u->log_bad = 1;
    if (read_word(s, (uintptr_t)addr, &v) != 0) {
        u->log_bad = 1;
        return false;
    }
    if (u->nlog < MEMO_READS)
        u->log[u->nlog++] = (struct log_read){ (uintptr_t)addr, v };
    *result = v;
    return true;
}

static bool cb_set_initial_registers(Dwfl_Thread *thread, void *arg)
{
    struct weft__unwind *u = arg;
    const struct weft__unwind_stack *s = u->cur;
    /* DWARF numbers: rbx 3, rbp 6, rsp 7, r12-r15 12-15. */
    Dwarf_Word rbx, bp_sp[2], r12_15[4], rip;
    uintptr_t w;
    if (read_word(s, s->sp + SAVED_RET, &w) != 0)
        return false;
    rip = w;
    if (read_word(s, s->sp + SAVED_RBX, &w) != 0)
        return false;
    rbx = w;
    if (read_word(s, s->sp + SAVED_RBP, &w) != 0)
        return false;
    bp_sp[0] = w;
    bp_sp[1] = s->sp + SAVED_SIZE;
    static const int r1x[4] = { SAVED_R12, SAVED_R13, SAVED_R14, SAVED_R15 };
    for (int i = 0; i < 4; i++) {
        if (read_word(s, s->sp + (uintptr_t)r1x[i], &w) != 0)
            return false;
        r12_15[i] = w;
    }
    return dwfl_thread_state_registers(thread, 3, 1, &rbx) &&
           dwfl_thread_state_registers(thread, 6, 2, bp_sp) &&
           dwfl_thread_state_registers(thread, 12, 4, r12_15) &&
           (dwfl_thread_state_register_pc(thread, rip), true);
}

static const Dwfl_Thread_Callbacks thread_callbacks = {
    .next_thread = cb_next_thread,
    .get_thread = cb_get_thread,
    .memory_read = cb_memory_read,
    .set_initial_registers = cb_set_initial_registers,
};

static int cb_frame(Dwfl_Frame *state, void *arg)
{
    struct weft__unwind *u = arg;
    Dwarf_Addr pc;
    /* No `isactivation`: asking for it may unwind one frame further. */
    if (!dwfl_frame_pc(state, &pc, NULL) || pc == 0)
        return DWARF_CB_ABORT;
    u->pcs[u->npcs++] = (uintptr_t)pc;
    return u->npcs < u->max ? DWARF_CB_OK : DWARF_CB_ABORT;
}

/* The memo's key for s. 0, or -1 if the saved frame cannot be read. */
static int memo_key(const struct weft__unwind_stack *s, struct memo_key *k)
{
    memset(k, 0, sizeof *k);
    if (read_word(s, s->sp + SAVED_RET, &k->rip) != 0)
        return -1;
    k->depth = s->top - s->sp;
    for (int i = 0; i < NSAVED; i++) {
        uintptr_t v;
        if (read_word(s, s->sp + (uintptr_t)saved_reg_off[i], &v) != 0)
            return -1;
        if (in_stack(s, v)) {
            k->reg[i] = v - s->top;
            k->reg_rel[i] = 1;
        }
    }
    return 0;
}

static size_t memo_hash(const struct memo_key *k)
{
    size_t h = hash_word(k->rip ^ hash_word(k->depth));
    for (int i = 0; i < NSAVED; i++)
        h = hash_word(h ^ k->reg[i] ^ k->reg_rel[i]);
    return h;
}

static int memo_key_eq(const struct memo_key *a, const struct memo_key *b)
{
    if (a->rip != b->rip || a->depth != b->depth)
        return 0;
    for (int i = 0; i < NSAVED; i++)
        if (a->reg[i] != b->reg[i] || a->reg_rel[i] != b->reg_rel[i])
            return 0;
    return 1;
}

/* Do the recorded reads give the same values on s? */
static int memo_matches(const struct memo *m, const struct weft__unwind_stack *s)
{
    for (int i = 0; i < m->nreads; i++) {
        const struct memo_read *r = &m->reads[i];
        uintptr_t v;
        if (read_word(s, s->top + r->off, &v) != 0)
            return 0;
        int rel = in_stack(s, v);
        if (rel != r->val_rel || (rel ? v - s->top : v) != r->val)
            return 0;
    }
    return 1;
}

/* Does a read of value v matter to the walk that produced u->pcs? See
 * the top of the file. */
static int read_matters(const struct weft__unwind *u, const struct weft__unwind_stack *s,
                        uintptr_t v)
{
    if (v == 0 || in_stack(s, v))
        return 1;
    for (int i = 0; i < u->npcs; i++)
        if (u->pcs[i] == v)
            return 1;
    return 0;
}

static void memo_add(struct weft__unwind *u, const struct weft__unwind_stack *s,
                     const struct memo_key *key, size_t slot)
{
    if (u->nmemo >= MEMO_MAX)
        return;
    int n = 0;
    for (int i = 0; i < u->nlog; i++)
        n += read_matters(u, s, u->log[i].val);
    struct memo *m = arena_alloc(u, sizeof *m);
    uintptr_t *pcs = arena_alloc(u, (size_t)u->npcs * sizeof *pcs);
    struct memo_read *reads = arena_alloc(u, (size_t)n * sizeof *reads + 1);
    if (!m || !pcs || !reads)
        return;
    memcpy(pcs, u->pcs, (size_t)u->npcs * sizeof *pcs);
    n = 0;
    for (int i = 0; i < u->nlog; i++) {
        uintptr_t a = u->log[i].addr, v = u->log[i].val;
        if (!read_matters(u, s, v))
            continue;
        int rel = in_stack(s, v);
        reads[n++] = (struct memo_read){ a - s->top, rel ? v - s->top : v, (uint8_t)rel };
    }
    m->next = u->memo[slot];
    m->key = *key;
    m->npcs = u->npcs;
    m->nreads = n;
    m->pcs = pcs;
    m->reads = reads;
    u->memo[slot] = m;
    u->nmemo++;
}

static int walk(struct weft__unwind *u, const struct weft__unwind_stack *s,
                uintptr_t *pcs, int max)
{
    struct memo_key key;
    if (memo_key(s, &key) != 0)
        return 0;
    size_t slot = memo_hash(&key) & (u->memo_cap - 1);
    int same = 0; /* records with this key: a few at most, or we stop adding */
    for (const struct memo *m = u->memo[slot]; m; m = m->next) {
        if (!memo_key_eq(&m->key, &key))
            continue;
        same++;
        if (m->npcs <= max && memo_matches(m, s)) {
            memcpy(pcs, m->pcs, (size_t)m->npcs * sizeof *pcs);
            return m->npcs;
        }
    }
    u->cur = s;
    u->pcs = pcs;
    u->npcs = 0;
    u->max = max;
    u->nlog = 0;
    u->log_bad = 0;
    /* The return value says how the walk ended (an undefined return
     * address at the trampoline, a read that failed, our callback's
     * abort at max); the frames collected are the answer either way. */
    (void)dwfl_getthread_frames(u->dwfl, FAKE_TID, cb_frame, u);
    u->cur = NULL;
    if (u->npcs == 0) {
        pcs[0] = key.rip; /* at least the frame the switch returns to */
        u->npcs = 1;
    }
    if (!u->log_bad && same < MEMO_SAME_KEY)
        memo_add(u, s, &key, slot);
    return u->npcs;
}

static const Dwfl_Callbacks proc_callbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
};

static int dw_begin(struct weft__unwind *u)
{
    u->memo_cap = 4096;
    u->memo = calloc(u->memo_cap, sizeof *u->memo);
    if (!u->memo)
        return -ENOMEM;
    u->dwfl = dwfl_begin(&proc_callbacks);
    if (!u->dwfl)
        return 0; /* names from dladdr, resume frames only */
    dwfl_report_begin(u->dwfl);
    int r = dwfl_linux_proc_report(u->dwfl, getpid());
    dwfl_report_end(u->dwfl, NULL, NULL);
    if (r != 0) {
        dwfl_end(u->dwfl);
        u->dwfl = NULL;
        return 0;
    }
    u->attached = dwfl_attach_state(u->dwfl, NULL, getpid(), &thread_callbacks, u);
    return 0;
}

static void dw_end(struct weft__unwind *u)
{
    if (u->dwfl)
        dwfl_end(u->dwfl);
    free(u->memo);
}

/* Name pc (already moved into the call for return addresses) with the
 * module tables. 1 if a module covers it. */
static int dw_sym(struct weft__unwind *u, uintptr_t look, struct weft__sym *out)
{
    if (!u->dwfl)
        return 0;
    Dwfl_Module *m = dwfl_addrmodule(u->dwfl, (Dwarf_Addr)look);
    if (!m)
        return 0;
    const char *mod = dwfl_module_info(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    out->module = arena_strdup(u, mod);
    GElf_Off off = 0;
    GElf_Sym sym;
    const char *name = dwfl_module_addrinfo(m, (GElf_Addr)look, &off, &sym, NULL, NULL, NULL);
    if (name) {
        out->func = arena_strdup(u, name);
        out->off = (uintptr_t)off;
    }
    Dwfl_Line *line = dwfl_module_getsrc(m, (Dwarf_Addr)look);
    if (line) {
        int lineno = 0;
        const char *file = dwfl_lineinfo(line, NULL, &lineno, NULL, NULL, NULL);
        if (file) {
            out->file = arena_strdup(u, file);
            out->line = lineno;
        }
    }
    return 1;
}

#endif /* USE_DW */

/* ---- the session ------------------------------------------------------ */

struct weft__unwind *weft__unwind_begin(void)
{
    struct weft__unwind *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->symcap = 1024;
    u->syms = calloc(u->symcap, sizeof *u->syms);
    if (!u->syms) {
        free(u);
        return NULL;
    }
#if USE_DW
    if (dw_begin(u) != 0) {
        free(u->syms);
        free(u);
        return NULL;
    }
#endif
    return u;
}

void weft__unwind_end(struct weft__unwind *u)
{
    if (!u)
        return;
#if USE_DW
    dw_end(u);
#endif
    while (u->arena) {
        struct arena_chunk *next = u->arena->next;
        free(u->arena);
        u->arena = next;
    }
    free(u->syms);
    free(u);
}

int weft__unwind_full(void)
{
    return USE_DW;
}

int weft__unwind_ctx(struct weft__unwind *u, const struct weft__unwind_stack *s,
                     uintptr_t *pcs, int max)
{
    if (max <= 0 || s->sp < s->lo || s->sp + SAVED_SIZE > s->top)
        return 0;
#if USE_DW
    if (u->attached)
        return walk(u, s, pcs, max);
#else
    (void)u;
#endif
    uintptr_t rip;
    if (read_word(s, s->sp + SAVED_RET, &rip) != 0)
        return 0;
    pcs[0] = rip;
    return 1;
}

static void sym_lookup(struct weft__unwind *u, uintptr_t pc, int is_ret, struct weft__sym *out)
{
    memset(out, 0, sizeof *out);
    uintptr_t look = is_ret && pc ? pc - 1 : pc;
#if USE_DW
    if (dw_sym(u, look, out)) {
        if (out->func && is_ret)
            out->off += 1; /* shown relative to pc itself */
        return;
    }
#endif
    Dl_info di;
    if (pc && dladdr((void *)look, &di)) {
        out->module = arena_strdup(u, di.dli_fname);
        if (di.dli_sname && di.dli_saddr) {
            out->func = arena_strdup(u, di.dli_sname);
            out->off = pc - (uintptr_t)di.dli_saddr;
        }
    }
}

static int sym_grow(struct weft__unwind *u)
{
    size_t ncap = u->symcap * 2;
    struct symslot *n = calloc(ncap, sizeof *n);
    if (!n)
        return -ENOMEM;
    for (size_t i = 0; i < u->symcap; i++) {
        if (!u->syms[i].key)
            continue;
        size_t j = hash_word(u->syms[i].key) & (ncap - 1);
        while (n[j].key)
            j = (j + 1) & (ncap - 1);
        n[j] = u->syms[i];
    }
    free(u->syms);
    u->syms = n;
    u->symcap = ncap;
    return 0;
}

void weft__unwind_sym(struct weft__unwind *u, uintptr_t pc, int is_ret, struct weft__sym *out)
{
    uintptr_t key = (pc << 1) | (is_ret ? 1 : 0);
    if (!key) {
        memset(out, 0, sizeof *out);
        return;
    }
    size_t j = hash_word(key) & (u->symcap - 1);
    while (u->syms[j].key) {
        if (u->syms[j].key == key) {
            *out = u->syms[j].sym;
            return;
        }
        j = (j + 1) & (u->symcap - 1);
    }
    sym_lookup(u, pc, is_ret, out);
    if (2 * (u->nsyms + 1) > u->symcap) {
        if (sym_grow(u) != 0)
            return; /* answered, not cached */
        j = hash_word(key) & (u->symcap - 1);
        while (u->syms[j].key)
            j = (j + 1) & (u->symcap - 1);
    }
    u->syms[j].key = key;
    u->syms[j].sym = *out;
    u->nsyms++;
}
