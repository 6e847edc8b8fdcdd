#!/usr/bin/env python
"""Check mmsfr on this machine's GPUs and print one verdict table.

Run it once on a new GPU machine (after set-up). It checks:

* mmcv's compiled ops (nms, RoIAlign) on CUDA;
* every backbone family in both forms on the GPU: the train-time form's forward and
  backward under fp16 and bf16 autocast, and the deploy form's forward equal to the
  same model on the CPU;
* condensation and deploy conversion on the GPU (the deploy form equals the masked one);
* RetinaNet-CondenseNetV2-A trained for 20 iterations with AMP on generated demo data
  (``tools/train.py --amp``);
* DDP over all visible GPUs (nccl) for 10 iterations with the ``CondensationHook``:
  the masks must be identical on every rank.

Without a usable GPU it says so in one line and exits 0. ``--device cpu`` runs the
same checks on the CPU instead (gloo for DDP, bf16 autocast only, no AMP), which is
how the checks themselves are tested. Exit status 1 when any check fails.

Example:
    python tools/misc/check_gpu.py
    python tools/misc/check_gpu.py --skip-train --skip-ddp   # model checks only
    python tools/misc/check_gpu.py --device cpu
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

#: (name, class, arguments) of the backbones checked, small members of each family.
BACKBONES = [
    ('CondenseNetV2-A', 'CondenseNetV2', dict(arch='a')),
    ('CondenseNet-A', 'CondenseNet', dict(arch='a')),
    ('ShuffleNetV2 0.5x', 'ShuffleNetV2', dict(arch='0.5x')),
    ('ShuffleNetV2+ S', 'ShuffleNetV2Plus', dict(arch='small')),
    ('SFR-ShuffleNetV2 0.5x', 'SFRShuffleNetV2', dict(arch='0.5x')),
    ('SFR-ShuffleNetV2+ S', 'SFRShuffleNetV2Plus', dict(arch='small')),
]
#: Largest relative difference accepted between two devices (fp32, TF32 off).
TOLERANCE = 1e-4


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off inside the block (GPU convolutions and matmuls in full fp32)."""
    import torch
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def build_backbone(cls_name: str, kwargs: dict):
    import mmsfr.models as models
    from mmsfr.testing import randomise_bn
    model = getattr(models, cls_name)(**kwargs)
    return randomise_bn(model)


def condensed(model):
    """``model`` with every LGC/SFR layer pruned to the end of its schedule."""
    from mmsfr.models import condense_model
    condense_model(model, 1.0)
    return model


def check_mmcv_ops(device: str) -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from check_mmcv_ops import run_ops
    run_ops(device)
    return f'nms, roi_align on {device}'


def check_train_time(device: str, name: str, cls_name: str, kwargs: dict) -> str:
    """Forward + backward of the train-time form under each autocast dtype."""
    import torch
    dtypes = [torch.float16, torch.bfloat16] if device == 'cuda' else [torch.bfloat16]
    if device == 'cuda' and not torch.cuda.is_bf16_supported():
        dtypes = [torch.float16]
    model = build_backbone(cls_name, kwargs).to(device).train()
    x = torch.rand(2, 3, 64, 64, device=device)
    for dtype in dtypes:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype):
            outs = model(x)
        loss = sum(o.float().mean() for o in outs)
        loss.backward()
        if not torch.isfinite(loss):
            raise RuntimeError(f'{dtype} autocast loss is {loss.item()}')
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        if any(g is None or g.device.type != device or not torch.isfinite(g).all()
               for g in grads):
            raise RuntimeError(f'{dtype} autocast: missing or non-finite gradients')
    return 'fwd+bwd under ' + ', '.join(str(d).replace('torch.', '') for d in dtypes)


def check_deploy(device: str, name: str, cls_name: str, kwargs: dict) -> str:
    """The deploy form on ``device`` against the same model on the CPU (the CPU's C++
    kernels against its PyTorch ops with ``--device cpu``)."""
    import torch
    from mmsfr.models import convert_to_deploy
    from mmsfr.ops import native_kernels
    from mmsfr.testing import rel_diff
    model = convert_to_deploy(condensed(build_backbone(cls_name, kwargs)).eval())
    x = torch.rand(2, 3, 96, 80)
    with torch.no_grad(), exact_fp32():
        if device == 'cpu':
            with native_kernels(False):
                reference = model(x)
        else:
            reference = model(x)
        outs = model.to(device)(x.to(device))
    worst = max(rel_diff(o.cpu(), r) for o, r in zip(outs, reference))
    if worst > TOLERANCE:
        raise RuntimeError(f'deploy output differs from the reference by {worst:.1e}')
    return f'rel. diff {worst:.1e} vs {"PyTorch ops" if device == "cpu" else "CPU"}'


