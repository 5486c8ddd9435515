/* SPDX-License-Identifier: Apache-2.0
 * The identity table over rte_hash (see identity.h). Owned by the datapath lcore; the control
 * channel's IDENTITY_ADD/DEL reach it as commands between bursts.
 */
#include <errno.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_random.h>

#include "identity.h"

struct id_key {
	uint8_t src[16];
	uint8_t dst[16];
	uint16_t sport; /* network order */
	uint16_t dport;
	uint8_t proto;
	uint8_t pad[3];
};

int
identity_init(struct identity_table *t, const char *name, uint32_t capacity)
{
	struct rte_hash_parameters hp = {
		.name = name,
		.entries = capacity,
		.key_len = sizeof(struct id_key),
		.hash_func = rte_hash_crc,
		.hash_func_init_val = (uint32_t)rte_rand(),
		.socket_id = (int)rte_socket_id(),
		.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE,
	};

	memset(t, 0, sizeof(*t));
	if (hp.socket_id < 0)
		hp.socket_id = 0;
	t->h = rte_hash_create(&hp);
	if (t->h == NULL)
		return -rte_errno;
	t->id_class = rte_zmalloc("nicfw_id", sizeof(uint32_t) * capacity, 64);
	if (t->id_class == NULL) {
		rte_hash_free(t->h);
		t->h = NULL;
		return -ENOMEM;
	}
	t->capacity = capacity;
	return 0;
}

void
identity_free(struct identity_table *t)
{
	rte_hash_free(t->h);
	rte_free(t->id_class);
	memset(t, 0, sizeof(*t));
}

static void
key_of_identity(const struct nicfw_identity *id, struct id_key *k)
{
	memset(k, 0, sizeof(*k));
	memcpy(k->src, id->src_addr, 16);
	memcpy(k->dst, id->dst_addr, 16);
	k->sport = rte_cpu_to_be_16(id->sport);
	k->dport = rte_cpu_to_be_16(id->dport);
	k->proto = id->proto;
}

int
identity_add(struct identity_table *t, const struct nicfw_identity *id)
{
	struct id_key k;
	int32_t pos;

	key_of_identity(id, &k);
	bool existed = rte_hash_lookup(t->h, &k) >= 0;
	pos = rte_hash_add_key(t->h, &k);
	if (pos < 0)
		return pos;
	t->id_class[pos] = rte_cpu_to_be_32(id->id_class);
	t->count += !existed;
	return 0;
}

int
identity_del(struct identity_table *t, const struct nicfw_identity *id)
{
	struct id_key k;

	key_of_identity(id, &k);
	if (rte_hash_del_key(t->h, &k) < 0)
		return 0;
	t->count--;
	return 1;
}

uint32_t
identity_lookup(const struct identity_table *t, const struct nicfw_key *pk)
{
	struct id_key k;
	int32_t pos;

	if (t->count == 0)
		return 0;
	memset(&k, 0, sizeof(k));
	memcpy(k.src, pk->src, 16);
	memcpy(k.dst, pk->dst, 16);
	k.sport = pk->sport;
	k.dport = pk->dport;
	k.proto = pk->proto;
	pos = rte_hash_lookup(t->h, &k);
	return pos < 0 ? 0 : t->id_class[pos];
}
