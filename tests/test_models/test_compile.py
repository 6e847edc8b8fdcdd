"""Deploy backbones under ``torch.compile`` (TorchInductor) and ``torch.export``.

An inference forward of a deploy CondenseNetV2 is traced with mmsfr's C++ operators
kept in the graph (``torch.ops.mmsfr.*``, registered with the dispatcher, with Meta
kernels); everything else is traced as canonical ops and, with ``freezing``, weights
become constants. The compiled backbone must give the eager deploy model's features
and still follow later changes of the input size (a recompile, not a wrong answer).
"""
import copy

import pytest
import torch

from conftest import randomise_bn
from mmsfr import ops
from mmsfr.models import CondenseNetV2, SFRShuffleNetV2
from mmsfr.models.layers import condense_model
from mmsfr.testing import rel_diff
from mmsfr.utils.compat import traces_mmsfr_operators


def deployed(model):
    randomise_bn(model)
    condense_model(model, 1.0)
    model.eval()
    model.switch_to_deploy()
    return model


@pytest.mark.parametrize('family', ['condensenetv2', 'sfr-shufflenetv2'])
def test_deploy_backbone_compiles_and_matches_eager(family):
    torch.manual_seed(0)
    if family == 'condensenetv2':
        arch = dict(depths=(1, 2, 2), growths=(8, 8, 16), groups=4, condense_factor=4,
                    sparse_factor=4, hs_from=1, se_from=2)
        model = deployed(CondenseNetV2(arch, out_indices=(0, 1, 2)))
    else:
        model = deployed(SFRShuffleNetV2('0.5x', out_indices=(1, 2, 3)))
    compiled = torch.compile(copy.deepcopy(model), dynamic=False,
                             options={'freezing': True})
    for shape in ((1, 3, 64, 64), (2, 3, 48, 80)):
        x = torch.rand(shape)
        with torch.inference_mode():
            eager, got = model(x), compiled(x)
        assert len(got) == len(eager)
        for a, b in zip(got, eager):
            assert a.shape == b.shape and rel_diff(a, b) < 1e-5


def small_condensenetv2():
    torch.manual_seed(0)
    arch = dict(depths=(1, 2, 2), growths=(8, 8, 16), groups=4, condense_factor=4,
                sparse_factor=4, hs_from=1, se_from=2)
    return deployed(CondenseNetV2(arch, out_indices=(0, 1, 2)))


def mmsfr_ops_in(graph: torch.fx.Graph) -> set[str]:
    return {str(node.target).split('.')[1] for node in graph.nodes
            if str(node.target).startswith('mmsfr.')}


def compile_recording_graphs(model, x):
    """``torch.compile(model)(x)`` with a backend that records the FX graphs dynamo
    hands it: ``(output, graphs)``."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm.graph)
        return gm.forward

    return torch.compile(model, backend=backend, dynamic=False)(x), graphs


needs_ops = pytest.mark.skipif(not ops.native_available(), reason=ops.STATUS)


@needs_ops
def test_compile_keeps_mmsfr_operators_in_one_graph():
    """On torch >= 2.6 the operators stay in one graph; before, compile traces the
    PyTorch ops (same features)."""
    model = small_condensenetv2()
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        eager = model(x)
        got, graphs = compile_recording_graphs(model, x)
    assert len(graphs) == 1  # no graph break
    kept = {'lgc_conv_', 'sfr_', 'se_'} if traces_mmsfr_operators() else set()
    assert mmsfr_ops_in(graphs[0]) == kept
    assert all(rel_diff(a, b) < 1e-6 for a, b in zip(got, eager))
    with torch.inference_mode(), ops.native_kernels(False):  # switched off: PyTorch ops
        torch._dynamo.reset()
        _, graphs = compile_recording_graphs(model, x)
    assert mmsfr_ops_in(graphs[0]) == set()


@needs_ops
@pytest.mark.skipif(not traces_mmsfr_operators(), reason='torch < 2.6 traces PyTorch ops')
def test_torch_export_keeps_mmsfr_operators_and_onnx_export_does_not():
    model = small_condensenetv2()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        program = torch.export.export(model, (x,))
        assert mmsfr_ops_in(program.graph) == {'lgc_conv_', 'sfr_', 'se_'}
        for a, b in zip(program.module()(x), model(x)):
            assert rel_diff(a, b) < 1e-6
    # With autograd on (as exporters and training trace) the canonical ops are traced.
    program = torch.export.export(model, (x,))
    assert mmsfr_ops_in(program.graph) == set()
    # The ONNX exporter needs standard operators, with or without autograd.
    pytest.importorskip('onnxscript')
    with torch.no_grad():
        onnx_program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    domains = {node.domain for node in onnx_program.model_proto.graph.node}
    assert domains <= {'', 'ai.onnx'}


@needs_ops
def test_compile_and_export_keep_the_linear_operator_of_a_head():
    """FastLinear layers, like the dense layers, keep ``mmsfr.linear_`` under
    ``torch.compile`` / ``torch.export`` of an inference forward (torch >= 2.6), not
    under the ONNX exporter."""
    from mmsfr.models.layers import FastLinear
    torch.manual_seed(0)
    head = torch.nn.Sequential(FastLinear(64, 32), torch.nn.Hardswish(),
                               FastLinear(32, 10, bias=False)).eval()
    x = torch.rand(2, 64)
    with torch.inference_mode():
        eager = head(x)
        got, graphs = compile_recording_graphs(head, x)
        inductor = torch.compile(copy.deepcopy(head), dynamic=False,
                                 options={'freezing': True})(x)
    assert len(graphs) == 1
    assert mmsfr_ops_in(graphs[0]) == ({'linear_'} if traces_mmsfr_operators() else set())
    assert rel_diff(got, eager) < 1e-6 and rel_diff(inductor, eager) < 1e-5
    if traces_mmsfr_operators():
        with torch.no_grad():
            program = torch.export.export(head, (x,))
        assert mmsfr_ops_in(program.graph) == {'linear_'}
        assert rel_diff(program.module()(x), eager) < 1e-6
    pytest.importorskip('onnxscript')
    with torch.no_grad():
        onnx_program = torch.onnx.export(head, (x,), dynamo=True, verbose=False)
    nodes = onnx_program.model_proto.graph.node
    assert {'Gemm', 'MatMul'} & {n.op_type for n in nodes}
    assert {n.domain for n in nodes} <= {'', 'ai.onnx'}
