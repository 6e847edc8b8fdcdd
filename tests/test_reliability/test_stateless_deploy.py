"""A deploy CondenseNetV2's inference forward is a function of its current parameters
and buffers, whoever wrote them: after any write it equals a freshly built model
loaded with the same state.

Every test first runs inference forwards (C++ kernels on and off), so that anything
kept from them would be stale afterwards; writes through ``.data`` and BatchNorm
updates in training mode leave tensor version counters unchanged.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from mmsfr.models import CondenseNetV2
from mmsfr import ops
from mmsfr.testing import randomise_bn, rel_diff

#: Small deploy model with every kind of layer: hard-swish, SE, SFR; stride 1.
ARCH = dict(depths=(2, 2), growths=(8, 8), groups=4, condense_factor=4, sparse_factor=4,
            hs_from=1, se_from=1, stem_stride=1)
TOL = 1e-5


def build(seed: int = 0) -> CondenseNetV2:
    """A deploy model with random weights and realistic BatchNorm statistics."""
    torch.manual_seed(seed)
    model = CondenseNetV2(ARCH, out_indices=(0, 1), deploy=True)
    return randomise_bn(model, seed).eval()


def inputs() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def inference(model: nn.Module, x: torch.Tensor, native_on: bool) -> list[torch.Tensor]:
    with torch.no_grad(), ops.native_kernels(native_on):
        return list(model(x))


def assert_equals_fresh_model(model: CondenseNetV2, x: torch.Tensor) -> list[torch.Tensor]:
    """``model``'s inference outputs (kernels on and off) equal those of a new model
    loaded with its state; returns them."""
    fresh = build(seed=123)
    fresh.load_state_dict(model.state_dict())
    fresh.train(model.training)
    expected = [out.detach() for out in fresh(x)]  # autograd: the canonical ops
    got = None
    for native_on in (True, False):
        got = inference(model, x, native_on)
        for a, b in zip(got, expected):
            assert rel_diff(a, b) < TOL, f'native={native_on}: {rel_diff(a, b):.3g}'
    return got


def train_forward_eval(model: CondenseNetV2, x: torch.Tensor) -> None:
    """A training forward (BatchNorm updates its running statistics), back to eval."""
    model.train()
    sum(out.mean() for out in model(x * 3)).backward()
    model.eval()


def train_inference_eval(model: CondenseNetV2, x: torch.Tensor) -> None:
    """The same with the forward in ``torch.no_grad`` (the in-place path)."""
    model.train()
    inference(model, x * 3, True)
    model.eval()


def data_writes(model: CondenseNetV2, x: torch.Tensor) -> None:
    """``.data`` writes of every conv weight and BatchNorm variance."""
    for name, p in model.named_parameters():
        if name.endswith('conv.weight'):
            p.data.mul_(2)
    for name, b in model.named_buffers():
        if name.endswith('running_var'):
            b.data.copy_(b.data * 0.5 + 0.1)


def swap_data(average: nn.Module, model: nn.Module) -> None:
    """Swap the parameters and buffers of two models as mmengine's ``EMAHook`` does
    before and after every validation (``.data`` copies)."""
    pairs = zip([*average.parameters(), *average.buffers()],
                [*model.parameters(), *model.buffers()])
    for p_avg, p_src in pairs:
        tmp = p_avg.data.clone()
        p_avg.data.copy_(p_src.data)
        p_src.data.copy_(tmp)


def ema_swap(model: CondenseNetV2, x: torch.Tensor) -> None:
    """Swap in the weights and buffers of an average model."""
    swap_data(build(seed=1), model)


def optimizer(make: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
              ) -> Callable[[CondenseNetV2, torch.Tensor], None]:
    def steps(model: CondenseNetV2, x: torch.Tensor) -> None:
        opt = make(list(model.parameters()))
        for _ in range(2):
            opt.zero_grad()
            sum(out.square().mean() for out in model(x)).backward()
            opt.step()
    return steps


def load_state(assign: bool) -> Callable[[CondenseNetV2, torch.Tensor], None]:
    def load(model: CondenseNetV2, x: torch.Tensor) -> None:
        model.load_state_dict(build(seed=2).state_dict(), assign=assign)
    return load


WRITERS = {
    'train-forward-eval': train_forward_eval,
    'train-inference-eval': train_inference_eval,
    'data-writes': data_writes,
    'ema-swap': ema_swap,
    'sgd-steps': optimizer(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    'fused-adam-steps': optimizer(lambda p: torch.optim.Adam(p, lr=0.05, fused=True)),
    'load-state-dict': load_state(assign=False),
    'load-state-dict-assign': load_state(assign=True),
}


@pytest.mark.parametrize('writer', list(WRITERS))
def test_inference_after_a_write_equals_a_fresh_model(writer):
    model, x = build(), inputs()
    before = assert_equals_fresh_model(model, x)  # inference forwards ran
    WRITERS[writer](model, x)
    after = assert_equals_fresh_model(model, x)
    assert max(rel_diff(a, b) for a, b in zip(after, before)) > 1e-3  # the write mattered


def test_ema_swaps_back_and_forth_each_equal_a_fresh_model():
    model, average, x = build(), build(seed=1), inputs()
    original = assert_equals_fresh_model(model, x)
    swap_data(average, model)
    swapped = assert_equals_fresh_model(model, x)
    swap_data(average, model)
    back = assert_equals_fresh_model(model, x)
    assert max(rel_diff(a, b) for a, b in zip(swapped, original)) > 1e-3
    assert max(rel_diff(a, b) for a, b in zip(back, original)) < TOL


def test_mmengine_run_with_ema_then_inference_equals_a_fresh_model(tmp_path):
    from mmengine.hooks import EMAHook
    from mmengine.runner import Runner
    from mmpretrain.structures import DataSample
    from torch.utils.data import Dataset

    class Blobs(Dataset):
        """Two classes of 16x16 images: bright top half vs bright bottom half."""

        def __init__(self, n: int = 16) -> None:
            g = torch.Generator().manual_seed(0)
            self.labels = torch.randint(0, 2, (n,), generator=g)
            self.images = torch.randint(0, 60, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
            for i, y in enumerate(self.labels):
                self.images[i, :, slice(0, 8) if y == 0 else slice(8, 16)] += 150

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> dict:
            return dict(inputs=self.images[i],
                        data_samples=DataSample().set_gt_label(int(self.labels[i])))

    loader = dict(dataset=Blobs(), batch_size=4, collate_fn=dict(type='default_collate'),
                  sampler=dict(type='DefaultSampler', shuffle=False))
    torch.manual_seed(0)
    runner = Runner(
        model=dict(type='ImageClassifier',
                   data_preprocessor=dict(type='ClsDataPreprocessor', mean=[128] * 3,
                                          std=[64] * 3, num_classes=2),
                   backbone=dict(type='CondenseNetV2', arch=ARCH, out_indices=(0, 1),
                                 deploy=True),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=2, in_channels=48)),
        work_dir=str(tmp_path),
        train_dataloader=loader, val_dataloader=loader,
        val_evaluator=dict(type='Accuracy'), val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.2, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=2, val_interval=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=100,
                                           by_epoch=False, save_last=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='EMAHook', momentum=0.5, update_buffers=True)],
        randomness=dict(seed=0), default_scope='mmpretrain')
    backbone = runner.model.backbone
    randomise_bn(backbone)
    x = inputs()
    inference(backbone.eval(), x, True)  # a forward before training, e.g. a check
    runner.train()  # 2 iterations, then validation with the EMA weights swapped in
    ema = next(h for h in runner.hooks if isinstance(h, EMAHook))
    backbone.eval()
    trained = assert_equals_fresh_model(backbone, x)
    ema._swap_ema_parameters()  # as before every validation
    averaged = assert_equals_fresh_model(backbone, x)
    ema._swap_ema_parameters()
    assert max(rel_diff(a, b) for a, b in zip(trained, averaged)) > 1e-3
    assert_equals_fresh_model(backbone, x)
