#!/usr/bin/python3
"""make_sample.py - regenerates tests/data/flowers_sample from the full flower_photos set.

20 photos per class (evenly spaced in sorted order, so the choice is stable), downscaled to
long side 160 with a Lanczos filter and re-encoded as JPEG quality 85, plus LICENSE.txt with
the CC-BY 2.0 credit lines of exactly those photos copied from the dataset's LICENSE.txt.
Usage: tools/make_sample.py [SRC] [DST]   (defaults below). Needs python3-pil.
"""
import os
import shutil
import sys

from PIL import Image

SRC = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/flower_photos"
DST = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "flowers_sample")
PER_CLASS, SIDE, QUALITY = 20, 160, 85

credits = {}
header = []
with open(os.path.join(SRC, "LICENSE.txt"), encoding="utf-8") as f:
    for line in f:
        name = line.split(" ", 1)[0]
        if "/" in name and name.lower().endswith((".jpg", ".jpeg", ".png")):
            credits[name] = line.rstrip("\n")
        elif not credits:
            header.append(line.rstrip("\n"))

if os.path.isdir(DST):
    shutil.rmtree(DST)
os.makedirs(DST)
chosen = []
for cls in sorted(d for d in os.listdir(SRC) if os.path.isdir(os.path.join(SRC, d))):
    files = sorted(f for f in os.listdir(os.path.join(SRC, cls)) if f.lower().endswith(".jpg") and f"{cls}/{f}" in credits)
    step = len(files) / PER_CLASS
    pick = [files[int(i * step)] for i in range(PER_CLASS)]
    os.makedirs(os.path.join(DST, cls))
    for f in pick:
        im = Image.open(os.path.join(SRC, cls, f)).convert("RGB")
        im.thumbnail((SIDE, SIDE), Image.LANCZOS)
        im.save(os.path.join(DST, cls, f), "JPEG", quality=QUALITY)
        chosen.append(f"{cls}/{f}")

with open(os.path.join(DST, "LICENSE.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(header).rstrip("\n") + "\n\n")
    f.write("This sample holds %d photos from the TensorFlow flower_photos set, downscaled to long\n"
            "side %d and re-encoded (tools/make_sample.py). Their credits:\n\n" % (len(chosen), SIDE))
    for name in chosen:
        f.write(credits[name] + "\n")
print("wrote %d photos to %s" % (len(chosen), DST))
