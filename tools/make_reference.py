#!/usr/bin/python3
"""make_reference.py - PyTorch reference dumps that pollen's engine is checked against.

Builds a torchvision MobileNet (its own seeded init, dropout p=0, train mode), runs one
forward + cross-entropy + backward on a random batch and writes one safetensors file with
the input, labels, every state_dict entry before the step, logits, loss, every parameter's
gradient, the BN running statistics after the forward, and the eval-mode logits of the same
batch with those statistics. With --steps K it also records the
loss of K consecutive training steps on the same batch with the chosen optimizer.
The file format, every key and the tolerances are documented in tests/ref/README.md.

Run with Debian's /usr/bin/python3 (python3-torch, python3-torchvision), e.g.
  /usr/bin/python3 tools/make_reference.py --model mnv3-small --width 0.25 --size 64 \
      --batch 4 --seed 1 --out tests/ref/mnv3-small-w0.25-s64-b4.safetensors
"""
import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

FORMAT_VERSION = "1"
MODELS = {
    "mnv3-small": torchvision.models.mobilenet_v3_small,
    "mnv3-large": torchvision.models.mobilenet_v3_large,
    "mnv2": torchvision.models.mobilenet_v2,
}
# Defaults per optimizer; every hyperparameter used is written into the file's metadata.
# Small enough that float32 rounding alone moves loss_seq by < 2e-4 over 10 steps (measured
# with --check-f64), large enough that the loss falls visibly.
DEFAULT_LR = {"sgd": 0.02, "rmsprop": 1e-4, "rmsprop-tf": 1e-4}


def build_model(name, width, classes, seed):
    """torchvision's own init, drawn from torch's global generator seeded with `seed`."""
    torch.manual_seed(seed)
    model = MODELS[name](width_mult=width, num_classes=classes)
    # Dropout is random; p=0 makes the reference deterministic and the engine's dropout is
    # tested on its own. (torchvision: p=0.2 in the classifier of all three models.)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model.train()


def make_batch(seed, batch, size, classes):
    """A generator separate from the init's, so the batch does not depend on the model."""
    g = torch.Generator().manual_seed(seed + 1_000_003)
    x = torch.randn(batch, 3, size, size, generator=g, dtype=torch.float32)
    y = torch.randint(0, classes, (batch,), generator=g, dtype=torch.int64)
    return x, y


def forward_backward(model, x, y):
    for p in model.parameters():
        p.grad = None
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return logits.detach(), loss.detach()


class TfRmsprop:
    """Keras/TF RMSprop (the fused ApplyRMSProp kernel), written out by hand, momentum 0:
    ms = rho*ms + (1-rho)*g^2 (ms starts at 0); var -= lr * g / sqrt(ms + eps).
    Differs from torch.optim.RMSprop, which adds eps outside the square root."""

    def __init__(self, params, lr, rho=0.9, eps=1e-7):
        self.params = list(params)
        self.lr, self.rho, self.eps = lr, rho, eps
        self.ms = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        for p, ms in zip(self.params, self.ms):
            ms.mul_(self.rho).addcmul_(p.grad, p.grad, value=1 - self.rho)
            p.sub_(self.lr * p.grad / torch.sqrt(ms + self.eps))


