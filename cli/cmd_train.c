/* cmd_train.c - `pollen train`: one process, or one rank of `mpirun -np N pollen train`. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/core.h"
#include "cli/cli.h"
#include "daemon/driver.h"
#include "daemon/signals.h"
#include "proto/job_config.h"
#include "proto/status_proto.h"
#include "worker/collective.h"
#include "worker/dataset_prepare.h"
#include "worker/device.h"
#include "worker/loader.h"
#include "worker/model.h"
#include "worker/optim.h"

#ifndef POLLEN_SAMPLE_DIR
#define POLLEN_SAMPLE_DIR "tests/data/flowers_sample"
#endif

static void usage(FILE *to) {
  fprintf(to,
"usage: pollen train --job DIR [--data DIR] [flags]\n"
"       mpirun -np N pollen train --job DIR --data DIR [flags]\n\n"
"Trains a MobileNet on a prepared dataset (pollen prepare). Launched again with the same\n"
"command, it resumes from the newest valid checkpoint in DIR. Without --data it trains on the\n"
"bundled sample photos (prepared into JOB/sample-data first).\n\n"
"job:\n"
"  --job DIR            job folder: config.json, checkpoints/, metrics.jsonl, weights.safetensors\n"
"  --config FILE        the job's settings from FILE (a job's config.json); flags given on the\n"
"                       command line override them\n"
"  --data DIR           prepared dataset (manifest.json + shards)\n"
"  --force-config       adopt changed settings in an existing job folder instead of refusing\n"
"  --start-over         train again from step 0 when the job's checkpoints are gone but its\n"
"                       records show progress (refused without it)\n"
"model and data:\n"
"  --model M            mnv3-small (default), mnv3-large, mnv2\n"
"  --width W            width multiplier (default 1.0)\n"
"  --size S             training image size (default 224)\n"
"  --batch B            GLOBAL batch, split evenly across ranks (default 32)\n"
"  --epochs E           (default 10)\n"
"  --max-steps N        stop after N optimizer steps in total (default: all epochs); the\n"
"                       LR schedule still spans all epochs, so a relaunch continues it\n"
"  --dropout P          before the last Linear (default 0.2)\n"
"  --drop-path P        stochastic depth: each residual block's branch is dropped per sample\n"
"                       with probability P x block/blocks, from 0 at the first block to P near\n"
"                       the last (torchvision's EfficientNet, timm's drop_path_rate; default 0)\n"
"  --label-smoothing S  (default 0)\n"
"  --seed N             initial weights, shuffling, augmentation, dropout (default 1)\n"
"  --no-augment         train on center crops (no random resized crop or flip)\n"
"  --crop-scale MIN     RandomResizedCrop's smallest crop, a fraction of the photo's area\n"
"                       (torchvision's scale=(MIN, 1); default 0.08)\n"
"  --auto-augment P     after the crop and flip: ta_wide (torchvision's TrivialAugmentWide) or\n"
"                       none (default)\n"
"  --random-erase P     torchvision's RandomErasing with probability P (default 0: off)\n"
"  --mixup-alpha A      mixup of each rank's batch with itself rolled by one, lam ~ Beta(A, A)\n"
"                       (torchvision's reference: 0.2; default 0: off)\n"
"  --cutmix-alpha A     CutMix likewise (torchvision's reference: 1.0); with both, one of the\n"
"                       two at random per batch. CPU only for now\n"
"  --init-weights FILE  start from safetensors weights (torchvision names; fine-tuning)\n"
"optimizer:\n"
"  --opt O              rmsprop (default; Keras semantics), sgd, adam, adamw\n"
"  --lr X               peak learning rate (default 0.001)\n"
"  --momentum X         SGD/RMSprop momentum (default 0.9 for SGD, 0 for RMSprop)\n"
"  --nesterov           Nesterov momentum (SGD)\n"
"  --weight-decay X     (default 1e-5; AdamW 0.01); not on BN and biases unless --decay-all\n"
"  --decay-all          decay every parameter\n"
"  --rmsprop-variant V  tf (default: eps inside the square root, as Keras) or torch\n"
"  --alpha X            RMSprop smoothing, Keras' rho (default 0.9)\n"
"  --eps X              (default 1e-7 RMSprop, 1e-8 Adam)\n"
"  --beta1 X, --beta2 X Adam/AdamW moment decays (default 0.9, 0.999)\n"
"  --clip-norm X        clip the global gradient norm (default off)\n"
"  --schedule S         cosine (default), constant, step\n"
"  --warmup-epochs X    linear warm-up (default 0)\n"
"  --step-epochs N, --step-gamma X, --min-lr X\n"
"run:\n"
"  --device D           cpu, cuda, or auto (default: cuda when this build has CUDA and a GPU\n"
"                       is visible); each rank takes GPU (node-local rank %% GPUs)\n"
"  --precision P        GEMM inputs: fp32 (default) or bf16 (bfloat16 inputs, float32\n"
"                       accumulation, weights and optimizer state; on a CPU it needs\n"
"                       AVX512_BF16); on a GPU also tf32 or fp16\n"
"  --threads N          compute threads per rank (default: all cores of the rank)\n"
"  --loader-threads N   JPEG decode threads (default: all cores)\n"
"  --keep-activations   backward reads the conv+BN+act outputs forward kept instead of\n"
"                       recomputing them: about 6%% faster on the CPU, 40%% more activation\n"
"                       memory; the same weights either way\n"
"  --loader-nice N      decode threads at nice N (0..19, default 0): on a node the job has to\n"
"                       itself, 19 leaves the cores to the step while it runs (a few %% faster\n"
"                       on 2 cores); on a shared node they could starve\n"
"  --loader-inline      no decode threads: each batch is decoded when the step asks for it,\n"
"                       on the compute threads (CPU jobs that use every core: the same work\n"
"                       without a decode thread pre-empting a compute thread mid-step); the\n"
"                       same batches either way\n"
"  --decoded-cache MIB  memory per rank for decoded photos (at the DCT scales crops asked for)\n"
"                       kept for the next epochs (default 1024; 0: decode every epoch); same\n"
"                       batches either way\n"
"  --log-every N        log and record metrics every N steps (default 10)\n"
"  --ckpt-every N       checkpoint every N steps (default: at epoch ends only)\n"
"  --ckpt-seconds X     also every X seconds\n"
"  --keep K             checkpoints kept (default 3)\n"
"  --replicas N         1 (default): copy each checkpoint, config.json and metrics.jsonl to\n"
"                       the job folder of the first rank on another host (for node-local\n"
"                       --job folders; nothing is copied when the folder is shared); 0: off\n"
"  --no-overlap         all-reduce after backward instead of during it\n"
"  --bucket-kib N       all-reduce bucket size (default 1024)\n"
"  --stall-timeout X    seconds before a silent rank ends the job (default 30)\n"
"  --status-tcp [HOST:]PORT  also serve status on TCP (token in JOB/status.token)\n"
"  --status-token-file FILE  with --status-tcp: the token from FILE's first line (e.g. a\n"
"                       mounted secret), the same at every launch, instead of a random one\n"
"  --cache-dir DIR      node-local folder for shards staged from rank 0 (default /tmp/pollen-cache)\n"
"  --no-tensorboard     no TensorBoard event files in JOB/tensorboard\n"
"  --precise-bn N|auto  before each validation and the export, recompute BN statistics from\n"
"                       N training batches per rank (precise BN; 0: off). auto (default):\n"
"                       16 while the running averages are young (about the first 300 steps)\n"
"  --ema-decay D        validate and export an exponential moving average of the weights\n"
"                       (torchvision's semantics), updated every --ema-every steps with decay\n"
"                       D and restarted during the LR warm-up; its BN statistics by precise\n"
"                       BN (default 0: no EMA)\n"
"  --ema-every N        steps between EMA updates (default 32)\n"
"  --help\n\n"
"Exit status: 0 finished, 75 stopped cleanly with a checkpoint (SIGTERM, SIGINT, SIGUSR1 or\n"
"`pollen ctl JOB stop`: run the same command again to resume), 1 failed, 2 bad usage.\n");
}

enum {
  O_DATA = 256, O_JOB, O_MODEL, O_WIDTH, O_SIZE, O_BATCH, O_EPOCHS, O_MAX_STEPS, O_DROPOUT,
  O_SMOOTH, O_SEED, O_INIT, O_OPT, O_LR, O_MOMENTUM, O_NESTEROV, O_WD, O_DECAY_ALL, O_RMSV,
  O_ALPHA, O_EPS, O_CLIP, O_SCHED, O_WARMUP, O_STEP_EPOCHS, O_STEP_GAMMA, O_MIN_LR, O_THREADS,
  O_LTHREADS, O_DECODED_CACHE, O_KEEP_ACTS, O_LOADER_NICE, O_LOG_EVERY, O_CKPT_EVERY, O_CKPT_SECONDS, O_KEEP, O_NO_OVERLAP, O_BUCKET,
  O_STALL, O_STATUS_TCP, O_CACHE, O_FORCE, O_START_OVER, O_BETA1, O_BETA2, O_NO_AUGMENT, O_DEVICE, O_PRECISION,
  O_NO_TENSORBOARD, O_HELP
};

enum { O_CONFIG = O_HELP + 100, O_STATUS_TOKEN_FILE, O_PRECISE_BN, O_EMA_DECAY, O_EMA_EVERY, O_AUTO_AUGMENT,
       O_RANDOM_ERASE, O_MIXUP, O_CUTMIX, O_REPLICAS, O_CROP_SCALE, O_LOADER_INLINE, O_DROP_PATH }; /* apart, so the table's enum stays one list */

