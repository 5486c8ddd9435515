/* SPDX-License-Identifier: Apache-2.0
 * ClassBench rule files and traces, read the way dpdk_app/classbench.py reads them:
 *
 *   rules: "@src/len dst/len sport_lo : sport_hi dport_lo : dport_hi proto/mask [flags/mask]",
 *          whitespace separated; blank and '#' lines skipped; line k (0-based among rules) gets
 *          rule_id k + 1 and priority N - k (line order = first-match order); the flags column
 *          is ignored, as DPDK's test-acl ignores it. IPv4 prefixes become IPv4-mapped /96+len;
 *          IPv6 prefixes are accepted as an extension.
 *   trace: "src dst sport dport proto [flags] rule", decimal; an address above 2^32-1 is a full
 *          128-bit IPv6 address; rule = 0-based index of the expected first match, -1 for none.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_byteorder.h>

#include "bench.h"
#include "classify.h"

#define MAX_TOKENS 12

static int
split(char *line, char **tok)
{
	int n = 0;

	for (char *save = NULL, *t = strtok_r(line, " \t\r\n", &save); t != NULL;
	     t = strtok_r(NULL, " \t\r\n", &save)) {
		if (n == MAX_TOKENS)
			return -1;
		tok[n++] = t;
	}
	return n;
}

static int
parse_prefix(const char *s, uint8_t addr[16], uint8_t *plen)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	char *end;
	unsigned long len;
	size_t alen;

	if (slash == NULL || (alen = (size_t)(slash - s)) >= sizeof(buf))
		return -1;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	errno = 0;
	len = strtoul(slash + 1, &end, 10);
	if (errno || end == slash + 1 || *end != '\0')
		return -1;
	memset(addr, 0, 16);
	if (inet_pton(AF_INET, buf, addr + 12) == 1) {
		if (len > 32)
			return -1;
		addr[10] = addr[11] = 0xff;
		len += 96;
	} else if (inet_pton(AF_INET6, buf, addr) != 1 || len > 128) {
		return -1;
	}
	*plen = (uint8_t)len;
	for (unsigned int bit = (unsigned int)len; bit < 128; bit++) /* clear host bits */
		addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
	return 0;
}

static int
parse_ulong(const char *s, int base, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, base);
	return (errno || end == s || *end != '\0' || *out > max || s[0] == '-') ? -1 : 0;
}

static int
parse_masked(const char *s, unsigned long max, uint32_t *value, uint32_t *mask)
{
	char buf[32];
	const char *slash = strchr(s, '/');
	unsigned long v, m;

	if (slash == NULL || (size_t)(slash - s) >= sizeof(buf))
		return -1;
	memcpy(buf, s, (size_t)(slash - s));
	buf[slash - s] = '\0';
	if (parse_ulong(buf, 16, max, &v) < 0 || parse_ulong(slash + 1, 16, max, &m) < 0)
		return -1;
	*value = (uint32_t)v;
	*mask = (uint32_t)m;
	return 0;
}

static int
parse_rule_line(char *line, struct nicfw_rule *r)
{
	char *t[MAX_TOKENS];
	int n = split(line, t);
	unsigned long lo, hi, lo2, hi2;
	uint32_t pv, pm, fv, fm;

	if ((n != 9 && n != 10) || t[0][0] != '@' || strcmp(t[3], ":") || strcmp(t[6], ":"))
		return -1;
	memset(r, 0, sizeof(*r));
	if (parse_prefix(t[0] + 1, r->src_addr, &r->src_plen) < 0 ||
	    parse_prefix(t[1], r->dst_addr, &r->dst_plen) < 0 ||
	    parse_ulong(t[2], 10, 65535, &lo) < 0 || parse_ulong(t[4], 10, 65535, &hi) < 0 ||
	    parse_ulong(t[5], 10, 65535, &lo2) < 0 || parse_ulong(t[7], 10, 65535, &hi2) < 0 ||
	    lo > hi || lo2 > hi2 || parse_masked(t[8], 0xff, &pv, &pm) < 0 ||
	    (n == 10 && parse_masked(t[9], 0xffff, &fv, &fm) < 0))
		return -1;
	r->sport_lo = (uint16_t)lo;
	r->sport_hi = (uint16_t)hi;
	r->dport_lo = (uint16_t)lo2;
	r->dport_hi = (uint16_t)hi2;
	r->proto = (uint8_t)pv;
	r->proto_mask = (uint8_t)pm;
	r->action = NICFW_ACT_ALLOW;
	return 0;
}

