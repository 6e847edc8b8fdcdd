"""CondenseNetV2 (sparse feature reactivation) and CondenseNet (learned group conv).

Both are dense networks: every layer appends ``k`` new channels to the features of
its block. A CondenseNetV2 layer also *reactivates* old features: a sparse 1x1 conv
from its new features adds into the old ones (SFR). Blocks are separated by a plain
2x2 average pool; the stem is a bias-free 3x3 conv, stride 2 (1 for CIFAR).
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.utils.checkpoint as cp
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .base import FreezableBackbone, resolve_out_indices
from ... import ops
from ..layers import (LearnedGroupConv, PreActConv, SparseFeatureReactivation,
                      SqueezeExcitation, avg_pool2x2, inference_fast_path)
from ..layers.fast_path import traced_inference
from ..layers.dense_plan import dense_plan, run_plan
from ..layers.norm_act import DEFAULT_NORM_CFG, build_norm
from ...utils.moved import moved_names


class DenseLayer(nn.Module):
    """One dense layer: LGC (i -> 4k) -> 3x3 group conv (4k -> k) [-> SE] [-> SFR].

    Returns ``cat([old + SFR(new), new])`` (``i + k`` channels); without SFR the old
    features pass unchanged.

    Args:
        in_channels: Input channels ``i``.
        growth: Growth rate ``k``.
        groups: Groups of the LGC, of the 3x3 conv and of the SFR.
        condense_factor: LGC condense factor C.
        sparse_factor: SFR sparse factor S, or None for no SFR (CondenseNet).
        bottleneck: LGC output width as a multiple of ``k``.
        act_cfg: Activation of every pre-activation unit in the layer.
        with_se: Squeeze-excite the new features (reduction 1; Linear form, no norm).
        with_cp: Recompute the layer in backward to save memory.
        deploy: Build the converted LGC/SFR forms.
        norm_cfg: Norm of every pre-activation unit (LGC, 3x3 conv, SFR), see
            :func:`~mmsfr.models.layers.condense.build_norm`.
    """

    def __init__(self, in_channels: int, growth: int, groups: int, condense_factor: int,
                 sparse_factor: int | None, bottleneck: int = 4,
                 act_cfg: dict = dict(type='ReLU'), with_se: bool = False,
                 with_cp: bool = False, deploy: bool = False,
                 norm_cfg: dict = DEFAULT_NORM_CFG) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.growth = growth
        self.conv_1 = LearnedGroupConv(in_channels, bottleneck * growth, groups=groups,
                                       factor=condense_factor, act_cfg=act_cfg, deploy=deploy,
                                       norm_cfg=norm_cfg)
        self.conv_2 = PreActConv(bottleneck * growth, growth, 3, groups=groups, act_cfg=act_cfg,
                                 norm_cfg=norm_cfg)
        self.se = SqueezeExcitation(growth, reduction=1) if with_se else None
        self.sfr = None
        if sparse_factor is not None:
            self.sfr = SparseFeatureReactivation(growth, in_channels, groups=groups,
                                                 factor=sparse_factor, act_cfg=act_cfg,
                                                 deploy=deploy, norm_cfg=norm_cfg)

    def new_features(self, x: torch.Tensor) -> torch.Tensor:
        """The ``k`` channels this layer appends (before reactivating ``x``)."""
        new = self.conv_2(self.conv_1(x), owned=True)
        return new if self.se is None else self.se(new)

    def write_features_(self, out: torch.Tensor, channels: int) -> None:
        """Inference step inside a dense block's pre-allocated buffer ``out``.

        The first ``channels`` channels of ``out`` are the layer's input: the layer
        reactivates them in place (SFR) and writes its ``k`` new features into the next
        ``k`` channels. A deploy layer runs the fused C++ operators of :mod:`mmsfr.ops`
        when they are on and implement it as it is now
        (:func:`~mmsfr.models.layers.dense_plan.dense_plan`); otherwise its modules run, writing the new
        features straight into their slice of ``out``. Either way every call reads the
        current parameters and buffers: nothing derived from them is kept between
        calls.
        """
        if ops.native_enabled():
            plan = dense_plan(self, out)
            if plan is not None:
                run_plan(plan, out, channels, self.growth)
                return
        mods = self._modules
        lgc, conv_2, se, sfr = mods['conv_1'], mods['conv_2'], mods.get('se'), mods.get('sfr')
        old, new = out[:, :channels], out[:, channels:channels + self.growth]
        # The deploy LGC gathers its inputs (all below `channels`) by index from the
        # whole buffer, which is contiguous where a channel slice of a batch is not.
        y = lgc(out if lgc.deploy else old)
        if se is None:
            conv_2(y, owned=True, out=new)
        else:
            raw = conv_2(y, owned=True)
            torch.mul(raw, se.excitation(raw), out=new)
        if sfr is not None:
            sfr.reactivate_(new, old)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.new_features(x)
        old = x if self.sfr is None else self.sfr(new, x)
        return torch.cat([old, new], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class DenseBlock(nn.Sequential):
    """A sequence of :class:`DenseLayer` s; without autograd it writes in place.

    With gradients enabled every layer returns a new concatenation (autograd needs the
    intermediate tensors). Without them (``torch.no_grad`` / ``inference_mode``) the
    block allocates its output once and each layer writes its new channels into the
    next free slice and reactivates the old ones in place, so the features are not
    re-copied ``L`` times. Both paths compute the same sums.
    ``torch.jit`` tracing, ONNX export, autocast and op counters take the functional
    path (see :func:`~mmsfr.models.layers.inference_fast_path`); ``torch.compile`` and
    ``torch.export`` of an inference forward keep the buffer and mmsfr's C++ operators
    when they are on (:func:`~mmsfr.models.layers.fast_path.traced_inference`).

    ``block(x, pool=True)`` is ``block(avg_pool2x2(x))``, the transition into every
    block after the first; without autograd it pools straight into the buffer.

    Example:
        >>> block = DenseBlock(DenseLayer(16, 8, 4, 4, 4), DenseLayer(24, 8, 4, 4, 4))
        >>> block.eval()(torch.rand(1, 16, 8, 8), pool=True).shape
        torch.Size([1, 32, 4, 4])
    """

    def forward(self, x: torch.Tensor, pool: bool = False) -> torch.Tensor:
        """The block's features: ``x`` (pooled first if ``pool``) and every layer's.

        Raises:
            ValueError: without autograd, when ``x`` is too small to pool (a side of 1)
                or empty in a spatial dimension (with autograd the canonical ops
                raise).
        """
        if not (inference_fast_path() or traced_inference() and ops.native_enabled()):
            return super().forward(avg_pool2x2(x) if pool else x)
        n, c, h, w = x.shape
        if pool:
            h, w = h // 2, w // 2
        if h == 0 or w == 0:
            size = f'{x.shape[-2]}x{x.shape[-1]}'
            raise ValueError(
                f'{type(self).__name__}: a {size} feature map '
                f'{f"pools to {h}x{w}" if pool else "is empty"}; the input image is too '
                'small for this block (every block after the first halves the features)')
        out = x.new_empty(n, c + sum(layer.growth for layer in self), h, w)
        if pool:
            avg_pool2x2(x, out=out[:, :c])
        else:
            out[:, :c] = x
        for layer in self:
            layer.write_features_(out, c)
            c += layer.growth
        return out


@MODELS.register_module()
class CondenseNetV2(FreezableBackbone):
    """CondenseNetV2 backbone (Yang et al., CVPR 2021), train-time or deploy form.

    ``arch`` is a key of :attr:`arch_settings` or a dict with the same fields:

    * ``depths`` / ``growths``: layers and growth rate per dense block;
    * ``groups``: G of every LGC, 3x3 conv and SFR; ``condense_factor``: C of the LGCs;
      ``sparse_factor``: S of the SFRs (None: no SFR, i.e. CondenseNet);
    * ``hs_from`` / ``se_from``: first block using hard-swish / SE (None: never);
    * ``stem_stride``: 2 for ImageNet, 1 for CIFAR.

    Outputs are the features of the dense blocks in ``out_indices`` (block ``b``
    has stride ``stem_stride * 2**b``): raw concatenations, as the network computes
    them. ``out_norm`` adds BN + ReLU on outputs: ``'last'`` (default) on the last
    block only, which is the pretrained norm of the classification tail; ``'all'``
    on every output (new, randomly initialised norms for the earlier blocks);
    ``'none'`` on none.

    Args:
        arch: Architecture name or dict (see above).
        out_indices: Dense blocks to return, 0-based, in this order (each at most
            once). Default: all but the first (strides 4/8/16/32 for ImageNet archs).
        frozen_stages: Freeze the stem (0) and blocks ``0..frozen_stages-1`` as in
            mmdet (``1`` freezes the stem and the first block); -1 freezes nothing.
        out_norm: ``'none'``, ``'last'`` or ``'all'`` (see above).
        norm_cfg: Norm of every dense layer (LGC, 3x3 conv, SFR) and of the output
            norms, as in mmdet backbones, e.g. ``dict(type='SyncBN',
            requires_grad=True)`` for multi-GPU detection training. It must build a
            BatchNorm (:func:`~mmsfr.models.layers.condense.build_norm`); the
            state_dict keys are those of the default ``dict(type='BN')``, so weights
            trained with either load into the other.
        norm_eval: Keep BatchNorm layers in eval mode during training.
        with_cp: Gradient checkpointing inside dense layers (saves memory).
        deploy: Build the converted (condensed) form directly, e.g. to load weights
            converted by ``tools/convert_to_deploy.py``.
        init_cfg: mmengine init config, e.g.
            ``dict(type='Pretrained', checkpoint='...', prefix='backbone.')``.

    Attributes:
        out_channels (tuple[int]): Channels of each output, in ``out_indices`` order.
        out_strides (tuple[int]): Strides of each output.
        feature_info (list[dict]): ``num_chs``, ``reduction`` and ``module`` per output.

    Example:
        >>> import torch
        >>> from mmsfr.models import CondenseNetV2
        >>> model = CondenseNetV2(arch='a').eval()
        >>> for out in model(torch.rand(1, 3, 224, 224)):
        ...     print(tuple(out.shape))
        (1, 32, 56, 56)
        (1, 96, 28, 28)
        (1, 288, 14, 14)
        (1, 800, 7, 7)
        >>> model.out_channels, model.out_strides
        ((32, 96, 288, 800), (4, 8, 16, 32))
    """

    # Legend: depths/growths per dense block; groups = G of LGC, 3x3 conv and SFR;
    # condense_factor = C (LGC); sparse_factor = S (SFR, None = no SFR); hs_from /
    # se_from = first block with hard-swish / SE; fc_channels = width of the
    # classifier's hidden layer (used by the classification head configs).
    arch_settings: dict[str, dict] = {
        'a': dict(depths=(1, 1, 4, 6, 8), growths=(8, 8, 16, 32, 64), groups=8,
                  condense_factor=8, sparse_factor=8, hs_from=2, se_from=3,
                  stem_stride=2, fc_channels=828),
        'b': dict(depths=(2, 4, 6, 8, 6), growths=(6, 12, 24, 48, 96), groups=6,
                  condense_factor=6, sparse_factor=6, hs_from=2, se_from=3,
                  stem_stride=2, fc_channels=1024),
        'c': dict(depths=(4, 6, 8, 10, 8), growths=(8, 16, 32, 64, 128), groups=8,
                  condense_factor=8, sparse_factor=8, hs_from=2, se_from=3,
                  stem_stride=2, fc_channels=1024),
        # CIFAR (paper Table 6): 3 blocks at 32/16/8, C = S = G = 4, no SE / HS. The
        # paper's depth naming is ambiguous; 10 / 13 layers per block reproduce its
        # FLOPs (docs/condensenetv2.md explains the reading).
        'cifar-110': dict(depths=(10, 10, 10), growths=(8, 16, 32), groups=4,
                          condense_factor=4, sparse_factor=4, hs_from=None,
                          se_from=None, stem_stride=1),
        'cifar-146': dict(depths=(13, 13, 13), growths=(8, 16, 32), groups=4,
                          condense_factor=4, sparse_factor=4, hs_from=None,
                          se_from=None, stem_stride=1),
    }
    arch_required = ('depths', 'growths', 'groups', 'condense_factor')
    arch_defaults: dict = dict(sparse_factor=None, hs_from=None, se_from=None,
                               stem_stride=2)
    OUT_NORMS = ('none', 'last', 'all')

    def __init__(self, arch: str | dict = 'c', out_indices: Sequence[int] | None = None,
                 frozen_stages: int = -1, out_norm: str = 'last', norm_eval: bool = False,
                 with_cp: bool = False, deploy: bool = False, bottleneck: int = 4,
                 norm_cfg: dict = DEFAULT_NORM_CFG,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_name, settings = self.resolve_arch(arch)
        self.arch = settings
        depths, growths = settings['depths'], settings['growths']
        num_blocks = len(depths)
        out_indices = resolve_out_indices(
            type(self).__name__, out_indices, num_blocks,
            range(1, num_blocks) if num_blocks > 3 else range(num_blocks))
        self._check_frozen_stages(frozen_stages, num_blocks)
        if out_norm not in self.OUT_NORMS:
            raise ValueError(f'{type(self).__name__}: out_norm={out_norm!r}; choose one '
                             f'of {self.OUT_NORMS}')
        build_norm(norm_cfg, 1, type(self).__name__)  # one error naming the backbone
        self.norm_cfg = dict(norm_cfg)
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.out_norm = out_norm
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.deploy = deploy

        channels = 2 * growths[0]
        self.stem = nn.Conv2d(3, channels, 3, settings['stem_stride'], 1, bias=False)
        self.blocks = nn.ModuleList()
        block_channels = []
        for b, (depth, growth) in enumerate(zip(depths, growths)):
            hs = settings['hs_from'] is not None and b >= settings['hs_from']
            se = settings['se_from'] is not None and b >= settings['se_from']
            layers = []
            for _ in range(depth):
                layers.append(DenseLayer(
                    channels, growth, settings['groups'], settings['condense_factor'],
                    settings['sparse_factor'], bottleneck,
                    act_cfg=dict(type='HSwish' if hs else 'ReLU'), with_se=se,
                    with_cp=with_cp, deploy=deploy, norm_cfg=self.norm_cfg))
                channels += growth
            self.blocks.append(DenseBlock(*layers))
            block_channels.append(channels)
        self.block_channels = tuple(block_channels)

        normed = {'none': (), 'last': (num_blocks - 1,), 'all': out_indices}[out_norm]
        self.norms = nn.ModuleDict(
            {str(b): build_norm(self.norm_cfg, block_channels[b]) for b in normed})
        self._set_levels(block_channels,
                         [settings['stem_stride'] * 2**b for b in range(num_blocks)],
                         [f'blocks.{b}' for b in range(num_blocks)])
        self._reference_init()
        self._freeze_stages()

    # ------------------------------------------------------------------ arch
    @classmethod
    def _custom_arch(cls, arch: dict) -> dict:
        """Settings of a custom arch dict (see :meth:`resolve_arch` of the base)."""
        missing = [k for k in cls.arch_required if k not in arch]
        if missing:
            raise ValueError(f'{cls.__name__}: custom arch misses keys {missing}')
        settings = dict(cls.arch_defaults)
        settings.update(arch)
        if len(settings['depths']) != len(settings['growths']):
            raise ValueError(f'{cls.__name__}: depths {settings["depths"]} and growths '
                             f'{settings["growths"]} differ in length')
        return settings

    @classmethod
    def feature_channels(cls, arch: str | dict,
                         out_indices: Sequence[int] | None = None) -> list[int]:
        """Channels of the outputs an arch gives (for FPN ``in_channels`` in configs).

        Example:
            >>> CondenseNetV2.feature_channels('c')
            [144, 400, 1040, 2064]
        """
        _, s = cls.resolve_arch(arch)
        channels, out = 2 * s['growths'][0], []
        for d, k in zip(s['depths'], s['growths']):
            channels += d * k
            out.append(channels)
        if out_indices is None:
            out_indices = range(1, len(out)) if len(out) > 3 else range(len(out))
        return [out[i] for i in out_indices]

    # ------------------------------------------------------------------ init / train
    def _reference_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, _BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, SparseFeatureReactivation):
                nn.init.zeros_(m.norm.weight)  # reactivation starts from zero

    def stage_modules(self) -> list[nn.Module]:
        return list(self.blocks)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return the features of the blocks in ``out_indices``, in that order."""
        x = self.stem(x)
        outs: dict[int, torch.Tensor] = {}
        last = max(self.out_indices)
        for b, block in enumerate(self.blocks[:last + 1]):
            x = block(x, pool=b > 0)
            if b in self.out_indices:
                norm = self.norms[str(b)] if str(b) in self.norms else None
                outs[b] = x if norm is None else torch.relu(norm(x))
        return tuple(outs[i] for i in self.out_indices)

    # ------------------------------------------------------------------ checkpoints
    # The base refuses a checkpoint of another arch (FreezableBackbone._check_state_dict)
    # with what these read and describe: (depths, growths).
    @staticmethod
    def _arch_in_state_dict(state_dict: dict, prefix: str) -> tuple | None:
        pattern = re.compile(re.escape(prefix) + r'blocks\.(\d+)\.(\d+)\.conv_2\.conv\.weight$')
        layers: dict[int, dict[int, int]] = {}
        for key, value in state_dict.items():
            m = pattern.match(key)
            if m:
                layers.setdefault(int(m[1]), {})[int(m[2])] = value.shape[0]
        if not layers:
            return None
        blocks = [layers.get(b, {}) for b in range(max(layers) + 1)]
        return (tuple(len(b) for b in blocks), tuple(b.get(0, 0) for b in blocks))

    def _arch_signature(self) -> tuple:
        return (tuple(self.arch['depths']), tuple(self.arch['growths']))

    def _describe_arch(self, depths_growths: tuple) -> str:
        for name, s in type(self).arch_settings.items():
            if (tuple(s['depths']), tuple(s['growths'])) == depths_growths and (
                    s.get('sparse_factor') is None) == (self.arch['sparse_factor'] is None):
                return f"arch '{name}' (depths {depths_growths[0]}, growths {depths_growths[1]})"
        return f'a custom arch (depths {depths_growths[0]}, growths {depths_growths[1]})'


