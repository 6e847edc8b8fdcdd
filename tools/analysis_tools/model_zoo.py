#!/usr/bin/env python
"""Measure every classifier and detector config and (re)write the README's tables.

Examples:
    python tools/analysis_tools/model_zoo.py            # rewrite README.md in place
    python tools/analysis_tools/model_zoo.py --check    # exit 1 if README.md is stale
    python tools/analysis_tools/model_zoo.py --check --full  # re-measure detectors too
    python tools/analysis_tools/model_zoo.py --print    # print the tables only

The tables sit between ``<!-- model-zoo:start -->`` and ``<!-- model-zoo:end -->`` in
README.md. Each row builds the config's model (deploy form for ``*_deploy_*``
configs; train-time LGC/SFR models are counted in their deploy form) and counts conv +
linear multiply-adds, the CondenseNet papers' convention (plus activation and pooling
ops) and parameters with ``mmsfr.analysis.count_complexity``; the paper's numbers
(FLOPs, params, ImageNet top-1 / CIFAR-10 accuracy = 100 - the tables' error) stand
beside them. Detectors (every ``configs/*.py``) are counted whole at 800x1333 (padded
to 800x1344) in ``mode='tensor'``, with their backbone alone beside; the paper's COCO
mAP is read from each config's header. No number in the tables is typed by hand.
``--check`` re-measures the classifiers and checks that the detector table was made
from the current configs and model code (a fingerprint of them is recorded under it).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import mmsfr  # noqa: F401
from mmsfr.analysis import config_forward, count_complexity, format_count
from mmsfr.apis import build_from_config
from mmsfr.utils.cli import add_debug_arg, tool_main

REPO = Path(__file__).resolve().parents[2]
START, END = '<!-- model-zoo:start -->', '<!-- model-zoo:end -->'

# config (relative to configs/pretrain), input size, paper FLOPs (M), paper params (M),
# paper top-1 (%, 100 - the papers' error; CIFAR: CIFAR-10 accuracy; None: not given).
CONDENSENETS = [
    ('condensenetv2/condensenetv2-a_deploy_in1k.py', 224, 46, 2.0, 64.4),
    ('condensenetv2/condensenetv2-b_deploy_in1k.py', 224, 146, 3.6, 71.9),
    ('condensenetv2/condensenetv2-c_deploy_in1k.py', 224, 309, 6.1, 75.9),
    ('condensenet/condensenet-a_deploy_in1k.py', 224, 56, 0.9, 56.5),
    ('condensenet/condensenet-b_deploy_in1k.py', 224, 132, 2.1, 66.1),
    ('condensenet/condensenet-c_deploy_in1k.py', 224, 274, 2.9, 71.0),
    ('condensenet/condensenet-v1-g4_deploy_in1k.py', 224, 529, 4.8, None),
    ('condensenetv2/condensenetv2-cifar110_deploy_cifar10.py', 32, 41, 0.48, 95.35),
    ('condensenetv2/condensenetv2-cifar146_deploy_cifar10.py', 32, 62, 0.78, 95.65),
]
SHUFFLENETS = [
    ('shufflenetv2/shufflenetv2-x0_5_8xb128_in1k.py', 224, 41, 1.4, 61.1),
    ('shufflenetv2/shufflenetv2-x1_0_8xb128_in1k.py', 224, 146, 2.3, 69.4),
    ('shufflenetv2/shufflenetv2-x1_5_8xb128_in1k.py', 224, 299, 3.5, 72.6),
    ('shufflenetv2/shufflenetv2-x2_0_8xb128_in1k.py', 224, 591, 7.4, None),
    ('shufflenetv2/shufflenetv2plus-s_8xb128_in1k.py', 224, 156, 5.1, 74.1),
    ('shufflenetv2/shufflenetv2plus-m_8xb128_in1k.py', 224, 222, 5.6, 75.7),
    ('shufflenetv2/shufflenetv2plus-l_8xb128_in1k.py', 224, 360, 6.7, None),
    ('shufflenetv2/sfr-shufflenetv2-x0_5_deploy_in1k.py', 224, 43, 1.4, 61.7),
    ('shufflenetv2/sfr-shufflenetv2-x1_0_deploy_in1k.py', 224, 150, 2.3, 70.1),
    ('shufflenetv2/sfr-shufflenetv2-x1_5_deploy_in1k.py', 224, 306, 3.5, 73.5),
    ('shufflenetv2/sfr-shufflenetv2plus-s_deploy_in1k.py', 224, 161, 5.2, 74.5),
    ('shufflenetv2/sfr-shufflenetv2plus-m_deploy_in1k.py', 224, 229, 5.7, 76.1),
]


def table(rows: list[tuple], params_key: str, params_label: str) -> list[str]:
    """Markdown rows measured for ``rows`` (see CONDENSENETS)."""
    out = [f'| config (`configs/pretrain/...`) | input | conv+linear MACs | paper-convention '
           f'FLOPs | paper | {params_label} | paper | paper top-1 |',
           '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for cfg, size, paper_flops, paper_params, paper_top1 in rows:
        model = build_from_config(f'configs/pretrain/{cfg}')
        counts = count_complexity(model, (3, size, size))
        out.append(f'| `{cfg}` | {size} | {format_count(counts["conv_linear_macs"])} | '
                   f'{format_count(counts["paper_flops"])} | {paper_flops}M | '
                   f'{format_count(counts[params_key])} | {paper_params}M | '
                   f'{"–" if paper_top1 is None else f"{paper_top1}%"} |')
    return out


DETECTOR_SHAPE = (800, 1333)
PAPER_MAP = re.compile(r'^# Paper \(CondenseNetV2, Table 7\): ([\d.]+) mAP', re.M)


DETECTOR_INPUTS = ('configs/*.py', 'configs/_base_/**/*.py', 'mmsfr/models/**/*.py',
                   'mmsfr/analysis/complexity.py')
FINGERPRINT = re.compile(r'<!-- detectors: inputs sha256 ([0-9a-f]{16}) -->')


def detector_fingerprint() -> str:
    """Hash of everything the detector rows depend on (configs, model code, versions).

    Counting 20 detectors at 800x1333 takes minutes on a CPU, so ``--check`` compares
    this hash with the one recorded under the table instead of re-measuring (``--full``
    re-measures); any change to a config or to the model code makes the table stale.
    """
    import hashlib

    import mmdet
    import torch

    digest = hashlib.sha256(f'{mmdet.__version__} {torch.__version__}'.encode())
    files = sorted({f for pattern in DETECTOR_INPUTS for f in REPO.glob(pattern)})
    for f in files:
        digest.update(str(f.relative_to(REPO)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def detector_row(path: Path) -> str:
    """The table row of one detector config (whole detector and backbone)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    model = build_from_config(path)
    hw, forward = config_forward(model, cfg, DETECTOR_SHAPE)
    counts = count_complexity(model, (3, *hw), forward=forward)
    backbone = count_complexity(model.backbone, (3, *hw),
                                forward=lambda m, x: m(x))['conv_linear_macs']
    paper = PAPER_MAP.search(path.read_text())
    return (f'| `configs/{path.name}` | {hw[0]}x{hw[1]} | '
            f'{format_count(counts["conv_linear_macs"], "G")} | '
            f'{format_count(backbone, "G")} | {format_count(counts["params"], "M")} | '
            f'{paper[1] if paper else "–"} |')


