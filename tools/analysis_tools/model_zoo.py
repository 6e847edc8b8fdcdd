#!/usr/bin/env python
"""Measure every classifier and detector config; (re)write the README's tables and the
mim metafiles.

Examples:
    python tools/analysis_tools/model_zoo.py            # rewrite README.md + metafiles
    python tools/analysis_tools/model_zoo.py --check    # exit 1 if either is stale
    python tools/analysis_tools/model_zoo.py --check --full  # re-measure detectors too
    python tools/analysis_tools/model_zoo.py --metafiles     # rewrite the metafiles only
    python tools/analysis_tools/model_zoo.py --check --metafiles  # check them only
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

The same run writes OpenMMLab's model index for mim: ``model-index.yml`` importing
``configs/pretrain/{condensenetv2,condensenet,shufflenetv2}/metafile.yml`` and
``configs/metafile.yml`` (detectors). Every model there has its config, the measured
``FLOPs`` (conv + linear multiply-adds, as rounded in the tables) and ``Parameters``,
the papers' numbers as ``Results`` (marked by ``Results Source``: not measured here)
and ``Weights Recipe``, the commands that make its checkpoint (no weights are hosted).

``--check`` re-measures the classifiers and checks that the detector table and entries
were made from the current configs and model code (a fingerprint of them is recorded
under the table and at the top of ``configs/metafile.yml``); ``--full`` re-measures the
detectors instead (minutes on a CPU). Progress goes to stderr, ``[i/n] config``.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import mmsfr  # noqa: F401  (first: it imports the OpenMMLab stack quietly)
import yaml
from mmsfr.analysis import config_forward, count_complexity, format_count
from mmsfr.apis import OFFICIAL_MODELS, init_model
from mmsfr.utils.cli import add_debug_arg, tool_main

REPO = Path(__file__).resolve().parents[2]
START, END = '<!-- model-zoo:start -->', '<!-- model-zoo:end -->'
TOOL = 'python tools/analysis_tools/model_zoo.py'

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


class Progress:
    """``[i/n] what`` lines on stderr, one per model measured."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def step(self, what: str) -> None:
        """Announce the next model."""
        self.done += 1
        print(f'[{self.done}/{self.total}] {what}', file=sys.stderr, flush=True)


def count_value(text: str) -> int:
    """The integer a formatted count stands for, exactly (no float rounding).

    Example:
        >>> count_value('160.09G'), count_value('43.14M')
        (160090000000, 43140000)
    """
    scale = {'M': 10**6, 'G': 10**9}[text[-1]]
    return int(Decimal(text[:-1]) * scale)


# --------------------------------------------------------------------- classifiers
@dataclass(frozen=True)
class Classifier:
    """One measured classifier row: the config and counts as the tables round them."""

    config: str  # relative to configs/pretrain
    size: int
    macs: str
    paper_convention_flops: str
    params: str
    params_no_bn: str
    paper_flops: float  # M
    paper_params: float  # M
    paper_top1: float | None


def measure_classifiers(rows: list[tuple], progress: Progress) -> list[Classifier]:
    """Build and count each config of ``rows`` (see CONDENSENETS)."""
    out = []
    for cfg, size, paper_flops, paper_params, paper_top1 in rows:
        progress.step(f'configs/pretrain/{cfg}')
        model = init_model(f'configs/pretrain/{cfg}')
        counts = count_complexity(model, (3, size, size))
        out.append(Classifier(
            cfg, size, format_count(counts['conv_linear_macs']),
            format_count(counts['paper_flops']), format_count(counts['params']),
            format_count(counts['params_no_bn']), paper_flops, paper_params, paper_top1))
    return out


