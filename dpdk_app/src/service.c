/* SPDX-License-Identifier: Apache-2.0
 * Parsing of the service encapsulation and of the inner frame.
 *
 * Everything here reads a byte buffer with an explicit length: no header is touched before the
 * length check that covers it, so a hostile frame can only end in a drop reason. Malformed means
 * dropped, always; the verdict code never sees a packet whose headers did not check out.
 */
#include <string.h>

#include "classify.h"
#include "service.h"

#define ETH_LEN 14
#define VLAN_LEN 4
#define ETYPE_VLAN 0x8100
#define ETYPE_IPV4 0x0800
#define ETYPE_IPV6 0x86DD

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20

#define IPV6_MAX_EXT 8

static inline uint16_t
be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One's-complement sum of an IPv4 header; a valid header sums to 0xffff. */
static uint16_t
ipv4_hdr_sum(const uint8_t *p, unsigned int len)
{
	uint32_t sum = 0;

	for (unsigned int i = 0; i + 1 < len; i += 2)
		sum += be16(p + i);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

static bool
tcp_flags_valid(uint8_t f)
{
	f &= 0x3f;
	if (f == 0)
		return false; /* null scan */
	if ((f & TCP_SYN) && (f & (TCP_FIN | TCP_RST)))
		return false;
	/* After the SYN every segment carries ACK; FIN/PSH/URG without it are scans. */
	if (!(f & TCP_ACK) && (f & (TCP_FIN | TCP_PSH | TCP_URG)))
		return false;
	return true;
}

/* L4 header at frame[l4 .. l4 + l4_len); first_frag: more fragments follow. */
static int
parse_l4(const uint8_t *f, struct nicfw_pkt *pi, bool first_frag)
{
	const uint8_t *l4 = f + pi->l4_off;
	uint32_t len = pi->l4_len;
	struct nicfw_key *k = &pi->key;

	switch (k->proto) {
	case 6: { /* TCP */
		if (len < 20)
			return DROP_BAD_L4; /* also RFC 1858 tiny first fragments */
		unsigned int doff = (unsigned int)(l4[12] >> 4) * 4;
		if (doff < 20 || doff > len)
			return DROP_BAD_L4;
		if (be16(l4) == 0 || be16(l4 + 2) == 0)
			return DROP_BAD_L4;
		pi->tcp_flags = l4[13];
		if (!tcp_flags_valid(pi->tcp_flags))
			return DROP_BAD_TCP_FLAGS;
		memcpy(&k->sport, l4, 2);
		memcpy(&k->dport, l4 + 2, 2);
		return PARSE_OK;
	}
	case 17: { /* UDP */
		if (len < 8)
			return DROP_BAD_L4;
		uint16_t ulen = be16(l4 + 4);
		/* A first fragment's UDP length covers the whole datagram, beyond this packet. */
		if (ulen < 8 || (!first_frag && ulen > len) || be16(l4 + 2) == 0)
			return DROP_BAD_L4;
		memcpy(&k->sport, l4, 2);
		memcpy(&k->dport, l4 + 2, 2);
		return PARSE_OK;
	}
	case 1:  /* ICMP, in IPv4 only */
	case 58: /* ICMPv6, in IPv6 only */
		if ((k->proto == 1) == (pi->is_v6 != 0)) {
			pi->l4_off = 0; /* keyed as an unknown protocol: ports 0 */
			return PARSE_OK;
		}
		if (len < 8)
			return DROP_BAD_L4;
		pi->icmp_type = l4[0];
		memcpy(&k->sport, l4 + 4, 2); /* identifier: top 16 bits of "rest" */
		memcpy(&k->dport, l4, 2); /* type << 8 | code, in network order */
		return PARSE_OK;
	default:
		pi->l4_off = 0;
		return PARSE_OK;
	}
}

static int
parse_ipv4(const uint8_t *f, uint32_t len, struct nicfw_pkt *pi)
{
	uint32_t off = pi->l3_off;
	const uint8_t *ip = f + off;
	struct nicfw_key *k = &pi->key;

	if (off + 20 > len)
		return DROP_TRUNCATED;
	unsigned int ihl = (unsigned int)(ip[0] & 0x0f) * 4;
	if ((ip[0] >> 4) != 4 || ihl < 20)
		return DROP_BAD_IPV4;
	if (off + ihl > len)
		return DROP_TRUNCATED;
	uint16_t tot = be16(ip + 2);
	if (tot < ihl)
		return DROP_BAD_IPV4;
	if (off + tot > len)
		return DROP_TRUNCATED;
	if (ipv4_hdr_sum(ip, ihl) != 0xffff)
		return DROP_BAD_IPV4;
	uint16_t frag = be16(ip + 6);
	if (frag & 0x8000)
		return DROP_BAD_IPV4; /* reserved flag */
	uint16_t frag_off = frag & 0x1fff;
	bool more = (frag & 0x2000) != 0;

	k->proto = ip[9];
	memset(k->src, 0, 10);
	k->src[10] = k->src[11] = 0xff;
	memcpy(k->src + 12, ip + 12, 4);
	memset(k->dst, 0, 10);
	k->dst[10] = k->dst[11] = 0xff;
	memcpy(k->dst + 12, ip + 16, 4);
	k->flags |= NICFW_KEY_V4;
	pi->l3_len = tot;
	pi->l4_off = (uint16_t)(off + ihl);
	pi->l4_len = (uint16_t)(tot - ihl);
	pi->frag = frag_off != 0 ? 2 : more;
	if (frag_off != 0) {
		/* RFC 1858: a TCP fragment at offset 8 can only be rewriting the first one's header. */
		if (k->proto == 6 && frag_off == 1)
			return DROP_BAD_L4;
		k->flags |= NICFW_KEY_FRAG;
		pi->l4_off = 0;
		return PARSE_OK;
	}
	return parse_l4(f, pi, more);
}

/*
 * Walk the IPv6 extension headers from f[*cur] (next header *nh) to the upper-layer protocol,
 * never past end. Stops after a fragment header whose offset is not 0 (*frag = 2: no L4 header
 * follows); *frag = 1 for a first fragment. False for a chain the parser refuses (bad_ipv6).
 */
static bool
ipv6_walk(const uint8_t *f, uint32_t end, uint32_t *cur, uint8_t *nh, uint8_t *frag)
{
	for (int i = 0;; i++) {
		uint8_t h = *nh;
		bool ext = h == 0 || h == 43 || h == 60 || h == 51 || h == 44;
		if (ext && i == IPV6_MAX_EXT)
			return false; /* a longer chain only serves to hide the L4 header */
		if (h == 0 || h == 43 || h == 60 || h == 51) {
			if (*cur + 8 > end)
				return false;
			uint32_t hlen = h == 51 ? (f[*cur + 1] + 2u) * 4 : (f[*cur + 1] + 1u) * 8;
			if (*cur + hlen > end)
				return false;
			if (h == 0 && i != 0)
				return false; /* hop-by-hop only directly after the header */
			if (h == 43 && f[*cur + 2] == 0)
				return false; /* routing header type 0 (RFC 5095) */
			*nh = f[*cur];
			*cur += hlen;
		} else if (h == 44) {
			if (*cur + 8 > end)
				return false;
			uint16_t fo = be16(f + *cur + 2) >> 3;
			bool more = (f[*cur + 3] & 1) != 0;
			*nh = f[*cur];
			*cur += 8;
			*frag = fo != 0 ? 2 : more;
			if (fo != 0)
				return true;
		} else {
			return true;
		}
	}
}

static int
parse_ipv6(const uint8_t *f, uint32_t len, struct nicfw_pkt *pi)
{
	uint32_t off = pi->l3_off;
	const uint8_t *ip = f + off;
	struct nicfw_key *k = &pi->key;

	if (off + 40 > len)
		return DROP_TRUNCATED;
	if ((ip[0] >> 4) != 6)
		return DROP_BAD_IPV6;
	uint16_t plen = be16(ip + 4);
	uint8_t nh = ip[6];
	if (plen == 0 && nh != 59)
		return DROP_BAD_IPV6; /* jumbograms are not supported */
	if (off + 40u + plen > len)
		return DROP_TRUNCATED;
	memcpy(k->src, ip + 8, 16);
	memcpy(k->dst, ip + 24, 16);
	/* IPv4-mapped addresses must not appear on the wire (RFC 4942): never key them as IPv4. */
	if (addr_is_v4_mapped(k->src) || addr_is_v4_mapped(k->dst))
		return DROP_BAD_IPV6;
	pi->is_v6 = 1;
	pi->l3_len = (uint16_t)(40 + plen);

	uint32_t cur = off + 40, end = off + 40 + plen;
	uint8_t frag = 0;
	if (!ipv6_walk(f, end, &cur, &nh, &frag))
		return DROP_BAD_IPV6;
	pi->frag = frag;
	if (frag == 2) {
		k->proto = nh;
		k->flags |= NICFW_KEY_FRAG;
		pi->l4_off = 0;
		return PARSE_OK;
	}
	k->proto = nh;
	pi->l4_off = (uint16_t)cur;
	pi->l4_len = (uint16_t)(end - cur);
	return parse_l4(f, pi, frag == 1);
}

int
service_parse(const uint8_t *f, uint32_t len, struct nicfw_pkt *pi)
{
	uint32_t off;
	uint16_t etype;

	memset(pi, 0, sizeof(*pi));
	if (len < ETH_LEN)
		return DROP_TRUNCATED;
	if (be16(f + 12) != NICFW_SERVICE_ETHERTYPE)
		return DROP_NOT_SERVICE;
	if (len < ETH_LEN + NICFW_SERVICE_HDR_LEN)
		return DROP_TRUNCATED;
	const uint8_t *s = f + ETH_LEN;
	pi->svc.ingress_port = be16(s);
	pi->svc.egress_port = be16(s + 2);
	pi->svc.reason = s[4];
	pi->svc.direction = s[5];
	pi->svc.workload_id = be16(s + 6);
	pi->svc.rule_id = be32(s + 8);

	off = ETH_LEN + NICFW_SERVICE_HDR_LEN;
	pi->l2_off = (uint16_t)off;
	if (off + ETH_LEN > len)
		return DROP_TRUNCATED;
	etype = be16(f + off + 12);
	off += ETH_LEN;
	if (etype == ETYPE_VLAN) {
		if (off + VLAN_LEN > len)
			return DROP_TRUNCATED;
		etype = be16(f + off + 2);
		off += VLAN_LEN;
		pi->has_vlan = 1;
	}
	pi->l3_off = (uint16_t)off;
	if (etype == ETYPE_IPV4)
		return parse_ipv4(f, len, pi);
	if (etype == ETYPE_IPV6)
		return parse_ipv6(f, len, pi);
	return DROP_NON_IP;
}

void
service_set_rule_id(uint8_t *frame, uint32_t rule_id)
{
	uint8_t *p = frame + ETH_LEN + 8;

	p[0] = (uint8_t)(rule_id >> 24);
	p[1] = (uint8_t)(rule_id >> 16);
	p[2] = (uint8_t)(rule_id >> 8);
	p[3] = (uint8_t)rule_id;
}

/* One's-complement sum of len bytes added to sum; an odd last byte is padded with a zero. */
static uint32_t
sum16(uint32_t sum, const uint8_t *p, uint32_t len)
{
	uint32_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += be16(p + i);
	if (i < len)
		sum += (uint32_t)p[i] << 8;
	return sum;
}

/* Is the ICMP(v6) message of pi an error about a packet that may belong to a connection? */
static bool
icmp_error_checks(const uint8_t *f, const struct nicfw_pkt *pi)
{
	uint32_t sum = 0;

	if (pi->l4_off == 0 || pi->frag != 0)
		return false; /* errors are never fragmented (576/1280-byte limits): a fragment is not one */
	if (pi->is_v6) {
		if (pi->icmp_type < 1 || pi->icmp_type > 4)
			return false;
		sum = sum16(0, f + pi->l3_off + 8, 32) + pi->l4_len + 58; /* pseudo-header */
	} else if (pi->icmp_type != 3 && pi->icmp_type != 11 && pi->icmp_type != 12) {
		return false; /* redirect, source quench (RFC 6633) and the rest are no errors to pass */
	}
	sum = sum16(sum, f + pi->l4_off, pi->l4_len);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/* The quoted packet's L4 header, n bytes of it at l4, keyed into q as parse_l4 keys a packet. */
static bool
quote_l4(const uint8_t *l4, uint32_t n, bool v6, struct nicfw_key *q)
{
	switch (q->proto) {
	case 6:
	case 17:
		if (n < 8)
			return false;
		memcpy(&q->sport, l4, 2);
		memcpy(&q->dport, l4 + 2, 2);
		return true;
	case 1:
	case 58:
		if ((q->proto == 1) == v6)
			return true; /* ICMP of the other IP version: an unknown protocol, ports 0 */
		if (n < 8)
			return false;
		/* Only an echo has a connection; an error quoting an error is never related. */
		if (v6 ? (l4[0] != 128 && l4[0] != 129) : (l4[0] != 8 && l4[0] != 0))
			return false;
		memcpy(&q->sport, l4 + 4, 2);
		memcpy(&q->dport, l4, 2);
		return true;
	default:
		return true; /* other protocols are keyed with ports 0 */
	}
}

bool
service_parse_quote(const uint8_t *f, const struct nicfw_pkt *pi, struct nicfw_key *q)
{
	uint32_t cur = pi->l4_off + 8u, end = (uint32_t)pi->l4_off + pi->l4_len;
	const uint8_t *ip = f + cur;
	uint8_t nh, frag = 0;

	if (!icmp_error_checks(f, pi))
		return false;
	memset(q, 0, sizeof(*q));
	if (!pi->is_v6) {
		if (cur + 20 > end)
			return false;
		unsigned int ihl = (unsigned int)(ip[0] & 0x0f) * 4;
		if ((ip[0] >> 4) != 4 || ihl < 20 || cur + ihl > end)
			return false;
		if (be16(ip + 6) & 0x1fff)
			return false; /* a later fragment: no ports to key it by */
		nh = ip[9];
		q->src[10] = q->src[11] = q->dst[10] = q->dst[11] = 0xff;
		memcpy(q->src + 12, ip + 12, 4);
		memcpy(q->dst + 12, ip + 16, 4);
		q->flags = NICFW_KEY_V4;
		cur += ihl;
	} else {
		if (cur + 40 > end || (ip[0] >> 4) != 6)
			return false;
		memcpy(q->src, ip + 8, 16);
		memcpy(q->dst, ip + 24, 16);
		if (addr_is_v4_mapped(q->src) || addr_is_v4_mapped(q->dst))
			return false; /* would name an IPv4 connection */
		nh = ip[6];
		cur += 40;
		if (!ipv6_walk(f, end, &cur, &nh, &frag) || frag == 2)
			return false;
	}
	q->proto = nh;
	return quote_l4(f + cur, end - cur, pi->is_v6 != 0, q);
}
