"""Rewrites of exported ONNX graphs: what onnxruntime needs, fixed input dims, op counts.

* :func:`split_repeated_scatter_adds`: onnxruntime's CPU ``ScatterND`` adds repeated
  indices from several threads at once and can lose updates, so every scatter-add is
  split into a chain of scatters with unique indices;
* :func:`specialise`: the dynamic graph with some input dims fixed and its shape
  arithmetic constant-folded by onnxscript's optimizer (a static graph has constant
  ``Reshape`` shapes and no ``Shape`` ops);
* :func:`onnx_op_counts`: the operators of a graph, counted.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from typing import Sequence

import numpy as np

from ._onnx import onnx, onnxscript

__all__ = ['DYNAMIC_DIMS', 'check_size', 'graph_opset', 'onnx_op_counts', 'specialise',
           'split_repeated_scatter_adds']

#: Names of the symbolic input dims (axis: name) of an exported graph.
DYNAMIC_DIMS = {0: 'batch', 2: 'height', 3: 'width'}


def check_size(size: Sequence[int]) -> tuple[int, int]:
    """``size`` as ``(H, W)`` of positive ints.

    Raises:
        ValueError: not two positive values.

    Example:
        >>> check_size([224, 160.0])
        (224, 160)
    """
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f'input size must be (H, W) with positive values, got {size}')
    return size  # type: ignore[return-value]


def graph_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset of a graph.

    Example:
        >>> graph_opset(onnx.helper.make_model(
        ...     onnx.helper.make_graph([], 'g', [], []),
        ...     opset_imports=[onnx.helper.make_opsetid('', 18)]))
        18
    """
    return next(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))


def _scatter_model(index) -> onnx.ModelProto:
    """A one-node ``ScatterND(reduction='add')`` graph with constant ``index`` (for the
    examples)."""
    from onnx import TensorProto, helper, numpy_helper
    index = np.asarray(index, dtype=np.int64).reshape(-1, 1)
    graph = helper.make_graph(
        [helper.make_node('ScatterND', ['data', 'index', 'updates'], ['out'],
                          reduction='add')],
        'scatter', [helper.make_tensor_value_info('data', TensorProto.FLOAT, ('n', 2)),
                    helper.make_tensor_value_info('updates', TensorProto.FLOAT,
                                                  (len(index), 2))],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, ('n', 2))],
        [numpy_helper.from_array(index, 'index')])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])


