#!/usr/bin/env python
"""Generate a small COCO-format detection dataset of coloured shapes (seeded).

Example:
    python tools/misc/make_demo_coco.py --out data/demo_coco --train 400 --val 100
    # -> data/demo_coco/{train,val}/*.png and annotations/instances_{train,val}.json

Images show 1-4 circles, squares and triangles of random colours and sizes on
textured backgrounds (noise, stripes, gradients); boxes are exact. The same seed
always gives the same files, so results on it are reproducible.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmsfr.checkpoint import check_writable_dir
from mmsfr.utils.cli import add_debug_arg, tool_main

CATEGORIES = ('circle', 'square', 'triangle')


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    base = rng.integers(0, 256, 3)
    img = np.ones((size, size, 3)) * base
    kind = rng.integers(0, 3)
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == 0:  # stripes
        period = rng.uniform(6, 24)
        angle = rng.uniform(0, math.pi)
        wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
        img += wave[..., None] * rng.uniform(10, 40)
    elif kind == 1:  # gradient
        img += (xx / size)[..., None] * rng.uniform(-60, 60, 3)
    img += rng.normal(0, rng.uniform(4, 20), img.shape)  # noise
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, cat: int, box: tuple,
           colour: tuple) -> tuple[float, float, float, float]:
    x0, y0, s = box
    if cat == 0:
        draw.ellipse([x0, y0, x0 + s, y0 + s], fill=colour)
        return x0, y0, s + 1, s + 1
    if cat == 1:
        draw.rectangle([x0, y0, x0 + s, y0 + s], fill=colour)
        return x0, y0, s + 1, s + 1
    h = s * math.sqrt(3) / 2
    draw.polygon([(x0, y0 + h), (x0 + s, y0 + h), (x0 + s / 2, y0)], fill=colour)
    return x0, y0, s + 1, h + 1


def _overlaps(a, b) -> bool:
    return not (a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or
                a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1])


def make_split(out: Path, split: str, count: int, size: int, rng: np.random.Generator) -> dict:
    """Write ``count`` images of ``split`` and return its COCO dict."""
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img = _background(rng, size)
        draw = ImageDraw.Draw(img)
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            for _attempt in range(20):
                s = int(rng.integers(size // 8, size // 3))
                x0, y0 = (int(v) for v in rng.integers(0, size - s - 1, 2))
                cat = int(rng.integers(0, len(CATEGORIES)))
                probe = (x0, y0, s + 1, s + 1)
                if not any(_overlaps(probe, b) for b, _ in boxes):
                    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                    boxes.append((_shape(draw, rng, cat, (x0, y0, s), colour), cat))
                    break
        name = f'{split}/{i:05d}.png'
        img.save(out / name)
        images.append(dict(id=i + 1, file_name=name.split('/', 1)[1], width=size, height=size))
        for (x, y, w, h), cat in boxes:
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=cat + 1,
                                    bbox=[float(x), float(y), float(w), float(h)],
                                    area=float(w * h), iscrowd=0))
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(CATEGORIES)]
    return dict(images=images, annotations=annotations, categories=categories)


@tool_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data/demo_coco', help='output folder')
    parser.add_argument('--train', type=int, default=400, help='training images')
    parser.add_argument('--val', type=int, default=100, help='validation images')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    for name, value in (('--train', args.train), ('--val', args.val)):
        if value < 1:
            parser.error(f'{name} must be >= 1, got {value}')
    if args.size < 48:
        parser.error(f'--size must be >= 48, got {args.size}')
    out = Path(args.out)
    check_writable_dir(out, '--out')
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for split, count in (('train', args.train), ('val', args.val)):
        coco = make_split(out, split, count, args.size, rng)
        with open(out / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(coco, f)
        print(f'{split}: {len(coco["images"])} images, {len(coco["annotations"])} boxes')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
