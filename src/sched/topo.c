/*
 * hwloc-based topology discovery; see topo.h.
 *
 * Usable CPUs are hwloc's allowed cpuset (which already excludes CPUs
 * outside the cgroup cpuset) intersected with the calling thread's
 * affinity mask, which the worker threads inherit (the thread's, not the
 * process's: the caller may be bound more narrowly). A core counts once however many hardware threads it has:
 * two workers on the two threads of one core would compete for the same
 * execution units, and fibers gain nothing from SMT that more fibers per
 * worker do not give them.
 */
#define _GNU_SOURCE
#include "sched/topo.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned affinity_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? (unsigned)n : 1;
}

static int cache_id(hwloc_topology_t hw, hwloc_obj_t core, hwloc_obj_type_t type)
{
    hwloc_obj_t o = hwloc_get_ancestor_obj_by_type(hw, type, core);
    return o ? (int)o->logical_index : -1;
}

/* The calling thread's affinity as an hwloc bitmap; NULL on failure. */
static hwloc_bitmap_t thread_affinity(hwloc_topology_t hw)
{
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set)
        return NULL;
    if (hwloc_get_cpubind(hw, set, HWLOC_CPUBIND_THREAD) != 0)
        hwloc_bitmap_copy(set, hwloc_topology_get_allowed_cpuset(hw));
    return set;
}

static int load_cores(struct topo *tp)
{
    hwloc_topology_t hw = tp->hw;
    hwloc_bitmap_t allowed = thread_affinity(hw);
    if (!allowed)
        return -ENOMEM;
    hwloc_bitmap_and(allowed, allowed, hwloc_topology_get_allowed_cpuset(hw));

    hwloc_obj_type_t type = HWLOC_OBJ_CORE;
    int total = hwloc_get_nbobjs_by_type(hw, type);
    if (total <= 0) { /* no core objects (some VMs): one "core" per PU */
        type = HWLOC_OBJ_PU;
        total = hwloc_get_nbobjs_by_type(hw, type);
    }
    tp->cores = calloc(total > 0 ? (size_t)total : 1, sizeof *tp->cores);
    if (!tp->cores) {
        hwloc_bitmap_free(allowed);
        return -ENOMEM;
    }
    unsigned n = 0;
    for (int i = 0; i < total; i++) {
        hwloc_obj_t core = hwloc_get_obj_by_type(hw, type, (unsigned)i);
        if (!core || !core->cpuset || !hwloc_bitmap_intersects(core->cpuset, allowed))
            continue;
        struct topo_core *c = &tp->cores[n];
        c->cpus = hwloc_bitmap_alloc();
        if (!c->cpus)
            break;
        hwloc_bitmap_and(c->cpus, core->cpuset, allowed);
        c->l2 = cache_id(hw, core, HWLOC_OBJ_L2CACHE);
        c->l3 = cache_id(hw, core, HWLOC_OBJ_L3CACHE);
        c->numa = core->nodeset ? hwloc_bitmap_first(core->nodeset) : -1;
        n++;
    }
    hwloc_bitmap_free(allowed);
    tp->ncores = n;
    return n > 0 ? 0 : -ENODEV;
}

/*
 * Loading a topology reads hundreds of files under /sys and costs
 * milliseconds, so the machine's topology is loaded once per process and
 * kept (read-only, which hwloc allows from any thread). What may change
 * between runs, the calling thread's affinity and the cgroup's cpuset
 * and quota, is applied per run in load_cores and topo_cpu_quota. The
 * topology is deliberately not restricted to the binding at load time
 * (HWLOC_TOPOLOGY_FLAG_RESTRICT_TO_CPUBINDING), since a later run may be
 * allowed more CPUs; load_cores intersects with the affinity instead.
 */
static hwloc_topology_t machine;
static pthread_once_t machine_once = PTHREAD_ONCE_INIT;

static void load_machine(void)
{
    hwloc_topology_t hw;
    if (hwloc_topology_init(&hw) != 0)
        return;
    hwloc_topology_set_flags(hw, HWLOC_TOPOLOGY_FLAG_IS_THISSYSTEM);
    if (hwloc_topology_load(hw) != 0) {
        hwloc_topology_destroy(hw);
        return;
    }
    machine = hw;
}