@MODELS.register_module()
class CondenseNet(CondenseNetV2):
    """CondenseNet backbone (learned group convolutions only, no SFR / SE / HS).

    ``arch``: ``'a'``, ``'b'``, ``'c'`` (CondenseNetV2 paper, supplement Table 6),
    ``'v1-g4'`` / ``'v1-g8'`` (the original CondenseNet ImageNet models, G = C = 4 / 8),
    or a dict as for :class:`CondenseNetV2` (``sparse_factor`` must be None).

    Example:
        >>> import torch
        >>> model = CondenseNet(arch='a', out_indices=(4,)).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 64, 64))]
        [(1, 672, 2, 2)]
    """

    # Legend as in CondenseNetV2.arch_settings; no SFR, ReLU everywhere.
    arch_settings: dict[str, dict] = {
        'a': dict(depths=(2, 4, 6, 8, 4), growths=(8, 8, 16, 32, 64), groups=8,
                  condense_factor=8, sparse_factor=None, hs_from=None, se_from=None,
                  stem_stride=2),
        'b': dict(depths=(2, 4, 6, 8, 6), growths=(6, 12, 24, 48, 96), groups=6,
                  condense_factor=6, sparse_factor=None, hs_from=None, se_from=None,
                  stem_stride=2),
        'c': dict(depths=(4, 6, 8, 10, 8), growths=(8, 16, 32, 64, 128), groups=8,
                  condense_factor=8, sparse_factor=None, hs_from=None, se_from=None,
                  stem_stride=2),
        'v1-g4': dict(depths=(4, 6, 8, 10, 8), growths=(8, 16, 32, 64, 128), groups=4,
                      condense_factor=4, sparse_factor=None, hs_from=None, se_from=None,
                      stem_stride=2),
        'v1-g8': dict(depths=(4, 6, 8, 10, 8), growths=(8, 16, 32, 64, 128), groups=8,
                      condense_factor=8, sparse_factor=None, hs_from=None, se_from=None,
                      stem_stride=2),
    }

    def __init__(self, arch: str | dict = 'c', **kwargs) -> None:
        if isinstance(arch, dict) and arch.get('sparse_factor') is not None:
            raise ValueError('CondenseNet has no SFR: use CondenseNetV2 for sparse_factor='
                             f"{arch['sparse_factor']}")
        super().__init__(arch=arch, **kwargs)


# ---------------------------------------------------------------------------- weights
# The converter of the released weights moved to mmsfr.converters; its former address
# stays valid.
from ...converters.condensenet import convert_official_condensenet  # noqa: E402,F401


#: Names that moved out of this module (importable here still, with a warning).
__getattr__ = moved_names(__name__, {
    'native_arguments': 'mmsfr.models.layers.dense_plan:dense_plan',
    'NativeArguments': 'mmsfr.models.layers.dense_plan:DensePlan',
})
