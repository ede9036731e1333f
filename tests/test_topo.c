/*
 * test-topo: the parts of topology handling that do not depend on the
 * machine the tests run on: cgroup v2 cpu.max parsing and the walk up the
 * cgroup hierarchy (against a fake tree in a temporary directory), and the
 * order in which a worker visits victims (against a synthetic topology).
 */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sched/topo.h"

#include "test_util.h"

START_TEST(cpu_max_values)
{
    ck_assert_uint_eq(topo_parse_cpu_max("max 100000\n"), 0);
    ck_assert_uint_eq(topo_parse_cpu_max("100000 100000\n"), 1);
    ck_assert_uint_eq(topo_parse_cpu_max("150000 100000\n"), 2); /* rounds up */
    ck_assert_uint_eq(topo_parse_cpu_max("400000 100000"), 4);
    ck_assert_uint_eq(topo_parse_cpu_max("50000 100000\n"), 1);
    ck_assert_uint_eq(topo_parse_cpu_max("1 1000000\n"), 1);
    ck_assert_uint_eq(topo_parse_cpu_max(""), 0);
    ck_assert_uint_eq(topo_parse_cpu_max("garbage"), 0);
    ck_assert_uint_eq(topo_parse_cpu_max("100000"), 0);     /* no period */
    ck_assert_uint_eq(topo_parse_cpu_max("0 100000"), 0);
    ck_assert_uint_eq(topo_parse_cpu_max("100000 0"), 0);
}
END_TEST

static char tmpdir[PATH_MAX];

static void write_file(const char *rel, const char *text)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void make_dir(const char *rel)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    ck_assert_int_eq(mkdir(path, 0755), 0);
}

static unsigned quota(void)
{
    char proc[PATH_MAX + 16], root[PATH_MAX + 16];
    snprintf(proc, sizeof proc, "%s/cgroup", tmpdir);
    snprintf(root, sizeof root, "%s/fs", tmpdir);
    return topo_cpu_quota_from(proc, root);
}

START_TEST(cpu_quota_walks_up_the_hierarchy)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/weft-topo-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    make_dir("fs");
    make_dir("fs/svc");
    make_dir("fs/svc/app");
    /* cgroup v1 lines come first; only "0::" is the v2 membership. */
    write_file("cgroup", "12:cpu,cpuacct:/elsewhere\n0::/svc/app\n");

    ck_assert_uint_eq(quota(), 0); /* no cpu.max anywhere */
    write_file("fs/svc/app/cpu.max", "max 100000\n");
    ck_assert_uint_eq(quota(), 0); /* unlimited */
    write_file("fs/svc/cpu.max", "300000 100000\n");
    ck_assert_uint_eq(quota(), 3); /* a parent's limit applies */
    write_file("fs/svc/app/cpu.max", "150000 100000\n");
    ck_assert_uint_eq(quota(), 2); /* the smallest wins */
    write_file("fs/svc/cpu.max", "100000 100000\n");
    ck_assert_uint_eq(quota(), 1);
    write_file("fs/cpu.max", "50000 100000\n"); /* the root itself */
    ck_assert_uint_eq(quota(), 1);

    write_file("cgroup", "1:name=systemd:/x\n"); /* no v2 entry */
    ck_assert_uint_eq(quota(), 0);
    char missing[PATH_MAX + 32];
    snprintf(missing, sizeof missing, "%s/nonexistent", tmpdir);
    ck_assert_uint_eq(topo_cpu_quota_from(missing, "/"), 0);

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(victims_nearest_first)
{
    /* Ten cores: L2 shared by pairs, L3 by fours, NUMA node 0 holds cores
     * 0-7 (two L3 groups), node 1 holds 8-9. */
    struct topo_core cores[10];
    for (int i = 0; i < 10; i++) {
        cores[i].cpus = NULL;
        cores[i].l2 = i / 2;
        cores[i].l3 = i / 4;
        cores[i].numa = i < 8 ? 0 : 1;
    }
    struct topo tp = { .hw = NULL, .ncores = 10, .cores = cores, .quota = 0 };
    unsigned order[9], level_end[TOPO_LEVELS];

    topo_victims(&tp, 10, 0, order, level_end);
    static const unsigned want0[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    for (int i = 0; i < 9; i++)
        ck_assert_uint_eq(order[i], want0[i]);
    ck_assert_uint_eq(level_end[TOPO_SHARE_L2], 1);
    ck_assert_uint_eq(level_end[TOPO_SHARE_L3], 3);
    ck_assert_uint_eq(level_end[TOPO_SAME_NUMA], 7);
    ck_assert_uint_eq(level_end[TOPO_FAR], 9);

    topo_victims(&tp, 10, 5, order, level_end);
    static const unsigned want5[9] = { 4, 6, 7, 0, 1, 2, 3, 8, 9 };
    for (int i = 0; i < 9; i++)
        ck_assert_uint_eq(order[i], want5[i]);
    ck_assert_uint_eq(level_end[TOPO_SHARE_L2], 1);
    ck_assert_uint_eq(level_end[TOPO_SHARE_L3], 3);
    ck_assert_uint_eq(level_end[TOPO_SAME_NUMA], 7);

    topo_victims(&tp, 10, 9, order, level_end);
    ck_assert_uint_eq(order[0], 8);
    ck_assert_uint_eq(level_end[TOPO_SHARE_L2], 1);
    ck_assert_uint_eq(level_end[TOPO_SAME_NUMA], 1); /* nobody else on node 1 */
    ck_assert_uint_eq(level_end[TOPO_FAR], 9);

    /* More workers than cores: worker w runs on core w % ncores, so
     * workers 0 and 10 share a core (the nearest level). */
    unsigned order12[11], end12[TOPO_LEVELS];
    topo_victims(&tp, 12, 0, order12, end12);
    ck_assert_uint_eq(end12[TOPO_SHARE_L2], 3);
    ck_assert_uint_eq(order12[0], 1);
    ck_assert_uint_eq(order12[1], 10);
    ck_assert_uint_eq(order12[2], 11);

    /* Without a topology every victim is "far", in index order. */
    struct topo none = { .hw = NULL, .ncores = 4, .cores = NULL, .quota = 0 };
    unsigned o4[3], e4[TOPO_LEVELS];
    topo_victims(&none, 4, 2, o4, e4);
    ck_assert_uint_eq(o4[0], 0);
    ck_assert_uint_eq(o4[1], 1);
    ck_assert_uint_eq(o4[2], 3);
    ck_assert_uint_eq(e4[TOPO_SHARE_L3], 0);
    ck_assert_uint_eq(e4[TOPO_FAR], 3);
}
END_TEST

static Suite *topo_suite(void)
{
    Suite *s = suite_create("topo");
    TCase *tc = tcase_create("topo");
    tcase_add_test(tc, cpu_max_values);
    tcase_add_test(tc, cpu_quota_walks_up_the_hierarchy);
    tcase_add_test(tc, victims_nearest_first);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(topo_suite)
