"""High-level helpers: released-weight conversion and deploy conversion of files.

Checkpoint reading and writing live in :mod:`mmsfr.checkpoint`; ``read_checkpoint``,
``check_not_input`` and ``atomic_save`` are re-exported here under their old names.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from mmsfr.checkpoint import (atomic_save, check_not_input, check_output,  # noqa: F401
                              find_state_dict, read_checkpoint)
from mmsfr.converters import OFFICIAL_MODELS, OfficialModel  # noqa: F401
from mmsfr.models.deploy import convert_to_deploy, deployable_modules, pending_deploy
from mmsfr.models.layers.condense import (CondensingConv, CondensingLinear,
                                          SparseFeatureReactivation)
from mmsfr.utils.cli import UserError


def read_official_checkpoint(path: str | os.PathLike) -> tuple[dict, str]:
    """Read a released checkpoint without running pickled code (weights-only load).

    Training-script checkpoints pickle an ``argparse.Namespace`` of plain values under
    ``args``; :func:`mmsfr.checkpoint.read_checkpoint` accepts that (only that).

    Returns:
        ``(state_dict, source)`` where source names the key used (``state_dict_ema``
        is preferred when present).

    Raises:
        CheckpointError: the file is missing, unreadable or holds no state_dict.
    """
    return find_state_dict(read_checkpoint(path), path,
                           keys=('state_dict_ema', 'state_dict', 'model'))


def checkpoint_form(state_dict: dict) -> str:
    """``'train'`` when the weights hold LGC/SFR masks, else ``'deploy'``."""
    return 'train' if any(k.endswith('._mask') for k in state_dict) else 'deploy'


def convert_official(model_name: str, src: str | os.PathLike,
                     dst: str | os.PathLike) -> dict:
    """Convert a released checkpoint into an mmsfr checkpoint at ``dst``.

    Returns:
        The ``meta`` written (model, form, source key, matching config).
    """
    if model_name not in OFFICIAL_MODELS:
        raise ValueError(f'unknown model {model_name!r}; valid models are '
                         f'{sorted(OFFICIAL_MODELS)}')
    check_output(dst, src)
    entry = OFFICIAL_MODELS[model_name]
    state_dict, source = read_official_checkpoint(src)
    converted = entry.convert(state_dict)
    form = checkpoint_form(converted)
    config = entry.train_config if form == 'train' else entry.deploy_config
    # Loading strictly into the matching model names arch/form mismatches clearly.
    build_from_config(config).load_state_dict(converted, strict=True)
    meta = dict(model=model_name, form=form, source_key=source, config=config)
    atomic_save({'meta': meta, 'state_dict': converted}, dst, src)
    return meta


def build_from_config(config: str | os.PathLike) -> torch.nn.Module:
    """Build (without pretrained init) the model of an mmsfr config, relative to the repo.

    Example:
        >>> model = build_from_config('configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py')
    """
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    path = Path(config)
    if not path.is_absolute() and not path.exists():
        path = Path(__file__).resolve().parents[1] / path
    cfg = Config.fromfile(str(path))
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        return MODELS.build(cfg.model)


class ConversionError(UserError, ValueError):
    """The deploy form would not reproduce the train-time model; nothing is written."""


class UnfinishedCondensationError(UserError, RuntimeError):
    """A layer has not finished condensation, so it has no deploy form yet."""


#: Largest ``max|deploy - train| / max|train|`` accepted per layer and for the model.
CONVERSION_RTOL = 1e-4


def _tensors(out) -> list[torch.Tensor]:
    """The tensors of a (nested) model output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors(item)]
    return []


def _check_close(reference, result, what: str) -> None:
    ref, got = _tensors(reference), _tensors(result)
    if len(ref) != len(got) or any(r.shape != g.shape for r, g in zip(ref, got)):
        raise ConversionError(f'{what}: the deploy form gives outputs of other shapes than '
                              'the train-time form; nothing was written')
    for r, g in zip(ref, got):
        scale = r.abs().max().item() if r.numel() else 0.0
        diff = (r - g).abs().max().item() if r.numel() else 0.0
        if not (diff <= CONVERSION_RTOL * max(scale, 1e-12)):
            raise ConversionError(
                f'{what}: the deploy form differs from the train-time form on a random '
                f'input (max difference {diff:.3g}, {diff / max(scale, 1e-12):.2%} of the '
                'output); conversion must be exact, so nothing was written (the checkpoint '
                'was edited or damaged)')


def _example_inputs(layer: torch.nn.Module, gen: torch.Generator) -> tuple:
    x = torch.randn(2, layer.in_channels, 5, 5, generator=gen)
    if isinstance(layer, SparseFeatureReactivation):
        return x, torch.randn(2, layer.out_channels, 5, 5, generator=gen)
    return (x, )