def make_optimizer(args, model):
    """Returns (optimizer, metadata describing it exactly)."""
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.opt]
    params = model.parameters()
    if args.opt == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, dampening=0, nesterov=args.nesterov,
                              weight_decay=0)
        meta = {"opt": "sgd", "lr": lr, "momentum": 0.9, "nesterov": int(args.nesterov),
                "dampening": 0, "weight_decay": 0,
                "opt_rule": "torch.optim.SGD: buf = momentum*buf + g (buf = g at step 1); "
                            "p -= lr*(g + momentum*buf if nesterov else buf)"}
    elif args.opt == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, momentum=0, centered=False,
                                  weight_decay=0)
        meta = {"opt": "rmsprop", "lr": lr, "alpha": 0.9, "eps": 1e-7, "momentum": 0,
                "centered": 0, "weight_decay": 0,
                "opt_rule": "torch.optim.RMSprop: sq = alpha*sq + (1-alpha)*g^2 (sq starts 0); "
                            "p -= lr*g/(sqrt(sq) + eps)"}
    else:
        opt = TfRmsprop(params, lr=lr, rho=0.9, eps=1e-7)
        meta = {"opt": "rmsprop-tf", "lr": lr, "rho": 0.9, "eps": 1e-7, "momentum": 0,
                "centered": 0, "weight_decay": 0,
                "opt_rule": "Keras/TF RMSprop: ms = rho*ms + (1-rho)*g^2 (ms starts 0); "
                            "p -= lr*g/sqrt(ms + eps)"}
    return opt, {k: str(v) for k, v in meta.items()}


def bn_settings(model):
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    return bn.eps, bn.momentum


def run(args, dtype=torch.float32):
    """Everything the file holds, computed in `dtype` (float64 only for --check-f64)."""
    model = build_model(args.model, args.width, args.classes, args.seed).to(dtype)
    x, y = make_batch(args.seed, args.batch, args.size, args.classes)
    x = x.to(dtype)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    logits, loss = forward_backward(model, x, y)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    after = {k: v.detach().clone() for k, v in model.state_dict().items()
             if k.endswith("running_mean") or k.endswith("running_var")}
    # Eval mode on the same batch, with the running statistics that one forward left: checks
    # pollen's inference path (batch norm folded into the convolutions) against PyTorch's.
    model.eval()
    with torch.no_grad():
        eval_logits = model(x).detach()
    model.train()
    out = {"model": model, "x": x, "y": y, "before": before, "logits": logits, "loss": loss,
           "grads": grads, "after": after, "eval_logits": eval_logits, "loss_seq": None,
           "opt_meta": {}}
    if args.steps:
        # loss_seq[k] is the loss of the forward at step k, i.e. after k optimizer updates
        # (loss_seq[0] == loss). The gradients of step 0 are the ones above.
        opt, out["opt_meta"] = make_optimizer(args, model)
        seq = [loss.item()]
        for _ in range(args.steps - 1):
            opt.step()
            _, l = forward_backward(model, x, y)
            seq.append(l.item())
        out["loss_seq"] = torch.tensor(seq, dtype=torch.float32)
    return out


def write(args, r):
    model = r["model"]
    t = {"input": r["x"].float(), "labels": r["y"]}
    t.update({k: v for k, v in r["before"].items()})
    t["logits"] = r["logits"]
    t["loss"] = r["loss"].reshape(1)
    t["eval_logits"] = r["eval_logits"]
    if not args.lean:
        t.update({f"grad.{k}": v for k, v in r["grads"].items()})
        t.update({f"after.{k}": v for k, v in r["after"].items()})
    if r["loss_seq"] is not None:
        t["loss_seq"] = r["loss_seq"]
    eps, mom = bn_settings(model)
    meta = {"format": "pollen-reference", "format_version": FORMAT_VERSION, "model": args.model,
            "width": repr(args.width), "size": args.size, "batch": args.batch,
            "classes": args.classes, "seed": args.seed, "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__,
            "params": sum(p.numel() for p in model.parameters()), "dropout": "0",
            "bn_eps": repr(eps), "bn_momentum": repr(mom), "loss_fn": "cross_entropy mean",
            "layout": "input NCHW; conv weights OIHW; linear [out, in]",
            "lean": int(args.lean), "steps": args.steps or 0}
    meta.update(r["opt_meta"])
    st_io.save(args.out, t, {k: str(v) for k, v in meta.items()})
    return t, {k: str(v) for k, v in meta.items()}


