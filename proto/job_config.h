/* job_config.h - a training job's settings as they cross disks and processes: frozen in
 * JOB_DIR/config.json at the first launch, compared on every relaunch, broadcast from rank 0
 * so every rank verifies it runs the same job, and hashed into every checkpoint.
 *
 * Two kinds of field: the job's definition (model, data, optimizer, schedule, seed: changing
 * one changes the results, so a relaunch that differs is refused unless --force-config) and
 * run-time knobs (threads, logging, checkpoint cadence, status port: free to change). Only
 * the definition is hashed and frozen. Not for: parsing command-line flags (cli/cmd_train.c). */
#ifndef POLLEN_JOB_CONFIG_H
#define POLLEN_JOB_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define JOB_CONFIG_VERSION 1
/* In the job folder, beside weights.safetensors (the final weights): the weights of the best
 * validation so far, written by the training job, read by eval/export --best. */
#define JOB_BEST_WEIGHTS_NAME "weights-best.safetensors"

typedef struct {
  /* definition */
  char data_dir[1024];
  char model[32];        /* mnv3-small | mnv3-large | mnv2 */
  double width;
  int size;              /* training image size */
  int batch;             /* GLOBAL batch, split evenly across ranks */
  int epochs;
  char opt[16];          /* sgd | rmsprop | adam | adamw */
  double lr, momentum, weight_decay, eps, alpha, beta1, beta2, clip_norm;
  int nesterov, decay_all;
  char rmsprop[8];       /* tf | torch */
  char schedule[16];     /* constant | step | cosine */
  double warmup_epochs, step_gamma, min_lr;
  int step_epochs;
  double label_smoothing, dropout;
  int augment;           /* 1: random resized crop + flip; 0: eval preprocessing (tests) */
  /* Added after version 1 froze: written only when set, so older jobs keep their hash. */
  char auto_augment[16]; /* "" none | "ta_wide" (TrivialAugmentWide, worker/augment.h) */
  double random_erase;   /* RandomErasing probability; 0 off */
  double crop_scale;     /* RandomResizedCrop's smallest area fraction; 0: torchvision's 0.08 */
  double mixup_alpha, cutmix_alpha; /* Beta(alpha, alpha) of mixup / CutMix (worker/mix.h); 0 off */
  double drop_path;      /* stochastic depth at the last block (worker/model.h); 0 off */
  uint64_t seed;
  char init_weights[1024]; /* safetensors to start from ("" = torchvision init) */
  /* run-time knobs */
  int threads, loader_threads, log_every;
  int decoded_cache_mib; /* per rank, for the train and val loaders together; 0 off */
  int keep_activations;  /* 1: backward reads kept conv+BN+act outputs, no recomputation */
  int loader_nice;       /* the decode threads' nice value, 0..19 */
  int loader_inline;     /* 1: batches decoded on the compute threads between steps, no decode threads */
  int64_t max_steps;     /* stop after this many steps (0 = all epochs): for tests and trials */
  int ckpt_every;        /* steps; 0 = only at epoch ends and on request */
  double ckpt_seconds;   /* also every this many seconds; 0 = off */
  int keep;
  int replicas;          /* 1: each checkpoint also copied to another host's job folder */
  int overlap;           /* 1: all-reduce buckets during backward */
  int bucket_kib;
  double stall_timeout;
  char status_tcp[64];
  char status_token_file[1024]; /* the TCP token from this file ("": a random one each launch) */
  char cache_dir[1024];
  int force_config;
  int start_over;        /* train from step 0 although the records show lost checkpoints */
  int tensorboard;       /* 1: TensorBoard event files in JOB_DIR/tensorboard */
  int precise_bn;        /* BN statistics recomputed from N training batches per rank before
                            validation and export; 0 off, -1 auto (worker.c precise_bn_batches) */
  double ema_decay;      /* weight EMA decay per update (worker/ema.h); 0: no EMA */
  int ema_every;         /* steps between EMA updates (torchvision's --model-ema-steps) */
  /* Where a rank trains: a knob, not the definition, so a job stopped on GPUs resumes on
   * CPUs and the other way round. */
  char device[8];        /* cpu | cuda | auto */
  char precision[8];     /* GPU GEMMs: fp32 | tf32 | bf16 | fp16 */
} job_config;

/* The defaults `pollen train` starts from. */
void job_config_defaults(job_config *c);

/* The definition fields as canonical JSON (malloc'd). */
char *job_config_definition_json(const job_config *c);
/* Hex digest (16 digits) of the definition JSON. */
void job_config_hash(const job_config *c, char out[17]);

/* Writes the definition to path atomically. Dies on I/O errors. */
void job_config_save(const job_config *c, const char *path);
/* Reads a frozen definition from path into c's definition fields (knobs untouched).
 * Returns 0, 1 when the file does not exist, or dies naming the file when it is malformed. */
int job_config_load(job_config *c, const char *path);
/* Compares definitions; returns 0 when equal, else 1 with "field: frozen X, now Y" in msg. */
int job_config_diff(const job_config *frozen, const job_config *now, char *msg, size_t cap);

#endif
