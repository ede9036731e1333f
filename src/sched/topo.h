/*
 * Topology discovery for the runtime: how many workers by default, where
 * to pin them, and in which order a worker should look for victims to
 * steal from. Internal. The machine topology is loaded once per process;
 * the usable cores are worked out again for every weft_run by the thread
 * calling it.
 */
#ifndef WEFT_SCHED_TOPO_H
#define WEFT_SCHED_TOPO_H

#include <hwloc.h>

/* Distance levels between two workers, nearest first. */
enum {
    TOPO_SHARE_L2 = 0,   /* same core, or cores sharing an L2 cache      */
    TOPO_SHARE_L3,       /* cores sharing an L3 cache                    */
    TOPO_SAME_NUMA,      /* same NUMA node                               */
    TOPO_FAR,            /* anything else                                */
    TOPO_LEVELS
};

struct topo_core {
    hwloc_cpuset_t cpus; /* the core's CPUs this process may use          */
    int l2, l3, numa;    /* ids of its L2, L3, NUMA node; -1: unknown     */
};

struct topo {
    hwloc_topology_t hw;     /* the process's shared machine topology;    */
                             /* NULL when hwloc could not be loaded       */
    unsigned ncores;         /* usable physical cores (>= 1)              */
    struct topo_core *cores; /* ncores entries (NULL without hwloc)       */
    unsigned quota;          /* CPU cap from cgroup cpu.max; 0: none      */
};

/* Discover the usable cores: physical cores (not hardware threads) with
 * at least one CPU in the calling thread's affinity mask and the cgroup
 * cpuset, and the cgroup v2 CPU quota. Falls back to the CPU count of the
 * affinity mask, without pinning, if hwloc fails. 0 or -ENOMEM. */
int  topo_load(struct topo *tp);
void topo_free(struct topo *tp);

/* Default worker count: the usable cores, capped by the CPU quota. */
unsigned topo_default_workers(const struct topo *tp);

/* Pin the calling thread to usable core `core % ncores`. 0, or a negative
 * errno (the thread then runs unpinned). Any thread, topology loaded. */
int  topo_pin(const struct topo *tp, unsigned core);

/* Fill order[0 .. n-2] with the workers other than `self` (worker w runs
 * on core w % ncores) sorted by distance level, and level_end[k] with the
 * index one past the last victim at level <= k. */
void topo_victims(const struct topo *tp, unsigned n, unsigned self,
                  unsigned *order, unsigned level_end[TOPO_LEVELS]);

/* ceil(quota / period) from the cgroup v2 cpu.max of this process's
 * cgroup and its ancestors (the smallest wins); 0 when none is set or
 * cgroup v2 is not mounted. */
unsigned topo_cpu_quota(void);
/* The same, reading the cgroup membership from proc_cgroup (a file in the
 * format of /proc/self/cgroup) and the hierarchy under root (the cgroup2
 * mount): for tests. Any thread. */
unsigned topo_cpu_quota_from(const char *proc_cgroup, const char *root);
/* One cpu.max value: "max PERIOD" -> 0, "QUOTA PERIOD" ->
 * ceil(QUOTA / PERIOD), anything unparsable -> 0. */
unsigned topo_parse_cpu_max(const char *s);

#endif
