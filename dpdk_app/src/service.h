/* SPDX-License-Identifier: Apache-2.0
 * The service interface: parsing of service-encapsulated frames, and the reject responses
 * (TCP RST, ICMP/ICMPv6 administratively prohibited) sent back through the same interface.
 */
#ifndef NICFW_SERVICE_H
#define NICFW_SERVICE_H

#include "nicfw.h"

struct rte_mbuf;
struct rte_mempool;

#define PARSE_OK (-1)

/*
 * Parse one frame: outer Ethernet (0x88B5), service header, inner Ethernet with at most one
 * 802.1Q tag, IPv4 or IPv6 (extension headers walked), TCP/UDP/ICMP. Every read is bounds
 * checked against len. Returns PARSE_OK and fills *pi, or the enum nicfw_drop reason.
 */
int service_parse(const uint8_t *frame, uint32_t len, struct nicfw_pkt *pi);

/*
 * The packet quoted by an ICMP error (IPv4 types 3, 11, 12; ICMPv6 types 1-4) that checked out
 * (not a fragment, ICMP checksum), keyed into *q as service_parse keys a packet: the quoted IP
 * header (same version as the outer one, IHL respected, extension headers walked), then TCP/UDP
 * ports, an echo's identifier and type/code, or ports 0 for other protocols. Every read is
 * bounded by the ICMP message. False when pi is no such error or the quote does not check out:
 * truncated, another IP version, a later fragment, an ICMP message other than an echo.
 */
bool service_parse_quote(const uint8_t *frame, const struct nicfw_pkt *pi, struct nicfw_key *q);

/* Write the decision's rule id into the service header of a frame about to be re-injected. */
void service_set_rule_id(uint8_t *frame, uint32_t rule_id);

/*
 * Build the reject response to a parsed frame in a new mbuf from pool, encapsulated for the
 * service port and addressed back to the packet's ingress port. Returns NULL when no response
 * is due (RST, ICMP errors, fragments, multicast, ...) or no mbuf is available.
 */
struct rte_mbuf *service_reject(const uint8_t *frame, const struct nicfw_pkt *pi,
				uint32_t rule_id, struct rte_mempool *pool);

#endif /* NICFW_SERVICE_H */
