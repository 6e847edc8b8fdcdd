#!/usr/bin/env python
"""Export scikit-learn's handwritten digits as an ImageNet-style folder dataset.

Example:
    python tools/misc/make_digits_imagenet.py --out data/digits
    # -> data/digits/train/<0..9>/*.png and data/digits/val/<0..9>/*.png (16x16)
    python tools/misc/make_digits_imagenet.py --out data/digits_s1 --seed 1 --val-fraction 0.3

The 1797 real 8x8 grey-level digit images of ``sklearn.datasets.load_digits`` (UCI
optical recognition of handwritten digits, 10 classes, ink values 0-16) are scaled to
0-255, upscaled to ``--size`` pixels and saved as 3-channel PNGs, one folder per class,
so mmpretrain's ``CustomDataset`` reads each split with ``data_prefix='train'`` /
``'val'`` and no annotation file. The train/val split is stratified and seeded: the
same seed always writes the same files. ``configs/pretrain/condensenetv2/
condensenetv2-cifar-digits_1xb64_digits.py`` trains on it (docs/pretraining.md).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mmsfr.checkpoint import check_writable_dir
from mmsfr.utils.cli import add_debug_arg, tool_main

INTERPOLATIONS = {'nearest': Image.Resampling.NEAREST, 'bilinear': Image.Resampling.BILINEAR}
SPLITS = ('train', 'val')


def stratified_split(labels: np.ndarray, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices per class into train and val (seeded, stratified).

    Each class puts ``round(n_class * val_fraction)`` samples (at least one) in val.

    Args:
        labels: Class label of every sample.
        val_fraction: Fraction of each class held out for validation, in (0, 1).
        seed: Random seed of the shuffle.

    Returns:
        Sorted train indices and sorted val indices.

    Example:
        >>> tr, va = stratified_split(np.array([0] * 10 + [1] * 5), 0.2, seed=0)
        >>> len(tr), len(va)
        (12, 3)
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = min(len(idx) - 1, max(1, int(round(len(idx) * val_fraction))))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def to_rgb_image(digit: np.ndarray, size: int, interpolation: str) -> Image.Image:
    """Turn one 8x8 digit (values 0-16) into a ``size`` x ``size`` RGB image."""
    grey = np.clip(np.rint(digit * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    img = Image.fromarray(grey, mode='L')
    if size != grey.shape[0]:
        img = img.resize((size, size), INTERPOLATIONS[interpolation])
    return img.convert('RGB')


def export(out: Path, size: int = 16, val_fraction: float = 0.2, seed: int = 0,
           interpolation: str = 'bilinear') -> dict:
    """Write the digits dataset under ``out`` and return a summary.

    Args:
        out: Output folder; ``train/`` and ``val/`` are created in it.
        size: Side of the saved images in pixels.
        val_fraction: Fraction of every class held out for ``val``.
        seed: Seed of the stratified split.
        interpolation: ``'nearest'`` or ``'bilinear'`` upscaling.

    Returns:
        Counts per split and the per-channel mean/std (0-255) of the train images,
        the values a config's ``data_preprocessor`` needs.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images, digits.target
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    summary: dict = dict(size=size, seed=seed, val_fraction=val_fraction,
                         interpolation=interpolation, classes=[str(c) for c in range(10)])
    pixels = []
    for split, indices in zip(SPLITS, (train_idx, val_idx)):
        for cls in np.unique(labels):
            (out / split / str(cls)).mkdir(parents=True, exist_ok=True)
        for i in indices:
            img = to_rgb_image(images[i], size, interpolation)
            img.save(out / split / str(labels[i]) / f'{i:04d}.png')
            if split == 'train':
                pixels.append(np.asarray(img, dtype=np.float64)[..., 0])
        summary[split] = int(len(indices))
    stack = np.stack(pixels)
    summary['mean'] = round(float(stack.mean()), 3)
    summary['std'] = round(float(stack.std()), 3)
    with open(out / 'digits_info.json', 'w') as f:
        json.dump(summary, f, indent=1)
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data/digits', help='output folder')
    parser.add_argument('--size', type=int, default=16,
                        help='image side in pixels (8-512; default 16, twice the originals)')
    parser.add_argument('--val-fraction', type=float, default=0.2,
                        help='fraction of each class held out for val, in (0, 1); default 0.2')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split')
    parser.add_argument('--interpolation', choices=sorted(INTERPOLATIONS), default='bilinear',
                        help='upscaling filter (default bilinear)')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if not 8 <= args.size <= 512:
        parser.error(f'--size must be in 8..512, got {args.size}')
    if not 0 < args.val_fraction < 1:
        parser.error(f'--val-fraction must be in (0, 1), got {args.val_fraction}')
    if args.seed < 0:
        parser.error(f'--seed must be >= 0, got {args.seed}')
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f'--out {out} exists and is not a folder')
    stale = [s for s in SPLITS if (out / s).is_dir() and any((out / s).iterdir())]
    if stale:
        parser.error(f'--out {out} already holds {"/".join(stale)}; choose an empty or new '
                     'folder (stale images would mix into the splits)')
    return args


@tool_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_writable_dir(args.out, '--out')
    summary = export(Path(args.out), args.size, args.val_fraction, args.seed,
                     args.interpolation)
    print(f'train: {summary["train"]} images, val: {summary["val"]} images, 10 classes, '
          f'{args.size}x{args.size} -> {args.out}')
    print(f'train pixel mean {summary["mean"]}, std {summary["std"]} (0-255, every channel)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
