"""The ONNX packages of the deploy requirements, imported once with a clear error."""
try:
    import onnx
    import onnxruntime as ort
    import onnxscript
except ImportError as _err:  # pragma: no cover - part of the deploy requirements
    raise ImportError(f'ONNX export needs onnx, onnxscript and onnxruntime ({_err}); '
                      'install them with: pip install -r requirements/deploy.txt') from _err

__all__ = ['cpu_session', 'onnx', 'ort', 'onnxscript']


def cpu_session(path, threads: int | None = None) -> 'ort.InferenceSession':
    """An onnxruntime session of the ``.onnx`` file at ``path`` (or of a serialized
    model, as bytes) on the CPU execution provider (all graph optimisations,
    onnxruntime's default), its log limited to errors; ``threads`` sets the intra-op
    threads (None: onnxruntime's default).

    Example:
        >>> cpu_session('missing.onnx')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        onnxruntime.capi.onnxruntime_pybind11_state.NoSuchFile: ...
    """
    import os
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(os.fspath(path), options, providers=['CPUExecutionProvider'])
