/* SPDX-License-Identifier: Apache-2.0
 * Reject responses: what a reject rule answers instead of silently dropping. TCP gets a RST
 * (RFC 9293 3.10.7.1), everything else ICMP "communication administratively prohibited" (type 3
 * code 13) or ICMPv6 "administratively prohibited" (type 1 code 1). The response goes back
 * through the service port, encapsulated, with egress_port = the packet's ingress port.
 * No response is ever sent to a RST, an ICMP error, a fragment or a multicast/broadcast address.
 */
#include <string.h>

#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "service.h"

#define ETH_LEN 14
#define ICMP6_QUOTE_MAX (1280 - 40 - 8)

static inline uint16_t
rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void
wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void
wr32(uint8_t *p, uint32_t v)
{
	wr16(p, (uint16_t)(v >> 16));
	wr16(p + 2, (uint16_t)v);
}

static uint32_t
sum16(uint32_t sum, const uint8_t *p, uint32_t len)
{
	uint32_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += rd16(p + i);
	if (i < len)
		sum += (uint32_t)p[i] << 8;
	return sum;
}

static uint16_t
fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Checksum of an L4 segment with the IPv4 or IPv6 pseudo-header. */
static uint16_t
l4_cksum(const uint8_t *src, const uint8_t *dst, bool v6, uint8_t proto, const uint8_t *seg,
	 uint32_t len)
{
	uint32_t sum = sum16(0, src, v6 ? 16 : 4);

	sum = sum16(sum, dst, v6 ? 16 : 4);
	sum += proto + (len & 0xffff) + (len >> 16);
	return fold(sum16(sum, seg, len));
}

static bool
response_due(const uint8_t *f, const struct nicfw_pkt *pi)
{
	const struct nicfw_key *k = &pi->key;

	if (pi->frag != 0 || (f[pi->l2_off] & 1)) /* fragment, L2 multicast/broadcast */
		return false;
	if (pi->is_v6) {
		if (k->dst[0] == 0xff || k->src[0] == 0xff)
			return false;
		static const uint8_t zero[16];
		if (memcmp(k->src, zero, 16) == 0)
			return false;
	} else {
		uint8_t d = k->dst[12], s = k->src[12];
		if (d >= 224 || s >= 224 || rd32(k->src + 12) == 0)
			return false;
	}
	if (k->proto == 6)
		return pi->l4_off != 0 && !(pi->tcp_flags & 0x04);
	if (k->proto == 1 && pi->l4_off != 0)
		return pi->icmp_type == 8 || pi->icmp_type == 13; /* queries, never errors */
	if (k->proto == 58 && pi->l4_off != 0)
		return pi->icmp_type == 128;
	return true;
}

struct rte_mbuf *
service_reject(const uint8_t *f, const struct nicfw_pkt *pi, uint32_t rule_id,
	       struct rte_mempool *pool)
{
	const struct nicfw_key *k = &pi->key;
	const uint8_t *ip = f + pi->l3_off;
	bool v6 = pi->is_v6 != 0, tcp = k->proto == 6;
	uint32_t l2_len = pi->l3_off - pi->l2_off, ip_hl = v6 ? 40 : 20;
	uint32_t quote = 0, l4_len, total;
	struct rte_mbuf *m;
	uint8_t *o;

	if (!response_due(f, pi))
		return NULL;
	if (!tcp) {
		if (v6)
			quote = RTE_MIN((uint32_t)pi->l3_len, (uint32_t)ICMP6_QUOTE_MAX);
		else /* the IP header and the first 64 bits of its payload (RFC 792) */
			quote = RTE_MIN((uint32_t)pi->l3_len,
					(uint32_t)(ip[0] & 0x0f) * 4 + 8);
	}
	l4_len = tcp ? 20 : 8 + quote;
	total = ETH_LEN + NICFW_SERVICE_HDR_LEN + l2_len + ip_hl + l4_len;
	m = rte_pktmbuf_alloc(pool);
	if (m == NULL)
		return NULL;
	o = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)total);
	if (o == NULL) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	memset(o, 0, total);

	/* Outer Ethernet and service header, turned around. */
	memcpy(o, f + 6, 6);
	memcpy(o + 6, f, 6);
	wr16(o + 12, NICFW_SERVICE_ETHERTYPE);
	uint8_t *s = o + ETH_LEN;
	wr16(s, pi->svc.egress_port);
	wr16(s + 2, pi->svc.ingress_port);
	s[4] = NICFW_REASON_REJECT;
	s[5] = pi->svc.direction == 1 ? 2 : (pi->svc.direction == 2 ? 1 : 0);
	wr16(s + 6, pi->svc.workload_id);
	wr32(s + 8, rule_id);

	/* Inner Ethernet (and VLAN tag) back to the sender. */
	uint8_t *l2 = s + NICFW_SERVICE_HDR_LEN;
	memcpy(l2, f + pi->l2_off, l2_len);
	memcpy(l2, f + pi->l2_off + 6, 6);
	memcpy(l2 + 6, f + pi->l2_off, 6);

	uint8_t *oip = l2 + l2_len, *ol4 = oip + ip_hl;
	const uint8_t *src = v6 ? ip + 24 : ip + 16, *dst = v6 ? ip + 8 : ip + 12;
	uint8_t proto = tcp ? 6 : (v6 ? 58 : 1);
	if (v6) {
		oip[0] = 0x60;
		wr16(oip + 4, (uint16_t)l4_len);
		oip[6] = proto;
		oip[7] = 64;
		memcpy(oip + 8, src, 16);
		memcpy(oip + 24, dst, 16);
	} else {
		oip[0] = 0x45;
		wr16(oip + 2, (uint16_t)(20 + l4_len));
		wr16(oip + 6, 0x4000); /* DF */
		oip[8] = 64;
		oip[9] = proto;
		memcpy(oip + 12, src, 4);
		memcpy(oip + 16, dst, 4);
		wr16(oip + 10, fold(sum16(0, oip, 20)));
	}

	if (tcp) {
		const uint8_t *t = f + pi->l4_off;
		uint32_t doff = (uint32_t)(t[12] >> 4) * 4;
		uint32_t seg = pi->l4_len - doff + !!(t[13] & 0x02) + !!(t[13] & 0x01);

		memcpy(ol4, t + 2, 2);
		memcpy(ol4 + 2, t, 2);
		if (t[13] & 0x10) { /* ACK set: RST with seq = their ack */
			memcpy(ol4 + 4, t + 8, 4);
			ol4[13] = 0x04;
		} else {
			wr32(ol4 + 8, rd32(t + 4) + seg);
			ol4[13] = 0x14;
		}
		ol4[12] = 5 << 4;
	} else {
		ol4[0] = v6 ? 1 : 3;
		ol4[1] = v6 ? 1 : 13;
		memcpy(ol4 + 8, ip, quote);
	}
	wr16(ol4 + (tcp ? 16 : 2),
	     (!tcp && !v6) ? fold(sum16(0, ol4, l4_len))
			   : l4_cksum(src, dst, v6, proto, ol4, l4_len));
	return m;
}