def split_repeated_scatter_adds(model: onnx.ModelProto) -> int:
    """Rewrite every ``ScatterND(reduction='add')`` whose constant indices repeat as a
    chain of scatters with unique indices (in place).

    onnxruntime's CPU ScatterND (1.31) applies the index rows of one node in parallel;
    when an index repeats, two threads add into the same slice at once and one update can
    be lost (wrong, run-to-run varying results on large inputs). SFR indices repeat by
    design (several groups may reactivate one old channel), so scatter ``r`` of the chain
    adds the ``r``-th occurrence of every repeated index: exact, race-free, with
    ``Gather`` of the updates and integer initializers only.

    Args:
        model: An ONNX model (modified in place).

    Returns:
        The number of scatters rewritten.

    Example:
        >>> model = _scatter_model([0, 2, 0, 1, 0])  # index 0 three times
        >>> split_repeated_scatter_adds(model), onnx_op_counts(model)
        (1, Counter({'Gather': 3, 'ScatterND': 3}))
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    rewritten, nodes, replaced = 0, [], set()
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        index = inits.get(node.input[1]) if node.op_type == 'ScatterND' else None
        if index is None or attrs.get('reduction') != b'add':
            nodes.append(node)
            continue
        rows = numpy_helper.to_array(index)
        keys = [tuple(r) for r in rows.reshape(len(rows), -1).tolist()]
        seen: Counter = Counter()
        rounds: list[list[int]] = []
        for pos, key in enumerate(keys):
            if seen[key] == len(rounds):
                rounds.append([])
            rounds[seen[key]].append(pos)
            seen[key] += 1
        if len(rounds) < 2:
            nodes.append(node)
            continue
        data, updates = node.input[0], node.input[2]
        replaced.add(node.input[1])
        for r, positions in enumerate(rounds):
            tag = f'{node.output[0]}__round{r}'
            graph.initializer.extend([
                numpy_helper.from_array(rows[positions], f'{tag}_indices'),
                numpy_helper.from_array(np.asarray(positions, dtype=np.int64),
                                        f'{tag}_positions')])
            out = node.output[0] if r == len(rounds) - 1 else tag
            nodes += [
                helper.make_node('Gather', [updates, f'{tag}_positions'], [f'{tag}_updates'],
                                 name=f'{tag}_gather', axis=0),
                helper.make_node('ScatterND', [data, f'{tag}_indices', f'{tag}_updates'],
                                 [out], name=f'{tag}_scatter', reduction='add')]
            data = out
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for n in graph.node for name in n.input}
        kept = [t for t in graph.initializer if t.name not in replaced or t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return rewritten


def specialise(model: onnx.ModelProto, batch_size: int | None = None,
               size: Sequence[int] | None = None) -> onnx.ModelProto:
    """Fix the symbolic input dims of a dynamic graph and fold its shape arithmetic.

    Args:
        model: A graph from :func:`export_dynamic` (not modified).
        batch_size: Fixed batch size, or None to keep the batch symbolic.
        size: Fixed (H, W), or None to keep them symbolic.

    Returns:
        A new model; with every dim fixed it has no ``Shape`` op left.

    Example:
        >>> from onnx import TensorProto, helper
        >>> io = [helper.make_tensor_value_info(n, TensorProto.FLOAT,
        ...                                     ('batch', 3, 'height', 'width'))
        ...       for n in ('input', 'out')]
        >>> dynamic = helper.make_model(
        ...     helper.make_graph([helper.make_node('Relu', ['input'], ['out'])], 'g',
        ...                       io[:1], io[1:]),
        ...     opset_imports=[helper.make_opsetid('', 18)])
        >>> static = specialise(dynamic, 2, (64, 48))
        >>> [d.dim_value for d in static.graph.output[0].type.tensor_type.shape.dim]
        [2, 3, 64, 48]
    """
    fixed = {} if batch_size is None else {0: int(batch_size)}
    if size is not None:
        fixed[2], fixed[3] = check_size(size)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not fixed:
        return out
    dims = out.graph.input[0].type.tensor_type.shape.dim
    for axis, value in fixed.items():
        dims[axis].ClearField('dim_param')
        dims[axis].dim_value = value
    # Drop the shapes derived from the symbolic dims; the optimizer re-infers them.
    del out.graph.value_info[:]
    for value in out.graph.output:
        value.type.tensor_type.ClearField('shape')
    out = onnxscript.optimizer.optimize(out)
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True, data_prop=True)
    _restore_output_dims(model, out, {DYNAMIC_DIMS[a] for a in fixed})
    return out


def _restore_output_dims(original: onnx.ModelProto, model: onnx.ModelProto,
                         fixed: set[str]) -> None:
    """Give ``model``'s outputs the symbolic dims of ``original`` that stay symbolic.

    Shape inference cannot express e.g. ``((height - 1)//2) + 1``; the exporter's
    expression is kept where it uses none of the ``fixed`` symbols.
    """
    pattern = re.compile(r'\b(' + '|'.join(map(re.escape, sorted(fixed))) + r')\b')
    for before, after in zip(original.graph.output, model.graph.output):
        old_dims = before.type.tensor_type.shape.dim
        new_shape = after.type.tensor_type.shape
        if len(new_shape.dim) != len(old_dims):
            continue
        for old, new in zip(old_dims, new_shape.dim):
            if new.HasField('dim_value'):
                continue
            if old.HasField('dim_value'):
                new.dim_value = old.dim_value
            elif old.dim_param and not pattern.search(old.dim_param):
                new.dim_param = old.dim_param


def onnx_op_counts(model: onnx.ModelProto | str | os.PathLike) -> Counter:
    """Operator types of a graph (non-default domains as ``domain::Op``) and counts.

    Example:
        >>> onnx_op_counts(_scatter_model([0, 1]))
        Counter({'ScatterND': 1})
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    return Counter(n.op_type if n.domain in ('', 'ai.onnx') else f'{n.domain}::{n.op_type}'
                   for n in model.graph.node)