def verify(path, tensors, meta):
    """Loads the file back and requires every tensor to be bit-identical."""
    back, bmeta = st_io.load(path)
    assert list(back) == list(tensors), f"{path}: tensor names/order differ after reload"
    for k, v in tensors.items():
        b = back[k]
        assert b.dtype == v.dtype and tuple(b.shape) == tuple(v.shape), f"{path}: {k} dtype/shape"
        assert torch.equal(b, v.detach().cpu()), f"{path}: {k} data differs after reload"
    assert bmeta == meta, f"{path}: metadata differs after reload"


def rel_err(a, b, floor):
    """max|a-b| / max(max|b|, floor): the checker's metric (tests/ref/README.md)."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / max(b.abs().max().item(), floor)).item() if b.numel() else 0.0


def check_f64(args, r32):
    """float32 against float64 from the same init and batch, with the checker's metrics
    (tests/ref/README.md): how far float32 rounding alone moves each output, which is what
    the tolerances must absorb."""
    r64 = run(args, torch.float64)
    G = max(g.abs().max().item() for g in r64["grads"].values())
    grads = {k: rel_err(r32["grads"][k], r64["grads"][k], 1e-3 * G) for k in r64["grads"]}
    worst = max(grads, key=grads.get)
    rep = {"logits": rel_err(r32["logits"], r64["logits"], 1e-30),
           "eval_logits": rel_err(r32["eval_logits"], r64["eval_logits"], 1e-30),
           "loss": rel_err(r32["loss"], r64["loss"], 1e-30),
           "grads": grads[worst], "grads_worst": worst,
           "after": max(rel_err(r32["after"][k], r64["after"][k], 1.0) for k in r64["after"])}
    if r32["loss_seq"] is not None:
        rep["loss_seq"] = max(abs(a - b) / abs(b) for a, b in
                              zip(r32["loss_seq"].tolist(), r64["loss_seq"].tolist()))
    print(json.dumps(rep))


def param_counts():
    print("| model (5 classes) | width 0.25 | width 0.5 | width 1.0 |")
    print("|---|---:|---:|---:|")
    for name, fn in MODELS.items():
        row = [f"{sum(p.numel() for p in fn(width_mult=w, num_classes=5).parameters()):,}"
               for w in (0.25, 0.5, 1.0)]
        print(f"| {name} | " + " | ".join(row) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="mnv3-small")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="output .safetensors file")
    ap.add_argument("--steps", type=int, default=0, help="also record loss_seq over this many steps")
    ap.add_argument("--opt", choices=["sgd", "rmsprop", "rmsprop-tf"], default="sgd")
    ap.add_argument("--lr", type=float, default=None, help="default: sgd 0.02, rmsprop* 1e-4")
    ap.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    ap.add_argument("--lean", action="store_true",
                    help="omit grad.* and after.* (for optimizer files whose step-0 gradients "
                         "another reference already covers)")
    ap.add_argument("--check-f64", action="store_true",
                    help="also run in float64 and print float32's deviation as JSON")
    ap.add_argument("--param-counts", action="store_true",
                    help="print torchvision parameter counts (5 classes) as a markdown table")
    args = ap.parse_args()
    if args.param_counts:
        param_counts()
        return
    if not args.out:
        ap.error("--out is required")
    if args.batch < 2:
        ap.error("--batch must be >= 2 (BatchNorm in train mode needs more than one value)")
    if args.steps < 0 or args.steps > 1000:
        ap.error("--steps must be in [0, 1000]")
    r = run(args)
    tensors, meta = write(args, r)
    verify(args.out, tensors, meta)
    print(f"{args.out}: {len(tensors)} tensors, {os.path.getsize(args.out):,} bytes, "
          f"{meta['params']} params, loss {r['loss'].item():.6f}"
          + (f", loss_seq {[round(v, 5) for v in r['loss_seq'].tolist()]}" if args.steps else ""))
    if args.check_f64:
        check_f64(args, r)


if __name__ == "__main__":
    main()
