/* crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every
 * pollen file format (shards, TFRecord framing, checkpoints).
 *
 * Uses the SSE4.2 crc32 instruction when the CPU has it and a slicing-by-8 table otherwise;
 * both give identical results. Not a cryptographic hash: it catches disk and transfer errors. */
#ifndef POLLEN_CRC32C_H
#define POLLEN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends a finished CRC with n more bytes: start from 0, and
 * crc32c_update(crc32c_update(0, a, na), b, nb) == crc32c_update(0, ab, na + nb).
 * crc32c_update(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t n);

/* The portable table version, exposed so tests can compare it with the hardware path. */
uint32_t crc32c_update_sw(uint32_t crc, const void *data, size_t n);

/* 1 when the SSE4.2 path is in use. */
int crc32c_hw_available(void);

#endif
