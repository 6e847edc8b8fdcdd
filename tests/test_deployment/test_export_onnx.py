"""ONNX export (mmsfr.deployment, tools/deployment/export_onnx.py) of every model family.

Small random models, condensed and converted to their deploy form, with randomised BN
statistics; each is exported once with a symbolic batch / height / width, checked with
onnxruntime at two batch sizes and two input sizes, and its graph is inspected: SFR
``index_add`` must be ``ScatterND(reduction='add')`` (a chain of them, each with unique
indices) or, for a 1x1 SFR with few new channels, one ``MatMul`` by the layer's dense
update weight; LGC ``index_select`` a ``Gather``; both with the layers' integer
indices, and every matrix product must use a weight of the model or such a dense SFR
weight (no dense 0/1 index matrix).
"""
from __future__ import annotations

import lzma
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import mmsfr  # noqa: F401  (registers the models)
from mmsfr.deployment import (ExportModule, TrainTimeModelError, VerificationError,
                              check_deploy_form, export_dynamic, export_verified,
                              load_export_module, onnx_op_counts, specialise,
                              split_repeated_scatter_adds, verify_onnx)
from mmsfr.deployment import export as export_step
from mmsfr.models import (CondenseNetV2, SFRShuffleNetV2, SFRShuffleNetV2Plus, ShuffleNetV2,
                          ShuffleNetV2Plus, condense_model)
from mmsfr.models.layers import (CondensingLinear, LearnedGroupConv, SparseFeatureReactivation,
                                 convert_to_deploy)
from mmsfr.models.layers.condense import DENSE_EXPORT_MAX_GROWTH, dense_reactivation_weight
from mmsfr.models.layers.grouped_conv import DEPTHWISE_MAX_OUT, EXPORT_DEPTHWISE_MAX_OUT
from mmsfr.models.layers.norm_act import PreActConv, depthwise_export_routes

from conftest import REPO, fixture_path, randomise_bn

TOOL = 'tools/deployment/export_onnx.py'
CDNV2_A_DEPLOY = 'configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py'
CDNV2_A_TRAIN = 'configs/pretrain/condensenetv2/condensenetv2-a_8xb128_in1k.py'
SIZES = ((64, 64), (96, 80))
# Ops that would mean the deploy layers did not export as plain tensor ops.
FORBIDDEN_OPS = {'ScatterElements', 'OneHot', 'EyeLike', 'NonZero', 'Loop', 'If', 'Scan',
                 'SequenceConstruct', 'SplitToSequence', 'ConcatFromSequence'}

DENSE = dict(depths=(1, 2, 2), growths=(8, 8, 16), groups=4, condense_factor=4)
SHUFFLE = dict(stage_channels=(16, 32, 64), stage_blocks=(1, 2, 2), stem_channels=8,
               last_channels=64)
PLUS = dict(stage_channels=(16, 32, 48, 64), stage_blocks=(1, 2, 2, 1), stem_channels=8,
            last_channels=64, unit_choices=(0, 1, 3, 2, 3, 0))
ALL_LEVELS = (0, 1, 2, 3, 4)
#: The dense-SFR export threshold per family (default DENSE_EXPORT_MAX_GROWTH): with
#: growths (8, 8, 16), 8 puts both SFR export forms (dense MatMul, ScatterND rounds)
#: into one CondenseNetV2 graph.
DENSE_MAX = {'CondenseNetV2': 8}
FAMILIES = {
    'CondenseNetV2': lambda: CondenseNetV2(
        arch=dict(DENSE, sparse_factor=4, hs_from=1, se_from=2), out_indices=(0, 1, 2)),
    # torchvision layout: every unit ends with a channel shuffle
    'ShuffleNetV2': lambda: ShuffleNetV2(arch=SHUFFLE, layout='torchvision',
                                         out_indices=ALL_LEVELS),
    'ShuffleNetV2Plus': lambda: ShuffleNetV2Plus(arch=PLUS, out_indices=ALL_LEVELS),
    # G = S < c/2: grouped SFR convs with an input shuffle, several outputs per group
    'SFRShuffleNetV2': lambda: SFRShuffleNetV2(
        arch=dict(SHUFFLE, sfr_factors=(4, 8, 8)), out_indices=ALL_LEVELS),
    'SFRShuffleNetV2Plus': lambda: SFRShuffleNetV2Plus(
        arch=dict(PLUS, sfr_factors=(4, 4, 8, 8)), out_indices=(1, 2, 3, 4)),
}


