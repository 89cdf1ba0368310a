/* ckpt_format.h - the on-disk format of pollen's checkpoint files (version 1).
 *
 * A checkpoint is one file of named byte sections (weights, BN running stats, optimizer
 * moments, RNG states, ...) plus a "meta" section of JSON (step, epoch, model, config hash,
 * ...). Every region carries a CRC32C so any flipped byte or truncation is detected.
 * All integers are little-endian; offsets are from the start of the file.
 *
 *   header, 64 bytes at 0:
 *     0  magic "PLNCKPT\0"          8  u32 format version (1)    12 u32 section count
 *     16 u64 table offset (64)      24..59 zero                  60 u32 CRC32C of bytes 0..59
 *   section table, count x 96 bytes at 64, one entry per section, in file order:
 *     0  name, 1..63 printable ASCII bytes, NUL-padded to 64
 *     64 u32 kind (CKPTF_KIND_*)   68 u32 CRC32C of the payload
 *     72 u64 payload offset (a multiple of 64, so float arrays can be used in place)
 *     80 u64 payload length        88 u64 zero
 *   payloads, each 64-byte aligned, zero padding between them
 *   footer, 32 bytes, the last bytes of the file:
 *     0  magic "PLNCKEND"          8  u64 total file length     16 u32 section count
 *     20 u32 CRC32C of the whole section table                  24 u32 zero
 *     28 u32 CRC32C of footer bytes 0..27
 *
 * The footer is written last, so a file cut short anywhere lacks it. The reader treats the
 * file as untrusted: every length and offset is checked against the file size, payloads must
 * lie in order between the table and the footer without overlap, names must be unique, and
 * all reserved bytes must be zero. Errors are one line, "PATH: what is wrong".
 *
 * Not for: crash safety (temp file, fsync, rename) and choosing which checkpoint to load;
 * that is daemon/ckpt.h. Not for weights leaving pollen: that is safetensors. */
#ifndef POLLEN_CKPT_FORMAT_H
#define POLLEN_CKPT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define CKPTF_VERSION 1u
#define CKPTF_HEADER_BYTES 64u
#define CKPTF_ENTRY_BYTES 96u
#define CKPTF_FOOTER_BYTES 32u
#define CKPTF_ALIGN 64u
#define CKPTF_NAME_MAX 63 /* bytes, without the NUL */
#define CKPTF_MAX_SECTIONS 4096u
/* The meta JSON is small; a bigger one is certainly not ours. */
#define CKPTF_META_MAX (16u * 1024 * 1024)
#define CKPTF_META_NAME "meta"

/* What a payload holds. Informational for tools; the reader checks only that it is known. */
enum {
  CKPTF_KIND_BYTES = 0, /* opaque bytes (RNG states, ...) */
  CKPTF_KIND_F32 = 1,   /* little-endian float32 array; length a multiple of 4 */
  CKPTF_KIND_JSON = 2,  /* UTF-8 JSON text, no NUL */
  CKPTF_KIND_U64 = 3,   /* little-endian uint64 array; length a multiple of 8 */
  CKPTF_N_KINDS
};

/* The meta section's fields. Strings are NUL-terminated; config_hash is lower-case hex. */
typedef struct {
  int64_t step;            /* optimizer steps done */
  int64_t epoch;           /* epoch the next sample comes from */
  int64_t sample_in_epoch; /* samples of that epoch already consumed */
  int32_t world_size;      /* ranks that trained it (>= 1) */
  char model[64];          /* e.g. "mobilenetv3_small" */
  char config_hash[65];    /* hex, up to 64 digits; may be empty */
  char pollen_version[32];
  int64_t unix_time; /* seconds since 1970 when the snapshot was taken */
  /* Any further key/values (LR schedule state, ...): a JSON object, or NULL. When writing it
   * is borrowed; in a file read by ckptf_open it is owned and freed by ckptf_close. */
  cJSON *extra;
} ckptf_meta;

/* One section to write. */
typedef struct {
  const char *name;
  uint32_t kind;
  const void *data;
  uint64_t len;
} ckptf_section_in;

/* One section of a file read by ckptf_open. data points into the file's buffer, 64-byte
 * aligned; name is NUL-terminated. */
typedef struct {
  char name[64];
  uint32_t kind;
  uint32_t crc;
  uint64_t offset, len;
  const uint8_t *data;
} ckptf_section;

/* A whole checkpoint read into memory and verified. */
typedef struct {
  uint8_t *buf; /* the file's bytes, 64-byte aligned */
  uint64_t size;
  ckptf_section *sections;
  uint32_t n_sections;
  ckptf_meta meta; /* parsed from the "meta" section */
} ckptf_file;

/* 0 when name is acceptable (1..63 printable ASCII, no '/', '"' or '\\'), else -1. */
int ckptf_name_ok(const char *name);
/* Checks a list of sections for writing: names valid and unique, kinds known, lengths fit the
 * kind. Returns 0, or -1 with the reason in err. */
int ckptf_check_sections(const ckptf_section_in *s, int n, char *err, size_t errlen);

/* Payload offsets of sections of these lengths (offsets[i] for section i), and the file size. */
uint64_t ckptf_layout(const uint64_t *lens, int n, uint64_t *offsets);

/* The meta as JSON text (malloc'd, NUL-terminated; free with free()). */
char *ckptf_meta_to_json(const ckptf_meta *m);
/* Parses and checks meta JSON of n bytes (no NUL needed). Returns 0, or -1 with the reason in
 * err. On success m->extra is an owned object or NULL: release with ckptf_meta_free. */
int ckptf_meta_parse(const char *json, size_t n, ckptf_meta *m, char *err, size_t errlen);
void ckptf_meta_free(ckptf_meta *m);

/* Writes a complete checkpoint of these sections (the meta must be one of them, named
 * "meta", kind JSON) to fd from its current position, which must be the file's start.
 * Does not fsync. Returns 0, or -1 with errno kept and "PATH: reason" in err. */
int ckptf_write_fd(int fd, const char *path, const ckptf_section_in *s, int n, char *err,
                   size_t errlen);

/* Reads the whole file at path, verifies every CRC and bound and parses the meta. Returns 0,
 * or -1 with "PATH: problem" in err (f is then empty). */
int ckptf_open(const char *path, ckptf_file *f, char *err, size_t errlen);
/* Every check ckptf_open makes, on a whole file's bytes held in memory (a copy received
 * before it is written; name: for messages). 0 with the step it holds in *step, or -1 with
 * "NAME: problem" in err. Keeps nothing. */
int ckptf_verify_buffer(const char *name, const void *buf, uint64_t size, int64_t *step, char *err,
                        size_t errlen);
/* The section called name, or NULL. */
const ckptf_section *ckptf_find(const ckptf_file *f, const char *name);
void ckptf_close(ckptf_file *f);

#endif