def table(rows: list[Classifier], no_bn: bool, params_label: str) -> list[str]:
    """Markdown rows of measured classifiers (``no_bn``: the params without BN)."""
    out = [f'| config (`configs/pretrain/...`) | input | conv+linear MACs | paper-convention '
           f'FLOPs | paper | {params_label} | paper | paper top-1 |',
           '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in rows:
        top1 = '–' if r.paper_top1 is None else f'{r.paper_top1}%'
        out.append(f'| `{r.config}` | {r.size} | {r.macs} | {r.paper_convention_flops} | '
                   f'{r.paper_flops}M | {r.params_no_bn if no_bn else r.params} | '
                   f'{r.paper_params}M | {top1} |')
    return out


# ----------------------------------------------------------------------- detectors
DETECTOR_SHAPE = (800, 1333)
PAPER_MAP = re.compile(r'^# Paper \(CondenseNetV2, Table 7\): ([\d.]+) mAP', re.M)

DETECTOR_INPUTS = ('configs/*.py', 'configs/_base_/**/*.py', 'mmsfr/models/**/*.py',
                   'mmsfr/analysis/complexity.py')
FINGERPRINT = re.compile(r'<!-- detectors: inputs sha256 ([0-9a-f]{16}) -->')
METAFILE_FINGERPRINT = re.compile(r'^# detectors: inputs sha256 ([0-9a-f]{16})$', re.M)
ROW = re.compile(r'^\| `(configs/[^`]+)` \| (\d+)x(\d+) \| ([\d.]+G) \| ([\d.]+G) \| '
                 r'([\d.]+M) \| ([\d.]+|–) \|$')


def detector_fingerprint() -> str:
    """Hash of everything the detector rows depend on (configs, model code, versions).

    Counting 20 detectors at 800x1333 takes minutes on a CPU, so ``--check`` compares
    this hash with the one recorded under the table (and in ``configs/metafile.yml``)
    instead of re-measuring (``--full`` re-measures); any change to a config or to the
    model code makes them stale.
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


@dataclass(frozen=True)
class Detector:
    """One measured detector: config, padded input and counts as the table rounds them."""

    config: str  # relative to the repo
    hw: tuple[int, int]
    macs: str
    backbone_macs: str
    params: str

    @property
    def paper_map(self) -> str | None:
        """The paper's COCO mAP from the config's header (None: not reported)."""
        found = PAPER_MAP.search((REPO / self.config).read_text())
        return found[1] if found else None

    def row(self) -> str:
        """The README table row."""
        return (f'| `{self.config}` | {self.hw[0]}x{self.hw[1]} | {self.macs} | '
                f'{self.backbone_macs} | {self.params} | {self.paper_map or "–"} |')

    @classmethod
    def from_row(cls, row: str) -> 'Detector':
        """Read back a README table row (see :meth:`row`)."""
        found = ROW.match(row)
        if found is None:
            raise ValueError(f'not a detector row: {row}')
        config, h, w, macs, backbone, params, _ = found.groups()
        return cls(config, (int(h), int(w)), macs, backbone, params)


def measure_detector(path: Path) -> Detector:
    """Count one detector config whole (and its backbone alone) at 800x1333."""
    model = init_model(path)
    hw, forward = config_forward(model, model.cfg, DETECTOR_SHAPE)
    counts = count_complexity(model, (3, *hw), forward=forward)
    backbone = count_complexity(model.backbone, (3, *hw),
                                forward=lambda m, x: m(x))['conv_linear_macs']
    return Detector(f'configs/{path.name}', hw, format_count(counts['conv_linear_macs'], 'G'),
                    format_count(backbone, 'G'), format_count(counts['params'], 'M'))


def detector_row(path: Path) -> str:
    """The table row of one detector config (whole detector and backbone)."""
    return measure_detector(path).row()


def detector_configs() -> list[Path]:
    """Every detector config (``configs/*.py``), sorted."""
    return sorted((REPO / 'configs').glob('*.py'))


def measure_detectors(progress: Progress) -> list[Detector]:
    """Measure every detector config."""
    out = []
    for path in detector_configs():
        progress.step(f'configs/{path.name}')
        out.append(measure_detector(path))
    return out


def detector_table(detectors: list[Detector], fingerprint: str) -> list[str]:
    """Rows for the detectors, then the inputs' fingerprint."""
    out = ['| config | input (padded) | detector conv+linear MACs | backbone MACs | params | '
           'paper mAP |', '| --- | --- | --- | --- | --- | --- |']
    out += [d.row() for d in detectors]
    return out + ['', f'<!-- detectors: inputs sha256 {fingerprint} -->']


def render(classifiers: list[Classifier], detectors: list[str]) -> str:
    """The generated README section from the measured rows (``detectors``: its lines)."""
    condensenets, shufflenets = split_classifiers(classifiers)
    lines = [START, '',
             'CondenseNets (deploy form; params without BatchNorm, as the papers count):', '']
    lines += table(condensenets, True, 'params (no BN)')
    lines += ['', 'ShuffleNets (megvii counts conv + linear multiply-adds and all params; the '
              "SFR models' paper FLOPs come from the CondenseNetV2 authors' counter, the "
              'paper-convention column):', '']
    lines += table(shufflenets, False, 'params')
    lines += ['', 'Detectors (RetinaNet / Faster R-CNN + FPN, whole model in `mode=\'tensor\'` '
              'at 800x1333 padded to a multiple of 32; mAP: COCO minival, paper Table 7, '
              'not measured here):', '']
    lines += detectors
    lines += ['', f'_Generated by `{TOOL}`._', END]
    return '\n'.join(lines)


def split_classifiers(rows: list[Classifier]) -> tuple[list[Classifier], list[Classifier]]:
    """(CondenseNets, ShuffleNets) in the order of the two lists."""
    n = len(CONDENSENETS)
    return rows[:n], rows[n:]


# ----------------------------------------------------------------------- metafiles
@dataclass(frozen=True)
class Collection:
    """A model family: one mim ``Collection`` (descriptions only, no numbers)."""

    name: str
    metafile: str  # relative to the repo
    prefix: str  # configs of this family start with it
    training_data: str
    architecture: tuple[str, ...]
    paper_title: str
    paper_url: str
    readme: str
    released_by: str | None = None  # repository of the authors' released weights


CONDENSENETV2_PAPER = ('CondenseNet V2: Sparse Feature Reactivation for Deep Networks',
                       'https://arxiv.org/abs/2104.04382')
SHUFFLENETV2_PAPER = ('ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture '
                      'Design', 'https://arxiv.org/abs/1807.11164')
MEGVII = 'https://github.com/megvii-model/ShuffleNet-Series'
SHUFFLE = ('Channel Shuffle', 'Channel Split', 'Depthwise Convolution')
PRETRAIN = 'configs/pretrain'
COLLECTIONS = [
    Collection('CondenseNetV2', f'{PRETRAIN}/condensenetv2/metafile.yml',
               'condensenetv2/', 'ImageNet-1k',
               ('Learned Group Convolution', 'Sparse Feature Reactivation',
                'Dense Connections'), *CONDENSENETV2_PAPER, 'docs/condensenetv2.md',
               'https://github.com/jianghaojun/CondenseNetV2'),
    Collection('CondenseNet', f'{PRETRAIN}/condensenet/metafile.yml', 'condensenet/',
               'ImageNet-1k', ('Learned Group Convolution', 'Dense Connections'),
               'CondenseNet: An Efficient DenseNet using Learned Group Convolutions',
               'https://arxiv.org/abs/1711.09224', 'docs/condensenetv2.md',
               'https://github.com/ShichenLiu/CondenseNet'),
    Collection('ShuffleNetV2', f'{PRETRAIN}/shufflenetv2/metafile.yml',
               'shufflenetv2/shufflenetv2-', 'ImageNet-1k', SHUFFLE, *SHUFFLENETV2_PAPER,
               'docs/sfr_shufflenet.md', MEGVII),
    Collection('ShuffleNetV2+', f'{PRETRAIN}/shufflenetv2/metafile.yml',
               'shufflenetv2/shufflenetv2plus-', 'ImageNet-1k',
               (*SHUFFLE, 'Squeeze-and-Excitation', 'Hard Swish'), *SHUFFLENETV2_PAPER,
               'docs/sfr_shufflenet.md', MEGVII),
    Collection('SFR-ShuffleNetV2', f'{PRETRAIN}/shufflenetv2/metafile.yml',
               'shufflenetv2/sfr-shufflenetv2-', 'ImageNet-1k',
               (*SHUFFLE, 'Sparse Feature Reactivation'), *CONDENSENETV2_PAPER,
               'docs/sfr_shufflenet.md'),
    Collection('SFR-ShuffleNetV2+', f'{PRETRAIN}/shufflenetv2/metafile.yml',
               'shufflenetv2/sfr-shufflenetv2plus-', 'ImageNet-1k',
               (*SHUFFLE, 'Squeeze-and-Excitation', 'Hard Swish',
                'Sparse Feature Reactivation'), *CONDENSENETV2_PAPER,
               'docs/sfr_shufflenet.md'),
    Collection('RetinaNet (mmsfr backbones)', 'configs/metafile.yml', 'retinanet_', 'COCO',
               ('RetinaNet', 'Focal Loss', 'FPN'),
               'Focal Loss for Dense Object Detection', 'https://arxiv.org/abs/1708.02002',
               'docs/backbone_swap.md'),
    Collection('Faster R-CNN (mmsfr backbones)', 'configs/metafile.yml', 'faster_rcnn_',
               'COCO', ('Faster R-CNN', 'RPN', 'FPN'),
               'Faster R-CNN: Towards Real-Time Object Detection with Region Proposal '
               'Networks', 'https://arxiv.org/abs/1506.01497', 'docs/backbone_swap.md'),
]
METAFILES = list(dict.fromkeys(c.metafile for c in COLLECTIONS))
DETECTOR_METAFILE = 'configs/metafile.yml'
INDEX = 'model-index.yml'
HEADER = (f'# Generated by {TOOL}\n'
          "# (with the README's model-zoo tables) from the configs and the papers' numbers\n"
          f'# listed in it; do not edit by hand: --check fails on any difference.\n')


def collection_of(config: str) -> Collection:
    """The collection of a config (relative to configs/pretrain, or a detector's name)."""
    for c in sorted(COLLECTIONS, key=lambda c: -len(c.prefix)):
        if config.startswith(c.prefix):
            return c
    raise ValueError(f'{config} belongs to no collection of {__file__}; add one')


def collection_entry(c: Collection) -> dict:
    """The ``Collections`` item of one family."""
    return dict(Name=c.name,
                Metadata={'Training Data': c.training_data,
                          'Architecture': list(c.architecture)},
                Paper=dict(Title=c.paper_title, URL=c.paper_url),
                README=c.readme)


def checkpoint_name(config: str) -> str:
    """Where the weights of a pretrain config go (the name detection configs read).

    Example:
        >>> checkpoint_name('shufflenetv2/shufflenetv2-x1_0_8xb128_in1k.py')
        'checkpoints/shufflenetv2_x1_0_deploy_in1k.pth'
        >>> checkpoint_name('condensenet/condensenet-v1-g4_deploy_in1k.py')
        'checkpoints/condensenet_v1_g4_deploy_in1k.pth'
    """
    stem = re.sub(r'_(\d+xb\d+|deploy)_', '_deploy_', Path(config).stem)
    return f'checkpoints/{stem.replace("-", "_")}.pth'


def train_config(config: str) -> str:
    """The config a ``*_deploy_*`` config derives from (its one ``_base_``), else itself."""
    path = REPO / PRETRAIN / config
    if '_deploy_' not in path.name:
        return f'{PRETRAIN}/{config}'
    for node in ast.parse(path.read_text()).body:
        if (isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_' for t in node.targets)):
            bases = ast.literal_eval(node.value)
            base = bases[0] if isinstance(bases, list) else bases
            return (path.parent / base).resolve().relative_to(REPO).as_posix()
    raise ValueError(f'{path} has no _base_ to train with')


def weights_recipe(config: str) -> tuple[list[str], str | None]:
    """(commands that make the checkpoint of a pretrain config, converter model name)."""
    full = f'{PRETRAIN}/{config}'
    out = checkpoint_name(config)
    for name, entry in sorted(OFFICIAL_MODELS.items()):
        if entry.deploy_config == full:
            return [f'python tools/model_converters/official_to_mmsfr.py --model {name} '
                    f'RELEASED_FILE {out}'], name
    train = train_config(config)
    work = f'work_dirs/{Path(train).stem}'
    return [f'python tools/train.py {train} --work-dir {work}',
            f'python tools/convert_to_deploy.py {train} "$(cat {work}/last_checkpoint)" '
            f'{out}'], None


def dataset_of(config: str) -> str:
    """The dataset named by a pretrain config's suffix."""
    return 'CIFAR-10' if config.endswith('_cifar10.py') else 'ImageNet-1k'


def classifier_entry(r: Classifier) -> dict:
    """The ``Models`` item of one measured classifier."""
    c = collection_of(r.config)
    dataset = dataset_of(r.config)
    metadata = {'FLOPs': count_value(r.macs),
                'Paper-convention FLOPs': count_value(r.paper_convention_flops),
                'Parameters': count_value(r.params),
                'Parameters (no BN)': count_value(r.params_no_bn),
                'Input Size': r.size}
    if dataset != c.training_data:
        metadata['Training Data'] = dataset
    entry = {'Name': Path(r.config).stem, 'In Collection': c.name,
             'Config': f'{PRETRAIN}/{r.config}', 'Metadata': metadata}
    if r.paper_top1 is not None:
        entry['Results'] = [dict(Task='Image Classification', Dataset=dataset,
                                 Metrics={'Top 1 Accuracy': r.paper_top1})]
        entry['Results Source'] = ("the papers' / authors' published top-1 accuracy (100 - "
                                   'the reported top-1 error); not measured by mmsfr')
    entry['Paper Complexity'] = {'FLOPs': int(Decimal(str(r.paper_flops)) * 10**6),
                                 'Parameters': int(Decimal(str(r.paper_params)) * 10**6)}
    recipe, converter = weights_recipe(r.config)
    if converter is not None:
        entry['Converted From'] = {'Code': c.released_by,
                                   'Converter': f'official_to_mmsfr.py --model {converter}'}
    entry['Weights Recipe'] = recipe
    return entry


def backbone_checkpoint(config: str) -> str | None:
    """The pretrained backbone file a detector config reads (from its backbone fragment)."""
    text = (REPO / config).read_text()
    fragment = re.search(r"'(_base_/backbones/\w+\.py)'", text)
    if fragment is None:
        return None
    found = re.search(r"checkpoint='([^']+)'",
                      (REPO / 'configs' / fragment[1]).read_text())
    return found[1] if found else None


def detector_entry(d: Detector) -> dict:
    """The ``Models`` item of one measured detector."""
    c = collection_of(Path(d.config).name)
    metadata = {'FLOPs': count_value(d.macs), 'Backbone FLOPs': count_value(d.backbone_macs),
                'Parameters': count_value(d.params), 'Input Size': f'{d.hw[0]}x{d.hw[1]}'}
    checkpoint = backbone_checkpoint(d.config)
    if checkpoint:
        metadata['Backbone Checkpoint'] = checkpoint
    entry = {'Name': Path(d.config).stem, 'In Collection': c.name, 'Config': d.config,
             'Metadata': metadata}
    if d.paper_map is not None:
        entry['Results'] = [{'Task': 'Object Detection', 'Dataset': 'COCO',
                             'Metrics': {'box AP': float(d.paper_map)}}]
        entry['Results Source'] = ('the CondenseNetV2 paper, Table 7 (COCO minival); not '
                                   'measured by mmsfr')
    entry['Weights Recipe'] = [f'python tools/train.py {d.config}']
    return entry


class _Dumper(yaml.SafeDumper):
    """Indents list items under their key, as OpenMMLab's metafiles do."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):  # noqa: D102
        return super().increase_indent(flow, False)


def dump_yaml(data: dict) -> str:
    """Deterministic block-style YAML (keys in insertion order)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=10**6, default_flow_style=False)


def render_metafiles(classifiers: list[Classifier], detectors: list[Detector],
                     fingerprint: str) -> dict[str, str]:
    """``{path relative to the repo: text}`` of model-index.yml and every metafile."""
    models: dict[str, list[dict]] = {m: [] for m in METAFILES}
    for r in classifiers:
        models[collection_of(r.config).metafile].append(classifier_entry(r))
    for d in detectors:
        models[collection_of(Path(d.config).name).metafile].append(detector_entry(d))
    out = {INDEX: HEADER + dump_yaml({'Import': METAFILES})}
    for metafile in METAFILES:
        head = HEADER
        if metafile == DETECTOR_METAFILE:
            head += f'# detectors: inputs sha256 {fingerprint}\n'
        collections = [collection_entry(c) for c in COLLECTIONS if c.metafile == metafile]
        out[metafile] = head + dump_yaml({'Collections': collections,
                                          'Models': models[metafile]})
    return out


def recorded_detectors(root: Path) -> list[Detector] | None:
    """The detectors as measured in ``root/configs/metafile.yml`` if its fingerprint is
    current (None otherwise: missing, unreadable or made from other inputs)."""
    path = root / DETECTOR_METAFILE
    try:
        text = path.read_text()
        found = METAFILE_FINGERPRINT.search(text)
        if found is None or found[1] != detector_fingerprint():
            return None
        out = []
        for model in yaml.safe_load(text)['Models']:
            meta = model['Metadata']
            h, w = (int(v) for v in meta['Input Size'].split('x'))
            out.append(Detector(model['Config'], (h, w), format_count(meta['FLOPs'], 'G'),
                                format_count(meta['Backbone FLOPs'], 'G'),
                                format_count(meta['Parameters'], 'M')))
        return out
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError):
        return None


def shown(root: Path, rel: str) -> str:
    """How to name a metafile in messages: relative to the repo, else its full path."""
    return rel if root.resolve() == REPO else str(root / rel)


def write_metafiles(files: dict[str, str], root: Path) -> None:
    """Write the rendered files under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f'wrote {", ".join(shown(root, rel) for rel in files)}')


def stale_metafiles(files: dict[str, str], root: Path) -> list[tuple[str, str]]:
    """``(file, 'is missing' / 'is out of date')`` for the files under ``root`` that
    differ from ``files``."""
    stale = []
    for rel, text in files.items():
        path = root / rel
        if not path.is_file():
            stale.append((rel, 'is missing'))
        elif path.read_text() != text:
            stale.append((rel, 'is out of date'))
    return stale


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--check', action='store_true',
                      help='exit 1 if README.md or the metafiles are stale')
    mode.add_argument('--print', action='store_true', help='print the tables only')
    parser.add_argument('--metafiles', action='store_true',
                        help='only model-index.yml and the metafiles: write them (or '
                             'with --check, check them); README.md is left alone')
    parser.add_argument('--full', action='store_true',
                        help='with --check: re-measure the detectors too instead of '
                             'comparing the fingerprint of their inputs (minutes on a CPU)')
    parser.add_argument('--readme', default=str(REPO / 'README.md'), help='README to update')
    parser.add_argument('--metafile-root', default=str(REPO),
                        help='directory holding model-index.yml and configs/**/metafile.yml '
                             '(default: the repository)')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.print and args.metafiles:
        parser.error('--print prints the README tables; it does not take --metafiles')
    return args


def readme_section(readme: Path) -> tuple[str, str]:
    """(README text, its current generated section); exits through ValueError if absent."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f'{readme} has no {START} ... {END} section')
    return text, text[text.index(START):text.index(END) + len(END)]


def recorded_rows(section: str) -> list[str] | None:
    """The README's detector lines (table + fingerprint) if its fingerprint is current."""
    recorded = FINGERPRINT.search(section)
    if recorded is None or recorded[1] != detector_fingerprint():
        return None
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith('| config | input'))
    last = next(i for i, line in enumerate(lines) if FINGERPRINT.search(line))
    return lines[first:last + 1]