int topo_load(struct topo *tp)
{
    memset(tp, 0, sizeof *tp);
    tp->quota = topo_cpu_quota();
    pthread_once(&machine_once, load_machine);
    tp->hw = machine;
    if (tp->hw && load_cores(tp) == 0)
        return 0;
    topo_free(tp);
    tp->quota = topo_cpu_quota();
    /* Flat fallback: one "core" per CPU we may run on, no pinning. */
    tp->ncores = affinity_count();
    return 0;
}

void topo_free(struct topo *tp)
{
    if (tp->cores) {
        for (unsigned i = 0; i < tp->ncores; i++)
            hwloc_bitmap_free(tp->cores[i].cpus);
        free(tp->cores);
    }
    memset(tp, 0, sizeof *tp); /* the machine topology stays loaded */
}

unsigned topo_default_workers(const struct topo *tp)
{
    unsigned n = tp->ncores ? tp->ncores : 1;
    if (tp->quota && tp->quota < n)
        n = tp->quota;
    return n;
}

int topo_pin(const struct topo *tp, unsigned core)
{
    if (!tp->hw || !tp->cores)
        return -ENOTSUP;
    const struct topo_core *c = &tp->cores[core % tp->ncores];
    if (hwloc_set_cpubind(tp->hw, c->cpus, HWLOC_CPUBIND_THREAD) != 0)
        return -errno;
    return 0;
}

static int distance(const struct topo *tp, unsigned a, unsigned b)
{
    if (!tp->cores)
        return TOPO_FAR;
    a %= tp->ncores;
    b %= tp->ncores;
    const struct topo_core *x = &tp->cores[a], *y = &tp->cores[b];
    if (a == b || (x->l2 >= 0 && x->l2 == y->l2))
        return TOPO_SHARE_L2;
    if (x->l3 >= 0 && x->l3 == y->l3)
        return TOPO_SHARE_L3;
    if (x->numa >= 0 && x->numa == y->numa)
        return TOPO_SAME_NUMA;
    return TOPO_FAR;
}

void topo_victims(const struct topo *tp, unsigned n, unsigned self,
                  unsigned *order, unsigned level_end[TOPO_LEVELS])
{
    unsigned k = 0;
    for (int level = 0; level < TOPO_LEVELS; level++) {
        for (unsigned v = 0; v < n; v++)
            if (v != self && distance(tp, self, v) == level)
                order[k++] = v;
        level_end[level] = k;
    }
}

/* ---- cgroup v2 cpu.max ---------------------------------------------- */

static int read_small_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return 0;
}

/* "max PERIOD" -> 0; "QUOTA PERIOD" -> ceil(QUOTA / PERIOD). */
unsigned topo_parse_cpu_max(const char *s)
{
    char *end;
    if (strncmp(s, "max", 3) == 0)
        return 0;
    unsigned long long quota = strtoull(s, &end, 10);
    if (end == s)
        return 0;
    unsigned long long period = strtoull(end, NULL, 10);
    if (quota == 0 || period == 0)
        return 0;
    unsigned long long cpus = (quota + period - 1) / period;
    return cpus > UINT_MAX ? UINT_MAX : (unsigned)cpus;
}

unsigned topo_cpu_quota(void)
{
    return topo_cpu_quota_from("/proc/self/cgroup", "/sys/fs/cgroup");
}

unsigned topo_cpu_quota_from(const char *proc_cgroup, const char *root)
{
    char buf[4096];
    if (read_small_file(proc_cgroup, buf, sizeof buf) != 0)
        return 0;
    /* The cgroup v2 entry is the one with hierarchy id 0: "0::/path". */
    char *line = strstr(buf, "0::");
    while (line && line != buf && line[-1] != '\n')
        line = strstr(line + 1, "0::");
    if (!line)
        return 0;
    char *path = line + 3;
    path[strcspn(path, "\n")] = 0;

    char dir[PATH_MAX];
    int len = snprintf(dir, sizeof dir, "%s%s", root, path);
    if (len <= 0 || (size_t)len >= sizeof dir)
        return 0;
    while (len > 1 && dir[len - 1] == '/')
        dir[--len] = 0;
    unsigned best = 0;
    /* The quota of an ancestor limits us too: walk up to the mount. */
    for (;;) {
        char file[PATH_MAX + 16], val[128];
        snprintf(file, sizeof file, "%s/cpu.max", dir);
        if (read_small_file(file, val, sizeof val) == 0) {
            unsigned q = topo_parse_cpu_max(val);
            if (q && (!best || q < best))
                best = q;
        }
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < strlen(root))
            break;
        *slash = 0;
    }
    return best;
}