def check_conversion(device: str) -> str:
    """Condense and convert CondenseNetV2-A on ``device``; deploy equals masked."""
    import torch
    from mmsfr.models import convert_to_deploy
    from mmsfr.testing import rel_diff
    model = condensed(build_backbone('CondenseNetV2', dict(arch='a')).to(device)).eval()
    x = torch.rand(1, 3, 96, 96, device=device)
    with torch.no_grad(), exact_fp32():
        masked = model(x)
        deployed = convert_to_deploy(model)(x)
    moved = [n for n, t in (*model.named_parameters(), *model.named_buffers())
             if t.device.type != device]
    if moved:
        raise RuntimeError(f'conversion left {moved[:3]} off {device}')
    worst = max(rel_diff(d, m) for d, m in zip(deployed, masked))
    if worst > TOLERANCE:
        raise RuntimeError(f'deploy form differs from the masked form by {worst:.1e}')
    return f'deploy vs masked rel. diff {worst:.1e}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def check_train(device: str, work: Path, iters: int = 20) -> str:
    """RetinaNet-CondenseNetV2-A, ``iters`` iterations of batch 2 through
    tools/train.py (with ``--amp`` on CUDA) on generated shapes data."""
    from mmsfr.testing import tiny_demo_config
    cfg = tiny_demo_config(work, train=2 * iters, val=4, size=128)
    args = [sys.executable, str(REPO / 'tools/train.py'), str(cfg), '--work-dir',
            str(work / 'train')]
    if device == 'cuda':
        args.append('--amp')
    out = subprocess.run(args, capture_output=True, text=True, cwd=work)
    log = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f'tools/train.py failed: {log.strip().splitlines()[-1]}')
    if f'[{iters}/{iters}]' not in log or 'loss: nan' in log:
        raise RuntimeError(f'expected {iters} iterations with finite losses')
    return f'{iters} iterations' + (' with AMP' if device == 'cuda' else ' (fp32 on CPU)')


def check_ddp(device: str, work: Path, iters: int = 10) -> str:
    """``iters`` DDP iterations with the CondensationHook on every visible GPU (2 CPU
    processes with ``--device cpu``); the masks must match on every rank."""
    import torch
    world = torch.cuda.device_count() if device == 'cuda' else 2
    result = work / 'ddp.json'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
        [str(REPO), os.environ.get('PYTHONPATH', '')]))
    out = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={world}',
         f'--master_port={_free_port()}', __file__, '--ddp-worker', str(result),
         '--device', device, '--iters', str(iters)],
        capture_output=True, text=True, env=env, cwd=work)
    if out.returncode != 0 or not result.exists():
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if 'Error' in ln]
        raise RuntimeError(f'DDP run failed: {(lines or ["no error message"])[0].strip()}')
    found = json.loads(result.read_text())
    if len(set(found['fingerprints'])) != 1:
        raise RuntimeError(f'masks differ between ranks: {found["fingerprints"]}')
    return (f'{world} ranks ({found["backend"]}), {found["pruned"]} layer-stages pruned, '
            'masks identical')