def detector_table() -> list[str]:
    """Rows for every detector config at 800x1333, then the inputs' fingerprint."""
    out = ['| config | input (padded) | detector conv+linear MACs | backbone MACs | params | '
           'paper mAP |', '| --- | --- | --- | --- | --- | --- |']
    out += [detector_row(path) for path in sorted((REPO / 'configs').glob('*.py'))]
    return out + ['', f'<!-- detectors: inputs sha256 {detector_fingerprint()} -->']


def render(detectors: list[str] | None = None) -> str:
    """The generated README section; ``detectors`` reuses already measured lines."""
    lines = [START, '',
             'CondenseNets (deploy form; params without BatchNorm, as the papers count):', '']
    lines += table(CONDENSENETS, 'params_no_bn', 'params (no BN)')
    lines += ['', 'ShuffleNets (megvii counts conv + linear multiply-adds and all params; the '
              "SFR models' paper FLOPs come from the CondenseNetV2 authors' counter, the "
              'paper-convention column):', '']
    lines += table(SHUFFLENETS, 'params', 'params')
    lines += ['', 'Detectors (RetinaNet / Faster R-CNN + FPN, whole model in `mode=\'tensor\'` '
              'at 800x1333 padded to a multiple of 32; mAP: COCO minival, paper Table 7, '
              'not measured here):', '']
    lines += detectors if detectors is not None else detector_table()
    lines += ['', '_Generated by `python tools/analysis_tools/model_zoo.py`._', END]
    return '\n'.join(lines)


@tool_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--check', action='store_true', help='exit 1 if README.md is stale')
    mode.add_argument('--print', action='store_true', help='print the tables only')
    parser.add_argument('--full', action='store_true',
                        help='with --check: re-measure the detectors too instead of '
                             'comparing the fingerprint of their inputs (minutes on a CPU)')
    parser.add_argument('--readme', default=str(REPO / 'README.md'), help='README to update')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.print:
        print(render())
        return 0
    readme = Path(args.readme)
    text = readme.read_text()
    if START not in text or END not in text:
        print(f'error: {readme} has no {START} ... {END} section', file=sys.stderr)
        return 1
    current = text[text.index(START):text.index(END) + len(END)]
    if args.check and not args.full:
        recorded = FINGERPRINT.search(current)
        if recorded is None or recorded[1] != detector_fingerprint():
            print(f'{readme} detector table is out of date (its configs or the model code '
                  'changed); run python tools/analysis_tools/model_zoo.py', file=sys.stderr)
            return 1
        lines = current.splitlines()
        first = next(i for i, line in enumerate(lines) if line.startswith('| config | input'))
        last = next(i for i, line in enumerate(lines) if FINGERPRINT.search(line))
        generated = render(lines[first:last + 1])
    else:
        generated = render()
    if args.check:
        if current != generated:
            print(f'{readme} model-zoo tables are out of date; run '
                  'python tools/analysis_tools/model_zoo.py', file=sys.stderr)
            return 1
        print(f'{readme} model-zoo tables are up to date')
        return 0
    readme.write_text(text.replace(current, generated))
    print(f'updated {readme}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
