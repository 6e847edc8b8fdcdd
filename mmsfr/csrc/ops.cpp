// The operators of mmsfr, registered with PyTorch's dispatcher as torch.ops.mmsfr.*.
//
// This file holds their schemas (the one description of every operator's arguments)
// and their Meta kernels; the CPU kernels are in cpu/dense_layer.cpp. Because the
// operators are known to the dispatcher, torch.compile, torch.export and the profiler
// see them by name: the Meta kernels let FakeTensor tracing (torch.compile, export)
// run them on tensors without data. Every operator writes into a buffer it is given
// (marked `(a!)`) and returns nothing, so the Meta kernels have nothing to compute.
// The extension module binds the same CPU kernels as its own functions too
// (mmsfr._ext.<name>): plain eager calls take those, which skips the dispatcher's
// argument boxing (a few microseconds per call, dozens of calls per forward), while
// tracers, the profiler and dispatch modes see the operators through the dispatcher.
// mmsfr/ops/ holds one typed Python wrapper per operator, which picks the way; mmsfr/ops/
// loading.py loads this extension (importing mmsfr._ext runs the registrations below).

#include <torch/extension.h>
#include <torch/library.h>

#include <vector>

#include "cpu/dense_layer.h"

namespace {

// The version of the operators' arguments, checked by mmsfr/ops/loading.py:
// 2: each BatchNorm as its own tensors, conv weights as stored;
// 3: the operators are registered with the dispatcher (torch.ops.mmsfr);
// 4: the kernels come in three instruction sets; 5: linear_; 6: the tensor operators'
// kernels are functions of the module too.
constexpr int64_t kApiVersion = 6;

void lgc_conv_meta(const at::Tensor&, int64_t, const at::Tensor&, at::TensorList, double,
                   int64_t, const at::Tensor&, int64_t, at::TensorList, double, int64_t,
                   const at::Tensor&) {}
void sfr_meta(const at::Tensor&, int64_t, int64_t, at::TensorList, double, int64_t,
              const at::Tensor&, int64_t, const at::Tensor&) {}
void se_meta(const at::Tensor&, int64_t, int64_t, const at::Tensor&,
             const c10::optional<at::Tensor>&, const at::Tensor&,
             const c10::optional<at::Tensor>&, int64_t) {}
void avg_pool2x2_meta(const at::Tensor&, const at::Tensor&) {}
void linear_meta(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                 const c10::optional<at::Tensor>&) {}

}  // namespace

TORCH_LIBRARY(mmsfr, m) {
  // LGC -> BN -> act -> grouped 3x3 conv of one deploy dense layer: reads
  // buf[:, :channels], writes buf[:, channels:channels + conv_weight.size(0)].
  m.def("lgc_conv_(Tensor(a!) buf, int channels, Tensor index, Tensor[] norm, float eps, "
        "int act, Tensor weight, int groups, Tensor[] norm_2, float eps_2, int act_2, "
        "Tensor conv_weight) -> ()");
  // SFR of one deploy dense layer: from buf[:, channels:channels + growth], added into
  // buf[:, :channels].
  m.def("sfr_(Tensor(a!) buf, int channels, int growth, Tensor[] norm, float eps, "
        "int act, Tensor weight, int groups, Tensor index) -> ()");
  // Squeeze-excite (Linear form) of buf[:, channels:channels + growth], in place.
  m.def("se_(Tensor(a!) buf, int channels, int growth, Tensor w1, Tensor? b1, Tensor w2, "
        "Tensor? b2, int gate) -> ()");
  // 2x2 average pooling, stride 2, of x (N, C, H, W) into out[:, :C].
  m.def("avg_pool2x2_(Tensor(a!) out, Tensor x) -> ()");
  // out (M, N) = x (M, K) @ weight (N, K)^T (+ bias): a Linear layer for small M.
  m.def("linear_(Tensor(a!) out, Tensor x, Tensor weight, Tensor? bias) -> ()");
}

TORCH_LIBRARY_IMPL(mmsfr, Meta, m) {
  m.impl("lgc_conv_", &lgc_conv_meta);
  m.impl("sfr_", &sfr_meta);
  m.impl("se_", &se_meta);
  m.impl("avg_pool2x2_", &avg_pool2x2_meta);
  m.impl("linear_", &linear_meta);
}

// Importing mmsfr._ext loads the library (and so runs the registrations above).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() =
      "mmsfr's operators, registered with PyTorch's dispatcher as torch.ops.mmsfr.*, and "
      "their CPU kernels";
  m.attr("API_VERSION") = kApiVersion;
  // The CPU kernels of the tensor operators, with their schemas' arguments (lists of
  // tensors as std::vector, which pybind11 converts from any sequence). The GIL is
  // released while a kernel runs, as the dispatcher's Python binding does.
  using no_gil = py::call_guard<py::gil_scoped_release>;
  m.def(
      "lgc_conv_",
      [](const at::Tensor& buf, int64_t channels, const at::Tensor& index,
         const std::vector<at::Tensor>& norm, double eps, int64_t act, const at::Tensor& weight,
         int64_t groups, const std::vector<at::Tensor>& norm_2, double eps_2, int64_t act_2,
         const at::Tensor& conv_weight) {
        lgc_conv_(buf, channels, index, norm, eps, act, weight, groups, norm_2, eps_2, act_2,
                  conv_weight);
      },
      no_gil());
  m.def(
      "sfr_",
      [](const at::Tensor& buf, int64_t channels, int64_t growth,
         const std::vector<at::Tensor>& norm, double eps, int64_t act, const at::Tensor& weight,
         int64_t groups, const at::Tensor& index) {
        sfr_(buf, channels, growth, norm, eps, act, weight, groups, index);
      },
      no_gil());
  m.def("se_", &se_, no_gil());
  m.def("avg_pool2x2_", &avg_pool2x2_, no_gil());
  m.def("linear_", &linear_, no_gil());
}