static void copy_flag(char *dst, size_t cap, const char *flag, const char *v) {
  if (strlen(v) >= cap) die_status(EXIT_USAGE, "%s: value too long (%zu characters at most)", flag, cap - 1);
  memcpy(dst, v, strlen(v) + 1);
}

/* Prepares the bundled sample into JOB/sample-data once (a no-op afterwards). */
static void prepare_sample(const char *job_dir, char *out, size_t cap, int is_root) {
  snprintf(out, cap, "%s/sample-data", job_dir);
  if (!is_root) return;
  if (make_dirs(job_dir) != 0) die("cannot create the job folder %s: %s", job_dir, strerror(errno));
  struct stat st;
  if (stat(POLLEN_SAMPLE_DIR, &st) != 0)
    die("no --data given and the bundled sample %s is missing; pass --data DIR (see pollen prepare)", POLLEN_SAMPLE_DIR);
  prepare_opts o = {.src = POLLEN_SAMPLE_DIR, .out = out, .shards = 1, .val_fraction = 0.2, .seed = 1};
  prepare_result r;
  dataset_prepare(&o, &r);
  if (!r.already) log_info("prepared the bundled sample into %s (%lld training, %lld validation images)", out, (long long)r.train, (long long)r.val);
}

/* FILE's definition into cfg, with the checks the flags would have made. */
static void load_config_file(job_config *cfg, const char *path) {
  job_config c = *cfg;
  if (job_config_load(&c, path) == 1) die_status(EXIT_USAGE, "--config %s: no such file", path);
  if (model_arch_parse(c.model) < 0 || optim_kind_parse(c.opt) < 0 || lr_kind_parse(c.schedule) < 0 ||
      (strcmp(c.rmsprop, "tf") && strcmp(c.rmsprop, "torch")) || c.size < 32 || c.size > 1024 || c.batch < 1 ||
      c.epochs < 1 || !(c.width >= 0.05 && c.width <= 4))
    die_status(EXIT_USAGE, "--config %s: a value is out of range (model '%s', opt '%s', schedule '%s', size %d, "
               "batch %d, epochs %d, width %g); fix the file", path, c.model, c.opt, c.schedule, c.size, c.batch,
               c.epochs, c.width);
  *cfg = c;
}

