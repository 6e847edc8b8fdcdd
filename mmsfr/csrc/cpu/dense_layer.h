// The CPU kernels of mmsfr's tensor operators (defined in dense_layer.cpp).
//
// ops.cpp registers each with PyTorch's dispatcher (torch.ops.mmsfr.<name>) and also
// binds it as a function of the extension module (mmsfr._ext.<name>), which plain eager
// calls use: one kernel, two ways to reach it (see mmsfr/ops/dense_layer.py).

#pragma once

#include <ATen/ATen.h>

void lgc_conv_(const at::Tensor& buf, int64_t channels, const at::Tensor& index,
               at::TensorList norm, double eps, int64_t act, const at::Tensor& weight,
               int64_t groups, at::TensorList norm_2, double eps_2, int64_t act_2,
               const at::Tensor& conv_weight);
void sfr_(const at::Tensor& buf, int64_t channels, int64_t growth, at::TensorList norm,
          double eps, int64_t act, const at::Tensor& weight, int64_t groups,
          const at::Tensor& index);
void se_(const at::Tensor& buf, int64_t channels, int64_t growth, const at::Tensor& w1,
         const c10::optional<at::Tensor>& b1, const at::Tensor& w2,
         const c10::optional<at::Tensor>& b2, int64_t gate);
void avg_pool2x2_(const at::Tensor& out, const at::Tensor& x);
void linear_(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight,
             const c10::optional<at::Tensor>& bias);