# ---------------------------------------------------------------------------- helpers
def deployed(model: nn.Module) -> nn.Module:
    """Condense fully, randomise BN, convert to the deploy form, eval mode."""
    torch.manual_seed(0)
    for m in model.modules():  # non-zero SFR norms: the reactivation must matter
        if isinstance(m, SparseFeatureReactivation):
            m.norm.reset_parameters()
    condense_model(model, 1.0)
    randomise_bn(model)
    convert_to_deploy(model)
    return model.eval()


def condensenet_classifier() -> nn.Module:
    """A small CondenseNet classifier with the pruned (index_select) classifier."""
    from mmpretrain.registry import MODELS
    return MODELS.build(dict(
        type='ImageClassifier', neck=dict(type='GlobalAveragePooling'),
        backbone=dict(type='CondenseNet', arch=DENSE, out_indices=(2, )),  # 72 channels
        head=dict(type='CondenseNetClsHead', num_classes=10, in_channels=72)))


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node values of the main graph, by name."""
    found = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == 'Constant':
            for attr in node.attribute:
                if attr.name == 'value':
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
    return found


def is_index_matrix(a: np.ndarray) -> bool:
    """A dense 0/1 matrix with a single 1 per row or column (a scatter / gather matrix)."""
    if a.ndim < 2 or min(a.shape[-2:]) < 2 or a.dtype == np.bool_:
        return False
    if not np.isin(a, (0, 1)).all():
        return False
    m = a.reshape(-1, a.shape[-1])
    return bool((m.sum(1) == 1).all() or (m.sum(0) == 1).all())


def matches_a_weight(c: np.ndarray, weights: list[torch.Tensor]) -> bool:
    """Whether ``c`` is a model weight, possibly reshaped / transposed in its last dims."""
    c = torch.from_numpy(np.array(c, dtype=np.float32))
    candidates = [c.flatten()]
    if c.dim() >= 2:
        candidates.append(c.transpose(-1, -2).flatten())
    return any(w.numel() == c.numel() and any(torch.equal(w.flatten(), x) for x in candidates)
               for w in weights)


def check_graph(model: onnx.ModelProto, module: nn.Module,
                dense_max_growth: int = DENSE_EXPORT_MAX_GROWTH) -> Counter:
    """The graph-level contract of a clean export (made with ``dense_max_growth``);
    returns the op counts."""
    ops = onnx_op_counts(model)
    assert not FORBIDDEN_OPS & set(ops), ops
    consts = constants(model)
    for name, value in consts.items():
        assert not is_index_matrix(value), f'{name} {value.shape} is a dense index matrix'

    # A 1x1 SFR with few new channels: one MatMul by its dense update weight.
    layers = [m for m in module.modules() if isinstance(m, SparseFeatureReactivation)]
    dense = [m for m in layers if m.kernel_size == 1 and m.in_channels <= dense_max_growth]
    with torch.no_grad():
        dense_weights = [dense_reactivation_weight(m.conv.weight, m.index, m.groups,
                                                   m.out_channels) for m in dense]
    products = [consts[name] for node in model.graph.node if node.op_type == 'MatMul'
                for name in node.input[:2] if name in consts]
    for w in dense_weights:
        assert sum(c.shape == w.shape and np.array_equal(c, w.numpy()) for c in products) == 1

    # Other SFRs: index_add -> one chain of ScatterND(add) per layer into the old
    # features as (N * C, H * W) rows; each scatter's indices are unique (onnxruntime's
    # parallel ScatterND races on repeated ones), together they are the layer's index
    # for every image. The indices are constants where the batch is fixed (computed
    # from the batch size in a dynamic graph).
    sfr = sorted(sorted(m.index.tolist()) for m in layers if not any(m is d for d in dense))
    producer = {out: n for n in model.graph.node for out in n.output}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in model.graph.value_info}
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value  # 0: symbolic
    chains: dict[str, list[int]] = {}
    scatters = 0
    for node in model.graph.node:
        if node.op_type != 'ScatterND':
            continue
        scatters += 1
        assert {a.name: a.s for a in node.attribute}.get('reduction') == b'add'
        if node.input[1] not in consts:
            assert not batch, f'{node.name}: computed indices in a fixed-batch graph'
            continue
        index = consts[node.input[1]].reshape(-1).tolist()
        assert len(set(index)) == len(index), f'{node.name}: repeated scatter index'
        channels = shapes[node.input[0]][0] // batch
        per_image = np.array(index).reshape(batch, -1) - channels * np.arange(batch)[:, None]
        assert (per_image == per_image[0]).all(), f'{node.name}: images differ'
        head = node
        while head.input[0] in producer and producer[head.input[0]].op_type == 'ScatterND':
            head = producer[head.input[0]]
        chains.setdefault(head.output[0], []).extend(per_image[0].tolist())
    if batch:
        assert sorted(sorted(c) for c in chains.values()) == sfr
    else:
        assert scatters >= len(sfr)

    # LGC / pruned classifier: a Gather along channels with the layer's index.
    selects = [m.index.tolist() for m in module.modules()
               if isinstance(m, (LearnedGroupConv, CondensingLinear))]
    gathers = [consts[n.input[1]].tolist() for n in model.graph.node
               if n.op_type == 'Gather' and n.input[1] in consts
               and {a.name: a.i for a in n.attribute}.get('axis') == 1]
    assert sorted(selects) == sorted(gathers)

    # Every matrix product multiplies by a weight of the model (or a dense SFR weight).
    weights = [p.detach() for p in module.parameters()] + dense_weights
    for node in model.graph.node:
        if node.op_type in ('MatMul', 'Gemm'):
            for name in node.input[:2]:
                if name in consts:
                    assert matches_a_weight(consts[name], weights), \
                        f'{node.op_type} {node.name}: constant {name} is no model weight'
    return ops


def run_ort(path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def rel_diff(got: np.ndarray, ref: torch.Tensor) -> float:
    return float(np.abs(got - ref.numpy()).max() / ref.abs().max().item())


def input_dims_of(model: onnx.ModelProto) -> list:
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def input_dims(path) -> list:
    return input_dims_of(onnx.load(str(path)))


# ---------------------------------------------------------------------------- families
@pytest.mark.parametrize('family', list(FAMILIES))
def test_backbone_exports_cleanly_and_matches(family, tmp_path):
    module = ExportModule(deployed(FAMILIES[family]()))
    sfr = [m.index for m in module.modules() if isinstance(m, SparseFeatureReactivation)]
    if sfr:  # overwrite-instead-of-add scatter semantics would show
        assert any(len(set(i.tolist())) < len(i) for i in sfr), 'no repeated SFR index'

    dense_max = DENSE_MAX.get(family, DENSE_EXPORT_MAX_GROWTH)
    dynamic = export_dynamic(module, SIZES[0], dense_sfr_max_growth=dense_max)
    assert input_dims_of(dynamic) == ['batch', 3, 'height', 'width']
    assert [o.name for o in dynamic.graph.output] == list(module.output_names)
    ops = check_graph(dynamic, module, dense_max)
    if family in DENSE_MAX:  # both SFR forms in one graph
        growths = {m.in_channels for m in module.modules()
                   if isinstance(m, SparseFeatureReactivation)}
        assert ops['ScatterND'] and min(growths) <= dense_max < max(growths)
    # The SFR scatter-adds work on (N * C, H * W) rows: no transposes around them.
    producers = {out: node for node in dynamic.graph.node for out in node.output}
    for node in dynamic.graph.node:
        if node.op_type == 'ScatterND':
            data = producers.get(node.input[0])
            assert data is None or data.op_type != 'Transpose', node.name
    onnx.save(dynamic, tmp_path / 'dynamic.onnx')
    report = verify_onnx(module, tmp_path / 'dynamic.onnx', batch_sizes=(1, 2), sizes=SIZES)
    assert report.passed, report.failures()
    assert len(report.rows) == 2 * 2 * len(module.output_names)
    assert {r.input_shape for r in report.rows} == {(b, 3, *s) for b in (1, 2) for s in SIZES}
    assert report.max_rel_diff < 1e-5
    print(family, dict(ops), f'max rel diff {report.max_rel_diff:.2e}')

    # Fixing every dim folds the shape arithmetic away: a plain static graph.
    static = specialise(dynamic, 2, SIZES[1])
    check_graph(static, module, dense_max)
    assert 'Shape' not in onnx_op_counts(static)
    with torch.no_grad():
        refs = module(torch.zeros(2, 3, *SIZES[1]))
    for out, ref in zip(static.graph.output, refs):
        assert [d.dim_value for d in out.type.tensor_type.shape.dim] == list(ref.shape)
    onnx.save(static, tmp_path / 'static.onnx')
    report = verify_onnx(module, tmp_path / 'static.onnx', batch_sizes=(2, ), sizes=SIZES[1:])
    assert report.passed, report.failures()
    with pytest.raises(ValueError, match='does not fit its static input dims'):
        verify_onnx(module, tmp_path / 'static.onnx', batch_sizes=(1, ), sizes=SIZES[1:])


def test_condensenet_classifier_static_export(tmp_path):
    """CondenseNet (LGC backbone + pruned classifier) through the default static path:
    the dynamic graph runs at 2 batch sizes x 2 input sizes, the written graph at its
    own shape."""
    module = ExportModule(deployed(condensenet_classifier()))
    assert module.target == 'classifier' and module.output_names == ('logits', )
    assert isinstance(module.net.head.fc, CondensingLinear) and module.net.head.fc.deploy
    messages = []
    result = export_verified(module, tmp_path / 'cls.onnx', (64, 64), batch_size=2,
                             log=messages.append)
    dynamic, final = result.reports
    assert dynamic.passed and final.passed
    assert dynamic.label == 'dynamic' and final.label == 'cls.onnx'
    assert {r.input_shape for r in dynamic.rows} == {
        (b, 3, *s) for b in (1, 2) for s in ((64, 64), (96, 80))}
    assert [r.input_shape for r in final.rows] == [(2, 3, 64, 64)]
    assert result.input_shape == (2, 3, 64, 64) and input_dims(result.path) == [2, 3, 64, 64]
    assert result.output_names == ('logits', ) and result.opset == 18
    graph = onnx.load(result.path)
    ops = check_graph(graph, module)
    assert 'Shape' not in ops and ops['Gather'] == 6  # 5 LGC + the pruned classifier
    assert [d.dim_value for d in graph.graph.output[0].type.tensor_type.shape.dim] == [2, 10]
    assert any('symbolic batch, height and width' in m for m in messages)
    assert 'max rel diff' in result.table() and 'FAIL' not in result.table()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cls.onnx']  # no temp file left
    print('CondenseNet classifier', dict(ops), f'max rel diff {dynamic.max_rel_diff:.2e}')


def conv_kinds(model: onnx.ModelProto) -> Counter:
    """The graph's Conv nodes by kind: 'depthwise' (one input per group), 'grouped'
    (several inputs per group, several groups) or 'dense'."""
    consts = constants(model)
    kinds = Counter()
    for node in model.graph.node:
        if node.op_type == 'Conv':
            group = {a.name: a.i for a in node.attribute}.get('group', 1)
            per_group = consts[node.input[1]].shape[1]
            kinds['dense' if group == 1 else 'depthwise' if per_group == 1 else 'grouped'] += 1
    return kinds


@pytest.mark.parametrize('limit,grouped', [(EXPORT_DEPTHWISE_MAX_OUT, 0), (2, 2), (0, 5)])
def test_grouped_3x3_convs_export_as_depthwise_passes_up_to_the_limit(limit, grouped,
                                                                     tmp_path):
    """Dense layers' 3x3 convs with 2 (blocks 0-1) and 4 (block 2) outputs per group:
    up to ``depthwise_max_out`` outputs per group they export as depthwise Conv passes
    (one per output of a group) + ReduceSum, the others as one grouped Conv; every form
    matches PyTorch, and PyTorch's own routes are back after the export."""
    model = deployed(FAMILIES['CondenseNetV2']())
    assert [layer.growth // 4 for block in model.blocks for layer in block] == [2, 2, 2, 4, 4]
    module = ExportModule(model)
    dynamic = export_dynamic(module, SIZES[0], depthwise_max_out=limit)
    kinds = conv_kinds(dynamic)
    assert kinds['grouped'] == grouped
    # Depthwise passes: 2 per layer of blocks 0-1, 4 per layer of block 2 when within
    # the limit (the SFRs here are 1x1 and export as MatMul, the stem is dense).
    assert kinds['depthwise'] == sum(g // 4 for g in (8, 8, 8, 16, 16) if g // 4 <= limit)
    if kinds['depthwise']:
        assert onnx_op_counts(dynamic)['ReduceSum'] >= kinds['depthwise']
    onnx.save(dynamic, tmp_path / 'dynamic.onnx')
    report = verify_onnx(module, tmp_path / 'dynamic.onnx', batch_sizes=(1, 2), sizes=SIZES)
    assert report.passed and report.max_rel_diff < 1e-5, report.failures()
    assert all(m.depthwise_max_out == DEPTHWISE_MAX_OUT for m in module.modules()
               if isinstance(m, PreActConv))


def test_depthwise_export_routes_rejects_a_bad_limit_and_always_restores():
    conv = PreActConv(32, 16, 3, groups=4)
    for bad in (-1, 2.5, True, '4'):
        with pytest.raises(ValueError, match=f'depthwise_max_out must be an int >= 0.*got {bad!r}'):
            with depthwise_export_routes(conv, bad):
                pass
    with pytest.raises(RuntimeError, match='boom'):
        with depthwise_export_routes(conv, 8):
            assert conv.depthwise_max_out == 8
            raise RuntimeError('boom')
    assert conv.depthwise_max_out == DEPTHWISE_MAX_OUT and 'depthwise_max_out' not in vars(conv)
    conv.depthwise_max_out = 1  # a layer's own setting is put back, also when nested
    with depthwise_export_routes(conv, 4):
        with depthwise_export_routes(conv, 0):
            assert conv.depthwise_max_out == 0
        assert conv.depthwise_max_out == 4
    assert vars(conv)['depthwise_max_out'] == 1


def test_repeated_scatter_indices_are_split_into_unique_rounds():
    """onnxruntime's CPU ScatterND(add) applies index rows in parallel and can lose an
    update when an index repeats; the rewritten chain has unique indices per node and
    gives np.add.at's result on every multi-threaded run."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    channels, rest = 64, (2, 56, 56)
    index = rng.integers(0, channels, size=(128, 1)).astype(np.int64)
    graph = helper.make_graph(
        [helper.make_node('ScatterND', ['data', 'index', 'updates'], ['out'], reduction='add')],
        'scatter', [helper.make_tensor_value_info('data', TensorProto.FLOAT, (channels, *rest)),
                    helper.make_tensor_value_info('updates', TensorProto.FLOAT, (128, *rest))],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, (channels, *rest))],
        [numpy_helper.from_array(index, 'index')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)], ir_version=9)
    assert split_repeated_scatter_adds(model) == 1
    onnx.checker.check_model(model, full_check=True)
    rounds = max(Counter(index[:, 0].tolist()).values())
    assert onnx_op_counts(model) == Counter(ScatterND=rounds, Gather=rounds)
    assert 'index' not in {t.name for t in model.graph.initializer}  # replaced
    consts = constants(model)
    chain = [consts[n.input[1]].reshape(-1).tolist() for n in model.graph.node
             if n.op_type == 'ScatterND']
    assert all(len(set(c)) == len(c) for c in chain)
    assert sorted(sum(chain, [])) == sorted(index[:, 0].tolist())
    data = rng.standard_normal((channels, *rest)).astype(np.float32)
    updates = rng.standard_normal((128, *rest)).astype(np.float32)
    expected = data.copy()
    np.add.at(expected, index[:, 0], updates)
    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    for _ in range(10):
        got = session.run(None, {'data': data, 'updates': updates})[0]
        assert np.abs(got - expected).max() <= 1e-5


# ---------------------------------------------------------------------------- refusals
def test_train_time_model_is_refused_naming_the_layer():
    module = ExportModule(CondenseNetV2(arch=dict(DENSE, sparse_factor=4)).eval())
    with pytest.raises(TrainTimeModelError, match=r'blocks\.0\.0\.conv_1 \(LearnedGroupConv\) '
                       r'is in its train-time \(masked\) form.*tools/convert_to_deploy\.py'):
        export_dynamic(module)


def test_parts_that_export_as_they_are_are_not_refused():
    """pending_deploy also names ShuffleNet's unfused conv -> BN pairs; they export
    exactly, so only masked LGC/SFR layers (and an unpruned condensing classifier) are
    refused."""
    from mmsfr.models.deploy import pending_deploy
    net = ShuffleNetV2(arch=SHUFFLE, out_indices=(1, 2))
    assert pending_deploy(net)
    check_deploy_form(ExportModule(net))
    classifier = ExportModule(condensenet_classifier())
    with pytest.raises(TrainTimeModelError,
                       match=r'^backbone\.blocks\.0\.0\.conv_1 \(LearnedGroupConv\)'):
        check_deploy_form(classifier)


def test_failed_verification_leaves_out_untouched(tmp_path, monkeypatch):
    module = ExportModule(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())).eval()
    assert module.description == 'Sequential backbone: image -> features'
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'previous export')
    original = export_step.export_dynamic

    def export_then_change_weights(*args, **kwargs):
        graph = original(*args, **kwargs)
        with torch.no_grad():
            module.net[0].weight.mul_(1.01)
        return graph

    monkeypatch.setattr(export_step, 'export_dynamic', export_then_change_weights)
    with pytest.raises(VerificationError, match='does not reproduce PyTorch') as err:
        export_verified(module, out, (32, 32), dynamic_batch=True, dynamic_size=True)
    report, = err.value.reports  # fully dynamic: the written graph is the dynamic one
    assert report.label == 'model.onnx' and not report.passed and len(report.failures()) == 4
    assert out.read_bytes() == b'previous export'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.onnx']


# ---------------------------------------------------------------------------- tool
@pytest.fixture(scope='module')
def cdnv2_a_deploy(tmp_path_factory):
    """The released CondenseNetV2-A (converted form) as an mmsfr deploy checkpoint."""
    from mmsfr.apis import convert_official
    root = tmp_path_factory.mktemp('cdnv2_a')
    src = root / 'converted.pth.tar'
    src.write_bytes(lzma.open(fixture_path('cdnv2_a_converted.pth.tar.xz')).read())
    convert_official('condensenetv2_a', src, root / 'deploy.pth')
    return root / 'deploy.pth'


@pytest.fixture(scope='module')
def tiny_deploy(tmp_path_factory):
    """A small CondenseNetV2 classifier config (deploy form) and a random deploy checkpoint
    made by condensing and converting its train-time twin."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    root = tmp_path_factory.mktemp('tiny')
    cfg_path = root / 'tiny_cdnv2_deploy.py'
    arch = dict(DENSE, sparse_factor=4, hs_from=1, se_from=2, _delete_=True)
    cfg_path.write_text(
        f"_base_ = ['{(REPO / CDNV2_A_DEPLOY).as_posix()}']\n"
        f"model = dict(backbone=dict(arch={arch!r}, out_indices=(2, )),"
        " head=dict(num_classes=10, in_channels=72, mid_channels=24, se_reduction=4))\n")
    cfg = Config.fromfile(cfg_path)
    cfg.model.backbone.deploy = False
    model = deployed(MODELS.build(cfg.model))
    torch.save({'state_dict': model.state_dict()}, root / 'tiny_deploy.pth')
    return cfg_path, root / 'tiny_deploy.pth'


def test_tool_exports_with_dynamic_batch(tiny_deploy, tmp_path):
    config, checkpoint = tiny_deploy
    out = tmp_path / 'tiny.onnx'
    run = subprocess.run([sys.executable, TOOL, str(config), str(checkpoint), str(out),
                          '--shape', '64', '--dynamic-batch'],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout
    assert 'model: ImageClassifier (CondenseNetV2 backbone): image -> logits' in text
    assert 'minus mean [123.675, 116.28, 103.53]' in text
    table = [line.split() for line in text.splitlines() if line.startswith(('dynamic ', 'tiny'))]
    assert {(row[0], row[1]) for row in table} == {
        ('dynamic', '1x3x64x64'), ('dynamic', '2x3x64x64'), ('dynamic', '1x3x96x80'),
        ('dynamic', '2x3x96x80'), ('tiny.onnx', '1x3x64x64'), ('tiny.onnx', '2x3x64x64')}
    assert all(row[2] == 'logits' and float(row[5]) <= 1e-4 and row[6] == 'ok' for row in table)
    ops = next(line for line in text.splitlines() if line.startswith('ops: '))
    # Every SFR of the tiny CondenseNetV2 has k <= 64 new channels: dense MatMuls.
    assert 'ScatterND' not in ops and re.search(r'\bGather \d+', ops)
    assert re.search(r'\bMatMul \d+', ops)
    assert f'wrote {out} (opset 18, input batchx3x64x64, outputs logits)' in text

    onnx.checker.check_model(str(out), full_check=True)
    assert input_dims(out) == ['batch', 3, 64, 64]
    module = load_export_module(config, checkpoint)
    check_graph(onnx.load(out), module)
    for batch in (1, 3):  # really dynamic: 3 was never used before
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            ref = module(x)
        got = run_ort(out, x)[0]
        assert got.shape == (batch, 10) and rel_diff(got, ref) <= 1e-4


def run_main(capsys, *argv):
    from importlib import util
    spec = util.spec_from_file_location('export_onnx_tool', REPO / TOOL)
    tool = util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    code = tool.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_tool_refuses_train_time_checkpoint_and_keeps_out(capsys, tmp_path):
    from mmsfr.apis import build_model
    ckpt = tmp_path / 'train.pth'
    torch.save({'state_dict': build_model(CDNV2_A_TRAIN).state_dict()}, ckpt)
    out = tmp_path / 'out.onnx'
    out.write_bytes(b'previous export')
    code, _, err = run_main(capsys, REPO / CDNV2_A_TRAIN, ckpt, out)
    assert code == 1
    assert 'backbone.blocks.0.0.conv_1 (LearnedGroupConv) is in its train-time (masked) form' in err
    assert 'tools/convert_to_deploy.py' in err and '*_deploy_* config' in err
    assert f'{out} was not written' in err
    assert out.read_bytes() == b'previous export'


def test_tool_reports_checkpoint_form_mismatch(capsys, cdnv2_a_deploy, tmp_path):
    code, _, err = run_main(capsys, REPO / CDNV2_A_TRAIN, cdnv2_a_deploy, tmp_path / 'x.onnx')
    assert code == 1 and 'Traceback' not in err
    assert 'holds the deploy (converted) form but the model is built in its train-time form' in err
    assert not (tmp_path / 'x.onnx').exists()


def test_tool_refuses_to_overwrite_the_checkpoint(capsys, cdnv2_a_deploy):
    before = cdnv2_a_deploy.read_bytes()
    code, _, err = run_main(capsys, REPO / CDNV2_A_DEPLOY, cdnv2_a_deploy, cdnv2_a_deploy)
    assert code == 1 and 'refusing to overwrite the input file' in err
    assert cdnv2_a_deploy.read_bytes() == before


def test_tool_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        run_main(capsys, 'cfg.py', 'ckpt.pth', 'out.onnx', '--batch-size', '2',
                 '--dynamic-batch')
    assert exc.value.code == 2
    assert '--batch-size fixes the batch dim' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_main(capsys, 'cfg.py', 'ckpt.pth', 'out.onnx', '--shape', '1', '2', '3')
    assert '--shape takes H or H W' in capsys.readouterr().err


def test_detector_backbone_exports_alone(cdnv2_a_deploy):
    from mmsfr.apis import build_model
    # A classifier checkpoint gives the detector backbone its backbone.* weights.
    module = load_export_module(REPO / 'configs/retinanet_condensenetv2_a.py', cdnv2_a_deploy,
                                backbone_only=True)
    assert module.target == 'backbone' and module.output_names == ('feat1', 'feat2', 'feat3',
                                                                  'feat4')
    assert module.description.startswith('CondenseNetV2 backbone of RetinaNet: image -> feat1')
    state = torch.load(cdnv2_a_deploy, map_location='cpu')['state_dict']
    assert torch.equal(module.net.stem.weight, state['backbone.stem.weight'])
    # The demo detector normalises every output: the classifier lacks those norms.
    with pytest.raises(ValueError, match=r'weights of the CondenseNetV2 backbone are not in '
                       r'the checkpoint \(norms\.2\.'):
        load_export_module(REPO / 'configs/demo/retinanet_condensenetv2_demo.py',
                           cdnv2_a_deploy, backbone_only=True)
    # --backbone-only on the classifier config
    module = load_export_module(REPO / CDNV2_A_DEPLOY, cdnv2_a_deploy, backbone_only=True)
    assert module.output_names == ('feat4', ) and module.net is not None
    assert build_model(CDNV2_A_DEPLOY).backbone.out_indices == (4, )


# ------------------------------------------------- any valid deploy model exports exactly
@pytest.mark.parametrize('arch', ['0.5x', '1.0x', '1.5x'])
def test_freshly_built_sfr_shufflenet_deploy_model_exports_exactly(arch, tmp_path):
    """A deploy model built directly has identity SFR indices (each group reactivates a
    contiguous block, in order). onnxscript's optimizer takes a scatter-add with such
    indices for a copy of its updates; the export must still give the PyTorch sums."""
    module = ExportModule(SFRShuffleNetV2(arch=arch, deploy=True, out_indices=(1, 2, 3)))
    module.eval()
    sfr = [m for m in module.modules() if isinstance(m, SparseFeatureReactivation)]
    assert all(torch.equal(m.index, torch.arange(len(m.index))) for m in sfr)
    result = export_verified(module, tmp_path / 'fresh.onnx', (64, 64), rtol=1e-5)
    assert (tmp_path / 'fresh.onnx').exists() and result.reports


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_random_weights_and_random_sfr_indices_with_repeats_export_exactly(seed, tmp_path):
    """Property: any valid deploy SFR model (random weights, BN statistics and SFR
    indices, repeats and identity stretches included) exports within 1e-5."""
    g = torch.Generator().manual_seed(seed)
    cls, arch = [(SFRShuffleNetV2, dict(SHUFFLE, sfr_factors=(4, 8, 8))),
                 (SFRShuffleNetV2Plus, dict(PLUS, sfr_factors=(4, 4, 8, 8))),
                 (CondenseNetV2, dict(DENSE, sparse_factor=4, hs_from=1, se_from=2))][seed]
    model = cls(arch=arch, deploy=True, out_indices=(1, 2)).eval()
    randomise_bn(model, seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in model.modules():
            if isinstance(m, SparseFeatureReactivation):
                n, out = len(m.index), m.out_channels
                kind = torch.randint(0, 3, (1,), generator=g).item()
                index = (torch.arange(n) if kind == 0 else  # identity
                         torch.randint(0, out, (n,), generator=g) if kind == 1 else  # repeats
                         torch.full((n,), int(torch.randint(0, out, (1,), generator=g))))
                m.index.copy_(index)
    module = ExportModule(model)
    result = export_verified(module, tmp_path / 'random.onnx', (64, 64), rtol=1e-5)
    assert max(r.max_rel_diff for r in result.reports) <= 1e-5
