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

static int
parse_ipv6(const uint8_t *f, uint32_t len, struct nicfw_pkt *pi)
{
	uint32_t off = pi->l3_off;
	const uint8_t *ip = f + off;
	struct nicfw_key *k = &pi->key;
	bool first_frag = false;

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
	for (int i = 0;; i++) {
		bool ext = nh == 0 || nh == 43 || nh == 60 || nh == 51 || nh == 44;
		if (ext && i == IPV6_MAX_EXT)
			return DROP_BAD_IPV6; /* a longer chain only serves to hide the L4 header */
		if (nh == 0 || nh == 43 || nh == 60 || nh == 51) {
			if (cur + 8 > end)
				return DROP_BAD_IPV6;
			uint32_t hlen = nh == 51 ? (f[cur + 1] + 2u) * 4 : (f[cur + 1] + 1u) * 8;
			if (cur + hlen > end)
				return DROP_BAD_IPV6;
			if (nh == 0 && i != 0)
				return DROP_BAD_IPV6; /* hop-by-hop only directly after the header */
			if (nh == 43 && f[cur + 2] == 0)
				return DROP_BAD_IPV6; /* routing header type 0 (RFC 5095) */
			nh = f[cur];
			cur += hlen;
		} else if (nh == 44) {
			if (cur + 8 > end)
				return DROP_BAD_IPV6;
			uint16_t fo = be16(f + cur + 2) >> 3;
			bool more = (f[cur + 3] & 1) != 0;
			nh = f[cur];
			cur += 8;
			pi->frag = fo != 0 ? 2 : more;
			if (fo != 0) {
				k->proto = nh;
				k->flags |= NICFW_KEY_FRAG;
				pi->l4_off = 0;
				return PARSE_OK;
			}
			first_frag = more;
		} else {
			break;
		}
	}
	k->proto = nh;
	pi->l4_off = (uint16_t)cur;
	pi->l4_len = (uint16_t)(end - cur);
	return parse_l4(f, pi, first_frag);
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
