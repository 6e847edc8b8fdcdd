"""High-level helpers: config -> model -> weights, released-weight conversion and deploy
conversion of files.

:func:`init_model` is the one way from a config (a path, an mmengine ``Config`` or the
name of a config shipped with mmsfr, :func:`list_configs`) to a model with weights;
:func:`build_model` is the step before it (the built, un-initialised model).
Checkpoint reading and writing live in :mod:`mmsfr.checkpoint`; ``read_checkpoint``,
``check_not_input`` and ``atomic_save`` are re-exported here under their old names.
"""
from __future__ import annotations

import copy
import os
import warnings

import torch

from mmsfr.checkpoint import (atomic_save, check_not_input, check_output,  # noqa: F401
                              find_state_dict, load_weights, read_checkpoint,
                              read_state_dict)
from mmsfr.converters import OFFICIAL_MODELS, OfficialModel  # noqa: F401
from mmsfr.models.deploy import convert_to_deploy, deployable_modules, pending_deploy
from mmsfr.models.layers.condense import (CondensingConv, CondensingLinear,
                                          SparseFeatureReactivation)
from mmsfr.utils.cli import UserError
from mmsfr.utils.tool_setup import (ConfigNotFoundError, config_root,  # noqa: F401
                                    find_config, list_configs, read_config)


# ------------------------------------------------------------- config -> model -> weights
def _load_config(config, cfg_options: dict | None):
    """The ``Config`` of a path, a config name or a ``Config`` (copied), options merged."""
    from mmengine.config import Config

    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        return cfg
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f'config must be a path, a config name or an mmengine Config, '
                        f'got {type(config).__name__}')
    return read_config(config, cfg_options)


def build_model(config, *, cfg_options: dict | None = None) -> torch.nn.Module:
    """Build the model of a config, without pretrained initialisation or weights.

    The model is built with the registry of the config's ``default_scope`` (``mmdet``
    for detectors, ``mmpretrain`` for classifiers, the default); the backbone's
    ``init_cfg`` is dropped, so nothing is downloaded (``init_weights`` is not called
    either). The model stays on the CPU in the mode it is built in (training), e.g. to
    measure a training step; :func:`init_model` is the usual entry.

    Args:
        config: A config file, the name of a config shipped with mmsfr, or an mmengine
            ``Config`` (not modified); see :func:`~mmsfr.utils.tool_setup.find_config`.
        cfg_options: Overrides merged into the config (as ``--cfg-options``).

    Returns:
        The model; ``model.cfg`` is the config it was built from (options merged).

    Raises:
        ConfigNotFoundError: ``config`` names no config (the message lists the names).

    Example:
        >>> model = build_model('condensenetv2-a_deploy_in1k')
        >>> type(model).__name__, model.training, model.cfg.default_scope
        ('ImageClassifier', True, 'mmpretrain')
    """
    from mmengine.registry import MODELS, DefaultScope

    import mmsfr  # noqa: F401  (registers the mmsfr models)
    cfg = _load_config(config, cfg_options)
    backbone = cfg.model.get('backbone')
    if backbone is not None:
        backbone.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        model = MODELS.build(cfg.model)
    model.cfg = cfg
    return model


def init_model(config, checkpoint: str | os.PathLike | None = None,
               device: str | torch.device = 'cpu', *,
               cfg_options: dict | None = None) -> torch.nn.Module:
    """Build the model of a config, load a checkpoint into it, move it to ``device``.

    As mmdet's ``init_detector`` / mmpretrain's ``init_model``, with mmsfr's checkpoint
    reading: the file is read weights-only (:func:`mmsfr.checkpoint.read_state_dict`;
    an ``http(s)://`` URL is downloaded into torch's hub cache first) and loaded
    strictly (:func:`mmsfr.checkpoint.load_weights`: every key must fit, and a
    train-time checkpoint for a deploy-form model, or the reverse, is named as such).

    Args:
        config: A config file (relative to the current directory or absolute), a path
            relative to the configs shipped with mmsfr (``configs/`` optional, e.g.
            ``'pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py'``), the name of
            one (``'condensenetv2-a_deploy_in1k'``, :func:`list_configs`), or an
            mmengine ``Config``.
        checkpoint: Checkpoint file or URL; None keeps the built (random) weights.
        device: Where to put the model.
        cfg_options: Overrides merged into the config (as ``--cfg-options``).

    Returns:
        The model in eval mode; ``model.cfg`` is its config.

    Raises:
        ConfigNotFoundError: ``config`` names no config; the message names it and the
            valid names.
        CheckpointError: the checkpoint cannot be read or does not fit the model.
        ValueError: the checkpoint's form (train-time / deploy) is not the model's.

    Example:
        >>> model = init_model('condensenetv2-a_deploy_in1k')
        >>> model.training, model.backbone.deploy
        (False, True)
        >>> init_model('condensenetv2-a_deploy')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.utils.tool_setup.ConfigNotFoundError: config 'condensenetv2-a_deploy' not found: ... valid names: ...
    """
    model = build_model(config, cfg_options=cfg_options)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, config)
    return model.to(device).eval()


def load_checkpoint(model: torch.nn.Module, checkpoint: str | os.PathLike,
                    config=None) -> None:
    """Load a checkpoint strictly into a built model, as :func:`init_model` does.

    Args:
        model: The model (e.g. from :func:`build_model`).
        checkpoint: Checkpoint file or ``http(s)://`` URL, read weights-only
            (:func:`mmsfr.checkpoint.read_state_dict`; ``module.`` prefixes dropped).
        config: The config the model was built from, to name it in messages (default:
            ``model.cfg``).

    Raises:
        CheckpointError: unreadable, or it does not fit (missing, unexpected or
            differently shaped keys, summed up in one message naming the config).
        ValueError: the checkpoint's form (train-time / deploy) is not the model's.

    Example:
        >>> model = build_model('condensenetv2-a_deploy_in1k')
        >>> load_checkpoint(model, 'missing.pth')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.checkpoint.CheckpointError: checkpoint not found: missing.pth (check the path)
    """
    if isinstance(config, (str, os.PathLike)):
        name = os.fspath(config)
    else:
        cfg = config if config is not None else getattr(model, 'cfg', None)
        name = getattr(cfg, 'filename', None) or 'the config'
    state_dict = read_state_dict(checkpoint, allow_url=True)
    load_weights(model, state_dict, checkpoint, f'the model of {name}')


def build_from_config(config: str | os.PathLike) -> torch.nn.Module:
    """Deprecated: :func:`build_model` (the same model; configs resolve as in
    :func:`init_model`).

    Example:
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter('always')
        ...     model = build_from_config('condensenetv2-a_deploy_in1k')
        >>> [w.category.__name__ for w in seen if 'build_from_config' in str(w.message)]
        ['DeprecationWarning']
    """
    warnings.warn('mmsfr.apis.build_from_config is deprecated; use mmsfr.apis.build_model '
                  '(or init_model, which also loads a checkpoint and sets eval mode)',
                  DeprecationWarning, stacklevel=2)
    return build_model(config)


# ----------------------------------------------------------------- released checkpoints
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
    """``'train'`` when the weights hold LGC/SFR masks, else ``'deploy'``.

    Example:
        >>> checkpoint_form({'conv.weight': 0, 'conv._mask': 1})
        'train'
    """
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
    build_model(config).load_state_dict(converted, strict=True)
    meta = dict(model=model_name, form=form, source_key=source, config=config)
    atomic_save({'meta': meta, 'state_dict': converted}, dst, src)
    return meta


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
