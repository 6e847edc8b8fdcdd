#!/usr/bin/env python
"""Plot how the layers of a CondenseNet / CondenseNetV2 checkpoint use earlier features.

The CondenseNetV2 paper's Figs. 6-7 (sec. 4.1), computed from the weights alone
(``mmsfr.analysis.connectivity`` defines every number exactly). Writes to ``--out``:

* ``connectivity_groups.png`` (Fig. 6): per dense block, the mean ``|w|`` of the
  non-pruned learned-group-conv weights between each filter group of each layer
  (columns, grouped by layer) and each earlier feature map (rows: the block input, then
  the layers' new channels); white = every weight pruned.
* ``connectivity_layers.png`` (Fig. 7): per dense block, layer-to-layer strength (mean
  ``|w|`` per filter and input channel, pruned weights as 0): the LGC weights alone
  (the paper's plot), and for CondenseNetV2 also the SFR reactivation strength (layer
  j rewriting source s) and the effective strength with the paths through reactivated
  channels added.
* ``connectivity_network.png``: the layer-to-layer panels over the whole network
  (stem and every layer of every block: a CondenseNet is densely connected across
  blocks).

Rows are source layers (earliest on top), columns target layers, as in the paper: long
connections are the top-right corner. Figure sizes are fixed, so the pixel size is
size x dpi: groups 16 x 4.5 in, layers 16 x 3.5 in per row of panels (3 rows with SFR,
1 without), network 18 x 6 in (7 x 6 in without SFR).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use('Agg')

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import mmsfr  # noqa: E402,F401  (registers models, safe loading of mmengine checkpoints)
from mmsfr.checkpoint import check_not_input  # noqa: E402
from mmsfr.utils.cli import add_debug_arg, tool_main  # noqa: E402

if TYPE_CHECKING:
    from mmsfr.analysis import Connectivity, DenseNetWeights

EPILOG = """examples:
  python tools/analysis_tools/plot_connectivity.py \\
      checkpoints/condensenetv2_a_converted.pth.tar --out work_dirs/connectivity
  python tools/analysis_tools/plot_connectivity.py \\
      work_dirs/condensenetv2-c_8xb128_in1k/epoch_350.pth --out plots --kind layers --dpi 150

CHECKPOINT may be an mmsfr checkpoint (train-time or deploy form; classifier, detector or
bare backbone keys) or a file the CondenseNet / CondenseNetV2 authors released (converted
or training-script form; EMA weights preferred). Depths, growth rates and groups are read
from the weight shapes; --arch only checks them (and gives the stem width of a
state_dict without the stem).