/* Grow *buf to hold at least need elements of size sz. */
static int
grow(void **buf, uint32_t *cap, uint32_t need, size_t sz)
{
	if (need <= *cap)
		return 0;
	uint32_t c = *cap ? *cap * 2 : 1024;
	while (c < need)
		c *= 2;
	void *p = realloc(*buf, sz * c);
	if (p == NULL)
		return -1;
	*buf = p;
	*cap = c;
	return 0;
}

int
classbench_read_rules(const char *path, struct nicfw_rule **rules, uint32_t *n, char *err,
		      size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	uint32_t cap = 0, count = 0, lineno = 0;
	struct nicfw_rule *rs = NULL;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = line + strspn(line, " \t\r\n");

		lineno++;
		if (*p == '\0' || *p == '#')
			continue;
		if (grow((void **)&rs, &cap, count + 1, sizeof(*rs)) < 0 ||
		    parse_rule_line(p, &rs[count]) < 0) {
			snprintf(err, errlen, "%s:%u: not a ClassBench rule", path, lineno);
			free(rs);
			fclose(f);
			return -1;
		}
		count++;
	}
	fclose(f);
	for (uint32_t k = 0; k < count; k++) {
		rs[k].rule_id = k + 1;
		rs[k].priority = count - k;
	}
	*rules = rs;
	*n = count;
	return 0;
}

/* A trace address: decimal up to 2^128 - 1; <= 2^32 - 1 means IPv4 (mapped). */
static int
parse_trace_addr(const char *s, uint8_t addr[16])
{
	unsigned __int128 v = 0;

	if (*s == '\0')
		return -1;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		unsigned __int128 nv = v * 10 + (unsigned)(*p - '0');
		if (nv / 10 != v)
			return -1; /* overflow */
		v = nv;
	}
	if (v <= 0xffffffffu) {
		memset(addr, 0, 16);
		addr[10] = addr[11] = 0xff;
		v |= (unsigned __int128)0xffff << 32;
	}
	for (int i = 15; i >= 0; i--, v >>= 8)
		addr[i] = (uint8_t)v;
	return 0;
}

int
classbench_read_trace(const char *path, struct nicfw_key **keys, int64_t **expected, uint32_t *n,
		      bool *has_expected, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[512];
	uint32_t kcap = 0, ecap = 0, count = 0, lineno = 0;
	struct nicfw_key *ks = NULL;
	int64_t *ex = NULL;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	*has_expected = true;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *t[MAX_TOKENS];
		int nt;
		unsigned long sp, dp, proto, flags;
		long rule;
		char *end;

		lineno++;
		nt = split(line, t);
		if (nt == 0 || t[0][0] == '#')
			continue;
		if (grow((void **)&ks, &kcap, count + 1, sizeof(*ks)) < 0 ||
		    grow((void **)&ex, &ecap, count + 1, sizeof(*ex)) < 0)
			goto bad;
		struct nicfw_key *k = &ks[count];
		memset(k, 0, sizeof(*k));
		if ((nt != 6 && nt != 7) || parse_trace_addr(t[0], k->src) < 0 ||
		    parse_trace_addr(t[1], k->dst) < 0 || parse_ulong(t[2], 10, 65535, &sp) < 0 ||
		    parse_ulong(t[3], 10, 65535, &dp) < 0 || parse_ulong(t[4], 10, 255, &proto) < 0 ||
		    (nt == 7 && parse_ulong(t[5], 10, 65535, &flags) < 0))
			goto bad;
		errno = 0;
		rule = strtol(t[nt - 1], &end, 10);
		if (errno || *end != '\0' || rule < -1)
			goto bad;
		k->proto = (uint8_t)proto;
		k->sport = rte_cpu_to_be_16((uint16_t)sp);
		k->dport = rte_cpu_to_be_16((uint16_t)dp);
		if (addr_is_v4_mapped(k->src) && addr_is_v4_mapped(k->dst))
			k->flags = NICFW_KEY_V4;
		ex[count++] = rule;
	}
	fclose(f);
	*keys = ks;
	*expected = ex;
	*n = count;
	return 0;
bad:
	snprintf(err, errlen, "%s:%u: not a trace line (src dst sport dport proto [flags] rule)",
		 path, lineno);
	free(ks);
	free(ex);
	fclose(f);
	return -1;
}