def _run(model: torch.nn.Module, x: torch.Tensor):
    with torch.no_grad():
        if hasattr(model, 'data_preprocessor'):  # an mmengine model
            return model(x, mode='tensor')
        return model(x)


def convert_checked(model: torch.nn.Module, input_sizes=((64, 64), (224, 224))) -> None:
    """Convert ``model`` in place to its deploy form, checking that it is exact.

    1. every LGC/SFR layer must have finished condensation with a mask of the group
       structure condensation makes (:meth:`CondensingConv.check_condensed`);
    2. each LGC/SFR layer is compared before and after its conversion on a random
       input (eval mode) and refused, by name, unless it is exact;
    3. the whole model (eval mode, random image of the first of ``input_sizes`` it
       runs on; its backbone if it needs more than an image) is compared with the
       train-time model (e.g. for ShuffleNet's folded conv -> BN pairs). A condensing
       linear classifier (CondenseNet v1) is pruned by design; it is pruned before the
       reference is taken.

    Raises:
        UnfinishedCondensationError (a ``RuntimeError``): a layer has not finished
            condensation.
        ValueError / ConversionError: naming the layer (or the model) that would not
            be exact.
    """
    pending = [(name, m) for name, m in deployable_modules(model) if not m.deploy]
    for name, module in pending:
        try:
            module.check_deployable(name)
        except RuntimeError as err:
            raise UnfinishedCondensationError(str(err)) from None
    training = model.training
    model.eval()
    try:
        for name, module in pending:
            if isinstance(module, CondensingLinear):
                module.convert_own_parts(name)
        reference = copy.deepcopy(model)
        gen = torch.Generator().manual_seed(0)
        for name, layer in pending:
            if not isinstance(layer, CondensingConv):
                continue
            inputs = _example_inputs(layer, gen)
            with torch.no_grad():
                before = layer(*(t.clone() for t in inputs))
                layer.convert_own_parts(name)
                after = layer(*(t.clone() for t in inputs))
            _check_close(before, after, f'{type(layer).__name__} {name}')
        convert_to_deploy(model)
        _check_model(reference, model, input_sizes, gen)
    finally:
        model.train(training)


def _check_model(reference: torch.nn.Module, model: torch.nn.Module, input_sizes,
                 gen: torch.Generator) -> None:
    """Compare the whole model on a random image (or, if it needs more than an image,
    e.g. a two-stage detector's data samples, its backbone)."""
    pairs = [(reference, model)]
    if isinstance(getattr(model, 'backbone', None), torch.nn.Module):
        pairs.append((reference.backbone, model.backbone))
    for ref_part, part in pairs:
        for size in input_sizes:
            x = torch.randn(1, 3, *size, generator=gen)
            try:
                expected = _run(ref_part, x)
            except (RuntimeError, ValueError):  # e.g. too small for the network's strides
                continue
            except (TypeError, AttributeError, KeyError, AssertionError):
                break  # needs more than an image: try the backbone
            _check_close(expected, _run(part, x.clone()), f'the converted {type(part).__name__}')
            return
    raise ConversionError(f'cannot check the converted {type(model).__name__}: it runs on '
                          f'none of the input sizes {list(input_sizes)}; nothing was written')


def deploy_checkpoint(model: torch.nn.Module, dst: str | os.PathLike,
                      src: str | os.PathLike | None = None, meta: dict | None = None,
                      inputs: tuple = ()) -> None:
    """Convert ``model`` to its deploy form and save it; nothing is written on failure.

    The conversion is checked (:func:`convert_checked`) before anything is written, and
    ``dst`` may be none of ``src`` and ``inputs`` (e.g. the config).

    Raises:
        ValueError: if nothing in ``model`` is in its train-time form
            (:func:`~mmsfr.models.deploy.pending_deploy`); if a layer's mask or the converted
            model is not exact (:class:`ConversionError`, naming it); if ``dst`` is an
            input or cannot be written (:class:`~mmsfr.checkpoint.OutputError`).
        RuntimeError: a layer has not finished condensation.
    """
    check_output(dst, src, *inputs)
    if not pending_deploy(model):
        raise ValueError(f'{type(model).__name__} has no part in its train-time form (no '
                         'LGC/SFR layer or other mmsfr module with a deploy form left to '
                         'convert): nothing to convert')
    convert_checked(model)
    meta = dict(meta or {}, form='deploy')
    atomic_save({'meta': meta, 'state_dict': model.state_dict()}, dst, src, *inputs)
