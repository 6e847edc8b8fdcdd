"""The ONNX packages of the deploy requirements, imported once with a clear error."""
try:
    import onnx
    import onnxruntime as ort
    import onnxscript
except ImportError as _err:  # pragma: no cover - part of the deploy requirements
    raise ImportError(f'ONNX export needs onnx, onnxscript and onnxruntime ({_err}); '
                      'install them with: pip install -r requirements/deploy.txt') from _err

__all__ = ['onnx', 'ort', 'onnxscript']