int cmd_train(int argc, char **argv) {
  /* First of all: a stop asked during start-up (MPI's included) is a stop, not a kill. */
  signals_install();
  static const struct option opts[] = {
      {"data", required_argument, 0, O_DATA}, {"job", required_argument, 0, O_JOB},
      {"model", required_argument, 0, O_MODEL}, {"width", required_argument, 0, O_WIDTH},
      {"size", required_argument, 0, O_SIZE}, {"batch", required_argument, 0, O_BATCH},
      {"epochs", required_argument, 0, O_EPOCHS}, {"max-steps", required_argument, 0, O_MAX_STEPS},
      {"dropout", required_argument, 0, O_DROPOUT}, {"label-smoothing", required_argument, 0, O_SMOOTH},
      {"seed", required_argument, 0, O_SEED}, {"init-weights", required_argument, 0, O_INIT},
      {"opt", required_argument, 0, O_OPT}, {"lr", required_argument, 0, O_LR},
      {"momentum", required_argument, 0, O_MOMENTUM}, {"nesterov", no_argument, 0, O_NESTEROV},
      {"weight-decay", required_argument, 0, O_WD}, {"decay-all", no_argument, 0, O_DECAY_ALL},
      {"rmsprop-variant", required_argument, 0, O_RMSV}, {"alpha", required_argument, 0, O_ALPHA},
      {"eps", required_argument, 0, O_EPS}, {"beta1", required_argument, 0, O_BETA1},
      {"beta2", required_argument, 0, O_BETA2}, {"clip-norm", required_argument, 0, O_CLIP},
      {"schedule", required_argument, 0, O_SCHED}, {"warmup-epochs", required_argument, 0, O_WARMUP},
      {"step-epochs", required_argument, 0, O_STEP_EPOCHS}, {"step-gamma", required_argument, 0, O_STEP_GAMMA},
      {"min-lr", required_argument, 0, O_MIN_LR}, {"threads", required_argument, 0, O_THREADS},
      {"loader-threads", required_argument, 0, O_LTHREADS},
      {"decoded-cache", required_argument, 0, O_DECODED_CACHE}, {"keep-activations", no_argument, 0, O_KEEP_ACTS},
      {"loader-nice", required_argument, 0, O_LOADER_NICE}, {"log-every", required_argument, 0, O_LOG_EVERY},
      {"ckpt-every", required_argument, 0, O_CKPT_EVERY}, {"ckpt-seconds", required_argument, 0, O_CKPT_SECONDS},
      {"keep", required_argument, 0, O_KEEP}, {"no-overlap", no_argument, 0, O_NO_OVERLAP},
      {"bucket-kib", required_argument, 0, O_BUCKET}, {"stall-timeout", required_argument, 0, O_STALL},
      {"status-tcp", required_argument, 0, O_STATUS_TCP}, {"cache-dir", required_argument, 0, O_CACHE},
      {"force-config", no_argument, 0, O_FORCE},
      {"start-over", no_argument, 0, O_START_OVER}, {"no-augment", no_argument, 0, O_NO_AUGMENT},
      {"no-tensorboard", no_argument, 0, O_NO_TENSORBOARD},
      {"device", required_argument, 0, O_DEVICE}, {"precision", required_argument, 0, O_PRECISION},
      {"help", no_argument, 0, O_HELP}, {"config", required_argument, 0, O_CONFIG},
      {"status-token-file", required_argument, 0, O_STATUS_TOKEN_FILE}, {"precise-bn", required_argument, 0, O_PRECISE_BN},
      {"ema-decay", required_argument, 0, O_EMA_DECAY}, {"ema-every", required_argument, 0, O_EMA_EVERY},
      {"auto-augment", required_argument, 0, O_AUTO_AUGMENT}, {"random-erase", required_argument, 0, O_RANDOM_ERASE},
      {"mixup-alpha", required_argument, 0, O_MIXUP}, {"cutmix-alpha", required_argument, 0, O_CUTMIX},
      {"replicas", required_argument, 0, O_REPLICAS}, {"crop-scale", required_argument, 0, O_CROP_SCALE},
      {"loader-inline", no_argument, 0, O_LOADER_INLINE}, {"drop-path", required_argument, 0, O_DROP_PATH},
      {0, 0, 0, 0}};
  job_config cfg;
  job_config_defaults(&cfg);
  const char *job_dir = NULL, *data = NULL;
  int momentum_set = 0, wd_set = 0, eps_set = 0, c;
  /* --config first, wherever it stands: the flags then override the file's values. */
  const char *config = cli_flag_value(argc - 1, argv + 1, "--config");
  if (config) {
    load_config_file(&cfg, config);
    /* The file is a whole definition: its optimizer-dependent values count as given. */
    momentum_set = wd_set = eps_set = 1;
  }
  char file_data[sizeof cfg.data_dir];
  snprintf(file_data, sizeof file_data, "%s", cfg.data_dir);
  if (config && file_data[0]) data = file_data;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case O_DATA: data = optarg; break;
    case O_JOB: job_dir = optarg; break;
    case O_MODEL:
      if (model_arch_parse(optarg) < 0) die_status(EXIT_USAGE, "--model: unknown model '%s'; use mnv3-small, mnv3-large or mnv2", optarg);
      copy_flag(cfg.model, sizeof cfg.model, "--model", optarg);
      break;
    case O_WIDTH: cfg.width = cli_parse_double("--width", optarg, 0.05, 4); break;
    case O_SIZE: cfg.size = (int)cli_parse_long("--size", optarg, 32, 1024); break;
    case O_BATCH: cfg.batch = (int)cli_parse_long("--batch", optarg, 1, 65536); break;
    case O_EPOCHS: cfg.epochs = (int)cli_parse_long("--epochs", optarg, 1, 100000); break;
    case O_MAX_STEPS: cfg.max_steps = cli_parse_long("--max-steps", optarg, 1, LONG_MAX); break;
    case O_DROPOUT: cfg.dropout = cli_parse_double("--dropout", optarg, 0, 0.99); break;
    case O_DROP_PATH: cfg.drop_path = cli_parse_double("--drop-path", optarg, 0, 0.99); break;
    case O_SMOOTH: cfg.label_smoothing = cli_parse_double("--label-smoothing", optarg, 0, 1); break;
    case O_SEED: cfg.seed = (uint64_t)cli_parse_long("--seed", optarg, 0, LONG_MAX); break;
    case O_INIT: copy_flag(cfg.init_weights, sizeof cfg.init_weights, "--init-weights", optarg); break;
    case O_OPT:
      if (optim_kind_parse(optarg) < 0) die_status(EXIT_USAGE, "--opt: unknown optimizer '%s'; use sgd, rmsprop, adam or adamw", optarg);
      copy_flag(cfg.opt, sizeof cfg.opt, "--opt", optarg);
      break;
    case O_LR: cfg.lr = cli_parse_double("--lr", optarg, 0, 100); break;
    case O_MOMENTUM: cfg.momentum = cli_parse_double("--momentum", optarg, 0, 1), momentum_set = 1; break;
    case O_NESTEROV: cfg.nesterov = 1; break;
    case O_WD: cfg.weight_decay = cli_parse_double("--weight-decay", optarg, 0, 10), wd_set = 1; break;
    case O_DECAY_ALL: cfg.decay_all = 1; break;
    case O_RMSV:
      if (strcmp(optarg, "tf") && strcmp(optarg, "torch")) die_status(EXIT_USAGE, "--rmsprop-variant: '%s' is not tf or torch", optarg);
      copy_flag(cfg.rmsprop, sizeof cfg.rmsprop, "--rmsprop-variant", optarg);
      break;
    case O_ALPHA: cfg.alpha = cli_parse_double("--alpha", optarg, 0, 1); break;
    case O_EPS: cfg.eps = cli_parse_double("--eps", optarg, 0, 1), eps_set = 1; break;
    case O_BETA1: cfg.beta1 = cli_parse_double("--beta1", optarg, 0, 1); break;
    case O_BETA2: cfg.beta2 = cli_parse_double("--beta2", optarg, 0, 1); break;
    case O_CLIP: cfg.clip_norm = cli_parse_double("--clip-norm", optarg, 0, 1e9); break;
    case O_SCHED:
      if (lr_kind_parse(optarg) < 0) die_status(EXIT_USAGE, "--schedule: '%s' is not cosine, constant or step", optarg);
      copy_flag(cfg.schedule, sizeof cfg.schedule, "--schedule", optarg);
      break;
    case O_WARMUP: cfg.warmup_epochs = cli_parse_double("--warmup-epochs", optarg, 0, 1e6); break;
    case O_STEP_EPOCHS: cfg.step_epochs = (int)cli_parse_long("--step-epochs", optarg, 1, 1000000); break;
    case O_STEP_GAMMA: cfg.step_gamma = cli_parse_double("--step-gamma", optarg, 0, 1); break;
    case O_MIN_LR: cfg.min_lr = cli_parse_double("--min-lr", optarg, 0, 100); break;
    case O_THREADS: cfg.threads = (int)cli_parse_long("--threads", optarg, 1, 1024); break;
    case O_LTHREADS: cfg.loader_threads = (int)cli_parse_long("--loader-threads", optarg, 1, 1024); break;
    case O_KEEP_ACTS: cfg.keep_activations = 1; break;
    case O_LOADER_INLINE: cfg.loader_inline = 1; break;
    case O_LOADER_NICE: cfg.loader_nice = (int)cli_parse_long("--loader-nice", optarg, 0, 19); break;
    case O_DECODED_CACHE: cfg.decoded_cache_mib = (int)cli_parse_long("--decoded-cache", optarg, 0, 1 << 24); break;
    case O_LOG_EVERY: cfg.log_every = (int)cli_parse_long("--log-every", optarg, 1, 1000000); break;
    case O_CKPT_EVERY: cfg.ckpt_every = (int)cli_parse_long("--ckpt-every", optarg, 0, 100000000); break;
    case O_CKPT_SECONDS: cfg.ckpt_seconds = cli_parse_double("--ckpt-seconds", optarg, 0, 1e9); break;
    case O_KEEP: cfg.keep = (int)cli_parse_long("--keep", optarg, 1, 100000); break;
    case O_REPLICAS: cfg.replicas = (int)cli_parse_long("--replicas", optarg, 0, 1); break;
    case O_NO_OVERLAP: cfg.overlap = 0; break;
    case O_BUCKET: cfg.bucket_kib = (int)cli_parse_long("--bucket-kib", optarg, 4, 1 << 20); break;
    case O_STALL: cfg.stall_timeout = cli_parse_double("--stall-timeout", optarg, 1, 1e6); break;
    case O_STATUS_TCP: copy_flag(cfg.status_tcp, sizeof cfg.status_tcp, "--status-tcp", optarg); break;
    case O_EMA_DECAY: cfg.ema_decay = cli_parse_double("--ema-decay", optarg, 0, 0.999999); break;
    case O_EMA_EVERY: cfg.ema_every = (int)cli_parse_long("--ema-every", optarg, 1, 1000000); break;
    case O_PRECISE_BN:
      cfg.precise_bn = !strcmp(optarg, "auto") ? -1 : (int)cli_parse_long("--precise-bn", optarg, 0, 100000);
      break;
    case O_STATUS_TOKEN_FILE:
      copy_flag(cfg.status_token_file, sizeof cfg.status_token_file, "--status-token-file", optarg);
      break;
    case O_CACHE: copy_flag(cfg.cache_dir, sizeof cfg.cache_dir, "--cache-dir", optarg); break;
    case O_FORCE: cfg.force_config = 1; break;
    case O_START_OVER: cfg.start_over = 1; break;
    case O_NO_AUGMENT: cfg.augment = 0; break;
    case O_AUTO_AUGMENT:
      if (strcmp(optarg, "ta_wide") && strcmp(optarg, "none"))
        die_status(EXIT_USAGE, "--auto-augment: '%s' is not ta_wide or none", optarg);
      snprintf(cfg.auto_augment, sizeof cfg.auto_augment, "%s", strcmp(optarg, "none") ? optarg : "");
      break;
    case O_RANDOM_ERASE: cfg.random_erase = cli_parse_double("--random-erase", optarg, 0, 1); break;
    case O_CROP_SCALE: /* the default is stored as 0, absent from config.json, so either spelling is one job */
      cfg.crop_scale = cli_parse_double("--crop-scale", optarg, 0.01, 1);
      if (cfg.crop_scale == LOADER_CROP_SCALE_DEFAULT) cfg.crop_scale = 0;
      break;
    case O_MIXUP: cfg.mixup_alpha = cli_parse_double("--mixup-alpha", optarg, 0, 100); break;
    case O_CUTMIX: cfg.cutmix_alpha = cli_parse_double("--cutmix-alpha", optarg, 0, 100); break;
    case O_NO_TENSORBOARD: cfg.tensorboard = 0; break;
    case O_DEVICE:
      cli_parse_device(optarg);
      copy_flag(cfg.device, sizeof cfg.device, "--device", optarg);
      break;
    case O_PRECISION:
      cli_parse_precision(optarg);
      copy_flag(cfg.precision, sizeof cfg.precision, "--precision", optarg);
      break;
    case O_HELP: usage(stdout); return EXIT_OK;
    case O_CONFIG: break;
    default: return cli_usage_error("train");
    }
  }
  if (optind < argc) {
    fprintf(stderr, "pollen train: unexpected argument '%s'; see 'pollen train --help'\n", argv[optind]);
    return EXIT_USAGE;
  }
  if (!job_dir || !*job_dir)
    die_status(EXIT_USAGE, "train: --job DIR is required (the folder for checkpoints, logs and weights)");
  char host[64], err[256];
  int port;
  if (cfg.status_tcp[0] && statusp_parse_address(cfg.status_tcp, host, sizeof host, &port, err, sizeof err) != 0)
    die_status(EXIT_USAGE, "%s", err);
  if (cfg.status_token_file[0] && !cfg.status_tcp[0])
    die_status(EXIT_USAGE, "train: --status-token-file is the token of the TCP endpoint: give --status-tcp too");
  /* Optimizer-dependent defaults, unless given. */
  if (!momentum_set) cfg.momentum = !strcmp(cfg.opt, "sgd") ? 0.9 : 0.0;
  if (!eps_set) cfg.eps = !strcmp(cfg.opt, "rmsprop") ? (!strcmp(cfg.rmsprop, "tf") ? 1e-7 : 1e-8) : 1e-8;
  if (!wd_set) cfg.weight_decay = !strcmp(cfg.opt, "adamw") ? 0.01 : 1e-5;

  comm cm;
  comm_init(&cm, &argc, &argv);
  if (cm.world > 1) {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "rank %d", cm.rank);
    log_set_prefix(prefix);
  }
  char sample[4200];
  if (!data) {
    prepare_sample(job_dir, sample, sizeof sample, cm.rank == 0);
    data = sample;
  }
  /* The frozen config names the data folder by its absolute path (rank 0's view). */
  char resolved[PATH_MAX];
  if (cm.rank == 0 && realpath(data, resolved)) data = resolved;
  else if (cm.rank == 0) die("--data %s: no such folder; prepare one with pollen prepare", data);
  copy_flag(cfg.data_dir, sizeof cfg.data_dir, "--data", data);
  int status = driver_train(&cfg, job_dir, &cm);
  comm_finalize(&cm);
  return status;
}
