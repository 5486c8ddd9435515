/* SPDX-License-Identifier: Apache-2.0
 * The identity table: which identity classes a connection (exact 5-tuple, as the initiator sent
 * it) belongs to, written by the controller when the identity module learns the user.
 */
#ifndef NICFW_IDENTITY_H
#define NICFW_IDENTITY_H

#include "nicfw.h"

struct rte_hash;

struct identity_table {
	struct rte_hash *h;
	uint32_t *id_class; /* indexed by hash key position */
	uint32_t capacity;
	uint32_t count;
};

int identity_init(struct identity_table *t, const char *name, uint32_t capacity);
void identity_free(struct identity_table *t);

/* Add or replace; returns 0 or a negative errno (-ENOSPC when full). */
int identity_add(struct identity_table *t, const struct nicfw_identity *id);
/* Returns 1 when an entry was removed, 0 when there was none. */
int identity_del(struct identity_table *t, const struct nicfw_identity *id);

/* The identity class of a packet's 5-tuple, in network order (0 when unknown). */
uint32_t identity_lookup(const struct identity_table *t, const struct nicfw_key *k);

#endif /* NICFW_IDENTITY_H */