@tool_main
def main(argv: list[str] | None = None) -> int:
    """Measure, then write or check; see the module docstring. Returns the exit status."""
    args = parse_args(argv)
    root = Path(args.metafile_root)
    readme = Path(args.readme)
    use_readme = not args.metafiles
    text = section = ''
    if use_readme and not args.print:
        text, section = readme_section(readme)
    reuse = args.check and not args.full  # compare fingerprints instead of re-measuring
    classifier_rows = CONDENSENETS + SHUFFLENETS
    progress = Progress(len(classifier_rows) + (0 if reuse else len(detector_configs())))
    classifiers = measure_classifiers(classifier_rows, progress)
    fingerprint = detector_fingerprint()
    detectors = None if reuse else measure_detectors(progress)

    if args.print:
        print(render(classifiers, detector_table(detectors, fingerprint)))
        return 0
    problems, rows = [], None
    if use_readme:
        rows = (recorded_rows(section) if detectors is None
                else detector_table(detectors, fingerprint))
        if rows is None:
            problems.append(f'{readme} detector table is out of date (its configs or the '
                            f'model code changed); run {TOOL}')
        elif args.check and section != render(classifiers, rows):
            problems.append(f'{readme} model-zoo tables are out of date; run {TOOL}')
        elif not args.check:
            readme.write_text(text.replace(section, render(classifiers, rows)))
            print(f'updated {readme}')
    measured = detectors if detectors is not None else recorded_detectors(root)
    files = render_metafiles(classifiers, measured or [], fingerprint)
    if measured is None:  # only with --check: the detector entries cannot be regenerated
        what = 'is missing' if not (root / DETECTOR_METAFILE).is_file() else (
            'has detector entries made from other configs or model code')
        problems.append(f'{shown(root, DETECTOR_METAFILE)} {what}; run {TOOL}')
        del files[DETECTOR_METAFILE]
    if not args.check:
        write_metafiles(files, root)
    else:
        problems += [f'{shown(root, rel)} {what}; run {TOOL}'
                     for rel, what in stale_metafiles(files, root)]
        if rows is not None and measured is not None and detectors is None \
                and [d.row() for d in measured] != rows[2:-2]:
            problems.append(f'{readme} detector table and {shown(root, DETECTOR_METAFILE)} '
                            f'disagree; run {TOOL}')
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    if args.check:
        checked = 'metafiles' if args.metafiles else 'model-zoo tables and metafiles'
        print(f'{checked} are up to date')
    return 0


if __name__ == '__main__':
    sys.exit(main())
