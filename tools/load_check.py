#!/usr/bin/python3
"""load_check.py - load a pollen weight export into torchvision and print its logits as JSON.

The export must be a torchvision state_dict in safetensors form: torchvision's names, NCHW /
OIHW layouts, BN running statistics and num_batches_tracked included. It is loaded with
load_state_dict(strict=True), so a missing, extra or misshapen tensor is an error: this is
how pollen's export round trip is tested.

  /usr/bin/python3 tools/load_check.py --weights model.safetensors --model mnv3-small \
      --input tests/ref/mnv3-small-w0.25-s64-b4.safetensors     # its `input` tensor, NCHW
  /usr/bin/python3 tools/load_check.py --weights model.safetensors --size 224 --batch 2 --seed 0

--model/--width default to the export's metadata keys "model"/"width"; the class count comes
from the classifier's weight. Eval mode (running statistics) unless --train.
"""
import argparse
import json
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

MODELS = {"mnv3-small": torchvision.models.mobilenet_v3_small,
          "mnv3-large": torchvision.models.mobilenet_v3_large,
          "mnv2": torchvision.models.mobilenet_v2}
CLASSIFIER = {"mnv3-small": "classifier.3.weight", "mnv3-large": "classifier.3.weight",
              "mnv2": "classifier.1.weight"}


def fail(msg):
    print(f"load_check: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True, help="safetensors state_dict exported by pollen")
    ap.add_argument("--model", choices=sorted(MODELS), help="default: the export's metadata")
    ap.add_argument("--width", type=float, help="default: the export's metadata, else 1.0")
    ap.add_argument("--input", help="safetensors file holding an `input` tensor [N,3,H,W] F32")
    ap.add_argument("--size", type=int, default=224, help="random input size (without --input)")
    ap.add_argument("--batch", type=int, default=2, help="random input batch (without --input)")
    ap.add_argument("--seed", type=int, default=0, help="random input seed (without --input)")
    ap.add_argument("--train", action="store_true", help="train-mode forward (batch statistics)")
    args = ap.parse_args()

    try:
        state, meta = st_io.load(args.weights)
    except (OSError, ValueError) as e:
        fail(str(e))
    model_name = args.model or meta.get("model")
    if model_name not in MODELS:
        fail(f"{args.weights}: model unknown ({model_name!r}); pass --model mnv3-small|mnv3-large|mnv2")
    width = args.width if args.width is not None else float(meta.get("width", 1.0))
    head = CLASSIFIER[model_name]
    if head not in state:
        fail(f"{args.weights}: no '{head}'; is it a {model_name} export with torchvision names?")
    classes = state[head].shape[0]

    model = MODELS[model_name](width_mult=width, num_classes=classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        fail(f"{args.weights}: does not match torchvision {model_name} width {width} with "
             f"{classes} classes: " + " ".join(str(e).split())[:600])
    model.train(args.train)
    # Train mode is for comparing with tests/ref/ dumps, which use dropout p=0.
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0

    if args.input:
        try:
            x = st_io.load(args.input)[0].get("input")
        except (OSError, ValueError) as e:
            fail(str(e))
        if x is None or x.dim() != 4 or x.shape[1] != 3:
            fail(f"{args.input}: needs an `input` tensor of shape [N, 3, H, W]")
        x = x.float()
    else:
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    with torch.no_grad():
        logits = model(x)
    print(json.dumps({"model": model_name, "width": width, "classes": classes,
                      "mode": "train" if args.train else "eval", "input_shape": list(x.shape),
                      "logits": logits.tolist()}))


if __name__ == "__main__":
    main()
