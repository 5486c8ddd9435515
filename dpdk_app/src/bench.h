/* SPDX-License-Identifier: Apache-2.0
 * Bench mode: ClassBench rule file + trace -> rte_acl build, classify, verify; one JSON line.
 */
#ifndef NICFW_BENCH_H
#define NICFW_BENCH_H

#include "nicfw.h"

int bench_main(int argc, char **argv);
/* --bench-fastpath: the established-flow path through dp_process_burst (bench_fastpath.c). */
int bench_fastpath_main(int argc, char **argv);

/* ClassBench parsing (also usable by tests of the C side). Return 0 or -1 with err filled. */
int classbench_read_rules(const char *path, struct nicfw_rule **rules, uint32_t *n, char *err,
			  size_t errlen);
int classbench_read_trace(const char *path, struct nicfw_key **keys, int64_t **expected,
			  uint32_t *n, bool *has_expected, char *err, size_t errlen);

#endif /* NICFW_BENCH_H */
