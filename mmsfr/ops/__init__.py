"""mmsfr's C++ operators, registered with PyTorch's dispatcher (``torch.ops.mmsfr``).

* :mod:`.loading`: loads ``mmsfr._ext`` and holds the per-thread switch
  (:func:`native_kernels`, ``MMSFR_NATIVE=0``);
* :mod:`.dense_layer`: one typed wrapper per operator, which calls the kernel through
  the extension's own binding in plain eager code (:func:`plain_eager`) and through the
  dispatcher otherwise.

Example:
    >>> from mmsfr import ops
    >>> isinstance(ops.native_available(), bool)
    True
"""
from .dense_layer import (ISAS, avg_pool2x2_, best_isa, isa, lgc_conv_, linear_,
                          parallel_threads, plain_eager, se_, set_avx2, set_isa, sfr_,
                          untraced_inference, uses_avx2)
from .loading import (API_VERSION, KERNELS, REQUIRED, STATUS, native_available,
                      native_enabled, native_kernels)

__all__ = ['API_VERSION', 'ISAS', 'KERNELS', 'REQUIRED', 'STATUS', 'avg_pool2x2_',
           'best_isa', 'isa', 'lgc_conv_', 'linear_', 'native_available', 'native_enabled',
           'native_kernels', 'parallel_threads', 'plain_eager', 'se_', 'set_avx2', 'set_isa',
           'sfr_', 'untraced_inference', 'uses_avx2']