Writes DIR/connectivity_groups.png (paper Fig. 6), connectivity_layers.png (Fig. 7; with
the SFR reactivation and the effective strength for CondenseNetV2) and
connectivity_network.png (the whole network). Pixel size = fixed figure size x --dpi.
Definitions: mmsfr/analysis/connectivity.py.
"""

KINDS = ('groups', 'layers', 'network')
GROUPS_SIZE = (16.0, 4.5)
LAYERS_WIDTH, LAYERS_ROW_HEIGHT = 16.0, 3.5
NETWORK_SIZE = {True: (18.0, 6.0), False: (7.0, 6.0)}  # with / without SFR
CMAP = matplotlib.colormaps['turbo'].with_extremes(bad='white')


def arch_choices() -> list[str]:
    """``condensenetv2-a`` ... and ``condensenet-a`` ... (every registered arch)."""
    from mmsfr.models.backbones.condensenet import CondenseNet, CondenseNetV2
    return ([f'condensenetv2-{a}' for a in CondenseNetV2.arch_settings]
            + [f'condensenet-{a}' for a in CondenseNet.arch_settings])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Heatmaps of the learned connectivity of a CondenseNet / CondenseNetV2 '
        'checkpoint (CondenseNetV2 paper, Figs. 6-7): weight strength between filter groups '
        'and earlier feature maps, and layer-to-layer strength with SFR reactivation.',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', help='checkpoint file (mmsfr or released)')
    parser.add_argument('--out', required=True, help='directory to write the PNGs to '
                        '(created if missing)')
    parser.add_argument('--arch', help='expected arch, e.g. condensenetv2-a or condensenet-c '
                        '(checked against the weights; needed only if the stem is missing)')
    parser.add_argument('--prefix', default=None, help="key prefix of the backbone "
                        "(default: found automatically, e.g. 'backbone.')")
    parser.add_argument('--kind', nargs='+', choices=KINDS, default=list(KINDS),
                        help='which figures to write (default: all)')
    parser.add_argument('--dpi', type=int, default=100, help='resolution (default 100)')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if not 20 <= args.dpi <= 600:
        parser.error(f'--dpi must be in 20..600, got {args.dpi}')
    if args.arch is not None:
        choices = arch_choices()
        if args.arch not in choices:
            parser.error(f'--arch {args.arch!r} is unknown; valid archs are {choices}')
    return args


def resolve_arch(name: str) -> tuple[str, dict]:
    """``'condensenetv2-a'`` -> (family, settings)."""
    from mmsfr.models.backbones.condensenet import CondenseNet, CondenseNetV2
    family, arch = name.split('-', 1)
    cls = CondenseNetV2 if family == 'condensenetv2' else CondenseNet
    return cls.__name__, cls.arch_settings[arch]


def check_arch(weights: DenseNetWeights, name: str) -> None:
    """Raise ``ValueError`` unless the weights have the structure of arch ``name``."""
    family, s = resolve_arch(name)
    found = (weights.family, weights.depths, weights.growths, weights.groups)
    wanted = (family, tuple(s['depths']), tuple(s['growths']), s['groups'])
    if found != wanted:
        raise ValueError(
            f'the checkpoint holds a {found[0]} with depths {list(found[1])}, growths '
            f'{list(found[2])}, G={found[3]}, but --arch {name} is a {wanted[0]} with depths '
            f'{list(wanted[1])}, growths {list(wanted[2])}, G={wanted[3]}'
            + (f'; it matches {weights.arch_names()}' if weights.arch_names() else ''))


def check_out_dir(out: Path) -> None:
    """Create ``out`` after checking that files can be written there (else
    :class:`~mmsfr.checkpoint.OutputError`)."""
    from mmsfr.checkpoint import OutputError, check_writable_dir
    if out.exists() and not out.is_dir():
        raise OutputError(f'--out {out} exists and is not a directory; give a directory')
    check_writable_dir(out, '--out')
    out.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------- drawing
def _heatmap(fig: Figure, ax, data: np.ndarray, vmax: float | None, xlabels, ylabels,
             title: str, xlabel: str, ylabel: str, cbar_label: str,
             xticks: np.ndarray | None = None) -> None:
    """``data`` is (rows = sources, columns); NaN cells are drawn white."""
    finite = data[np.isfinite(data)]
    if vmax is None:
        vmax = float(finite.max()) if finite.size else 1.0
    image = ax.imshow(np.ma.masked_invalid(data), cmap=CMAP, vmin=0.0,
                      vmax=vmax if vmax > 0 else 1.0, aspect='auto', interpolation='nearest')
    ax.set_xticks(np.arange(data.shape[1]) if xticks is None else xticks)
    ax.set_xticklabels(xlabels, fontsize=7, rotation=90 if len(xlabels) > 12 else 0)
    ax.set_yticks(np.arange(data.shape[0]))
    ax.set_yticklabels(ylabels, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.02)
    bar.ax.tick_params(labelsize=6)
    bar.set_label(cbar_label, fontsize=7)


def _block_title(conn: Connectivity, weights: DenseNetWeights) -> str:
    b = conn.block
    return f'block {b + 1} (k={weights.growths[b]}, G={conn.groups})'


def plot_groups(weights: DenseNetWeights, blocks: list[Connectivity], model: str,
                dpi: int) -> Figure:
    """Fig. 6: per block, (source) x (target layer, filter group)."""
    fig = Figure(figsize=GROUPS_SIZE, dpi=dpi, layout='constrained')
    ratios = [max(c.group_strength.shape[0] * c.groups, 12) for c in blocks]
    axes = fig.subplots(1, len(blocks), width_ratios=ratios, squeeze=False)[0]
    for ax, conn in zip(axes, blocks):
        t_n, g_n, s_n = conn.group_strength.shape
        # column t * G + g = group g of target t; rows = sources
        data = conn.group_strength.transpose(2, 0, 1).reshape(s_n, t_n * g_n)
        _heatmap(fig, ax, data, None, conn.target_labels, conn.source_labels,
                 _block_title(conn, weights), 'target layer (filter groups)', 'source layer',
                 'mean |w|, non-pruned', xticks=np.arange(t_n) * g_n + (g_n - 1) / 2)
        for t in range(1, t_n):
            ax.axvline(t * g_n - 0.5, color='0.3', linewidth=0.6)
    fig.suptitle(f'{model}\nLGC weight strength between filter groups and earlier feature '
                 'maps (mean |w| of non-pruned weights; white = pruned, or no connection)',
                 fontsize=10)
    return fig


def _layer_rows(with_sfr: bool) -> list[tuple[str, str, str]]:
    rows = [('direct', 'LGC weights (paper Fig. 7)', 'mean |w| per filter x channel')]
    if with_sfr:
        rows += [('reactivation', 'SFR: layer rewrites source',
                  'mean |w| per channel x new channel'),
                 ('effective', 'effective (LGC + via SFR)',
                  'mean |w| + path norm')]
    return rows


def plot_layers(weights: DenseNetWeights, blocks: list[Connectivity], model: str,
                dpi: int) -> Figure:
    """Fig. 7: per block, (source layer) x (target layer)."""
    rows = _layer_rows(weights.family == 'CondenseNetV2')
    fig = Figure(figsize=(LAYERS_WIDTH, LAYERS_ROW_HEIGHT * len(rows)), dpi=dpi,
                 layout='constrained')
    ratios = [max(c.direct.shape[0], 2.5) for c in blocks]
    axes = fig.subplots(len(rows), len(blocks), width_ratios=ratios, squeeze=False)
    for col, conn in enumerate(blocks):
        shared = max(np.nanmax(conn.direct), np.nanmax(conn.effective))
        for row, (field, name, unit) in enumerate(rows):
            vmax = shared if field in ('direct', 'effective') else None
            xlabel = 'reactivating layer' if field == 'reactivation' else 'target layer'
            _heatmap(fig, axes[row][col], getattr(conn, field).T, vmax, conn.target_labels,
                     conn.source_labels, f'{_block_title(conn, weights)}\n{name}', xlabel,
                     'source layer', unit)
    note = ' (LGC and effective panels of a block share one colour scale)'
    fig.suptitle(f'{model}\nlayer-to-layer connection strength per dense block'
                 + (note if len(rows) > 1 else ''), fontsize=10)
    return fig


def plot_network(weights: DenseNetWeights, net: Connectivity, model: str,
                 dpi: int) -> Figure:
    """Layer-to-layer strength over the whole network, blocks separated by lines."""
    with_sfr = weights.family == 'CondenseNetV2'
    rows = _layer_rows(with_sfr)
    fig = Figure(figsize=NETWORK_SIZE[with_sfr], dpi=dpi, layout='constrained')
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    # block starts: target column index and source row index of each block's first layer
    starts, t = [], 0
    for d in weights.depths[:-1]:
        t += d
        starts.append((t, t + 1))
    shared = max(np.nanmax(net.direct), np.nanmax(net.effective))
    for ax, (field, name, unit) in zip(axes, rows):
        vmax = shared if field in ('direct', 'effective') else None
        xlabel = 'reactivating layer' if field == 'reactivation' else 'target layer (block.layer)'
        _heatmap(fig, ax, getattr(net, field).T, vmax, net.target_labels, net.source_labels,
                 name, xlabel, 'source layer (block.layer)', unit)
        for col, row in starts:
            ax.axvline(col - 0.5, color='0.3', linewidth=0.6)
            ax.axhline(row - 0.5, color='0.3', linewidth=0.6)
    fig.suptitle(f'{model}\nlayer-to-layer connection strength over the whole network'
                 '\n(lines separate dense blocks)', fontsize=10)
    return fig


@tool_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mmsfr.analysis.connectivity import (block_connectivity, dense_weights,
                                             load_dense_state_dict, network_connectivity)
    out = Path(args.out)
    state_dict, source = load_dense_state_dict(args.checkpoint)
    stem = None if args.arch is None else 2 * resolve_arch(args.arch)[1]['growths'][0]
    weights = dense_weights(state_dict, prefix=args.prefix, stem_channels=stem)
    if args.arch is not None:
        check_arch(weights, args.arch)
    for kind in args.kind:  # never over the checkpoint
        check_not_input(out / f'connectivity_{kind}.png', args.checkpoint)
    check_out_dir(out)
    model = weights.describe()
    keys = 'released (authors\' code) keys' if weights.origin == 'released' else 'mmsfr keys'
    print(f'{args.checkpoint}: {model}, {keys}, weights from {source!r}')
    blocks = block_connectivity(weights)
    figures = {
        'groups': lambda: plot_groups(weights, blocks, model, args.dpi),
        'layers': lambda: plot_layers(weights, blocks, model, args.dpi),
        'network': lambda: plot_network(weights, network_connectivity(weights), model,
                                        args.dpi),
    }
    for kind in args.kind:
        fig = figures[kind]()
        path = out / f'connectivity_{kind}.png'
        fig.savefig(path, dpi=args.dpi)
        w, h = (round(v * args.dpi) for v in fig.get_size_inches())
        print(f'wrote {path} ({w} x {h} px)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
