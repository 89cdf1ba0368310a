/* plan.h - which samples each rank reads in each epoch: a seeded shuffle and the equal split
 * of it between ranks. Pure functions of (seed, epoch, n, rank, world), so every process of a
 * job computes the same plan without talking. Not for: reading data (worker/loader.h). */
#ifndef POLLEN_PLAN_H
#define POLLEN_PLAN_H

#include <stdint.h>

/* order[0..n) = a permutation of 0..n-1 from Fisher-Yates driven by Philox keyed by
 * (seed, epoch): identical on every machine and thread count. */
void plan_shuffle(uint64_t seed, int epoch, int64_t n, int64_t *order);

/* Rank `rank` of `world` takes order[*begin .. *begin + count) of an epoch of n samples;
 * returns count = n / world. The remainder n % world is dropped so every rank takes the same
 * number of samples and so the same number of steps (the shuffle moves the dropped samples
 * from epoch to epoch). */
int64_t plan_rank_slice(int64_t n, int rank, int world, int64_t *begin);

#endif