def ddp_worker(result: str, device: str, iters: int) -> None:
    """One rank of :func:`check_ddp` (started by torch.distributed.run)."""
    import torch
    from mmengine.dist import all_gather_object, get_rank
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch import nn
    from torch.utils.data import TensorDataset

    import mmsfr  # noqa: F401
    from mmsfr.engine.hooks import CondensationHook
    from mmsfr.models import CondenseNetV2
    from mmsfr.models.layers import condensing_layers
    from mmsfr.utils.dist import close_dist, init_cpu_dist

    class TinyClassifier(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = CondenseNetV2(arch=dict(
                depths=(2, 2), growths=(8, 8), groups=4, condense_factor=4,
                sparse_factor=4), out_indices=(1,))
            self.fc = nn.Linear(self.backbone.out_channels[0], 4)

        def forward(self, x, y, mode='loss'):
            logits = self.fc(self.backbone(x)[0].mean((2, 3)))
            return dict(loss=nn.functional.cross_entropy(logits, y))

    class MaskFingerprints(Hook):
        def after_train(self, runner) -> None:
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            layers = condensing_layers(model)
            digest = [float(m._mask.double().flatten().dot(torch.arange(
                m._mask.numel(), dtype=torch.float64, device=m._mask.device)))
                for _, m in layers]
            gathered = all_gather_object((digest, sum(m.stage for _, m in layers)))
            if get_rank() == 0:
                Path(result).write_text(json.dumps(dict(
                    fingerprints=[json.dumps(d) for d, _ in gathered],
                    pruned=gathered[0][1], backend=torch.distributed.get_backend())))

    if device == 'cpu':
        init_cpu_dist('pytorch')
    generator = torch.Generator().manual_seed(get_rank() if torch.distributed.is_initialized()
                                              else int(os.environ.get('RANK', 0)))
    data = TensorDataset(torch.rand(8 * iters, 3, 16, 16, generator=generator),
                         torch.randint(0, 4, (8 * iters,), generator=generator))

    def collate(batch):
        return dict(x=torch.stack([b[0] for b in batch]), y=torch.stack([b[1] for b in batch]))

    runner = Runner(
        model=TinyClassifier(), work_dir=str(Path(result).parent / 'ddp'),
        train_dataloader=dict(dataset=data, batch_size=4, collate_fn=collate,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=iters),
        custom_hooks=[CondensationHook(end=0.5), MaskFingerprints()],
        default_hooks=dict(checkpoint=None), launcher='pytorch',
        # on CPU, DDP without GPU device_ids (mmengine passes [LOCAL_RANK] by default)
        cfg=dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None)
                 if device == 'cpu' else None),
        env_cfg=dict(dist_cfg=dict(backend='nccl' if device == 'cuda' else 'gloo')),
        randomness=dict(seed=0))
    runner.train()
    close_dist()


def run_checks(device: str, skip_train: bool, skip_ddp: bool) -> list[tuple[str, str, str]]:
    """Run every check; return ``(check, verdict, detail)`` rows."""
    checks: list[tuple[str, Callable[[], str]]] = [
        ('mmcv ops', lambda: check_mmcv_ops(device))]
    for name, cls_name, kwargs in BACKBONES:
        checks.append((f'{name} train-time',
                       lambda a=(name, cls_name, kwargs): check_train_time(device, *a)))
        checks.append((f'{name} deploy',
                       lambda a=(name, cls_name, kwargs): check_deploy(device, *a)))
    checks.append(('condensation + conversion', lambda: check_conversion(device)))
    work = Path(tempfile.mkdtemp(prefix='mmsfr-check-gpu-'))
    if not skip_train:
        checks.append(('RetinaNet-CondenseNetV2-A training', lambda: check_train(device, work)))
    if not skip_ddp:
        checks.append(('DDP + CondensationHook', lambda: check_ddp(device, work)))
    rows = []
    for name, check in checks:
        try:
            rows.append((name, 'PASS', check()))
        except Exception as err:  # noqa: BLE001 (a verdict per check, not a crash)
            if os.environ.get('MMSFR_DEBUG'):
                traceback.print_exc()
            rows.append((name, 'FAIL', f'{type(err).__name__}: {err}'.splitlines()[0]))
        print(f'{rows[-1][1]:4}  {name}', file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f'| {"check":{width}} | verdict | detail |', f'|{"-" * (width + 2)}|---------|--------|']
    lines += [f'| {n:{width}} | {v:7} | {d} |' for n, v, d in rows]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda',
                        help='where to run the checks (cpu: to test the checks themselves)')
    parser.add_argument('--skip-train', action='store_true',
                        help='skip the 20-iteration RetinaNet training')
    parser.add_argument('--skip-ddp', action='store_true', help='skip the DDP check')
    parser.add_argument('--ddp-worker', metavar='RESULT', help=argparse.SUPPRESS)
    parser.add_argument('--iters', type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.device, args.iters)
        return 0
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        print(f'check_gpu: no usable CUDA GPU (torch {torch.__version__}, CUDA build: '
              f'{torch.version.cuda or "no"}); nothing to check')
        return 0
    import mmsfr  # noqa: F401
    rows = run_checks(args.device, args.skip_train, args.skip_ddp)
    where = (f'{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}'
             if args.device == 'cuda' else 'CPU')
    print(f'mmsfr {mmsfr.__version__}, torch {torch.__version__}, {where}')
    print(format_table(rows))
    failed = [r[0] for r in rows if r[1] == 'FAIL']
    print(f'{len(rows) - len(failed)} passed, {len(failed)} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
