// Fused inference kernels of a deploy-form CondenseNetV2 dense layer (CPU, float32).
//
// A dense block keeps its features in one pre-allocated NCHW buffer; layer l reads the
// first `channels` channels and writes `growth` new ones after them. Entry points (the
// CPU kernels of the operators torch.ops.mmsfr.*, whose schemas are in ../ops.cpp):
//
// * lgc_conv_: LGC (index-select -> BN -> act -> grouped 1x1 conv, output shuffle)
//   -> conv_2's BN -> act -> grouped 3x3 conv, written straight into the buffer's new
//   channels. Each thread streams over a range of rows in bands: per group, the
//   gather + BN + act of the group's inputs is packed into a tile, and a
//   register-blocked 1x1 kernel over the tile applies conv_2's BN and act in its
//   epilogue and writes each filter into its shuffled channel's rows of a zero-padded
//   window (no shuffle pass; where the window's padding column would cost more
//   multiply-adds than a copy, it runs over the unpadded rows and a copy pads them);
//   a direct register-blocked 3x3 kernel reads the window. The 1x1 conv's output
//   stays in the cache.
// * se_: the squeeze-excite of the new channels (later blocks), in place.
// * sfr_: SFR (BN -> act on the new channels -> grouped 1x1 conv on the shuffled
//   inputs -> index_add into the old channels) as one pass over the old channels.
// * avg_pool2x2_: the transition between blocks, written into the next block's buffer.
// * linear_: a fully connected layer for a few rows (the classifier heads at inference),
//   each weight row streamed once from memory.
//
// The kernels read the modules' tensors as they are stored: conv weights in their
// (out, in / groups, kh, kw) layout and each BatchNorm as its weight, bias, running
// mean, running variance and eps, turned into a per-channel scale and shift on every
// call (O(channels)). Nothing is derived ahead of a call, so a call always reflects
// the current parameters and buffers. Every argument is checked; empty inputs (batch
// or spatial size 0) are valid and write nothing.
//
// They compute the same sums as the PyTorch path in mmsfr/models (float summation
// order aside) and propagate NaN as it does; mmsfr/ops/ loads and wraps them
// and tests/test_models/test_native.py checks them.

#include "dense_layer.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace kernels_generic {
#define KERNEL_WIDTH 8
#include "kernels.h"
#undef KERNEL_WIDTH
}  // namespace kernels_generic

#if defined(__x86_64__) || defined(__i386__)
namespace kernels_avx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define KERNEL_WIDTH 8
#include "kernels.h"
#undef KERNEL_WIDTH
#pragma GCC pop_options
}  // namespace kernels_avx2
namespace kernels_avx512 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx2,fma")
#define KERNEL_WIDTH 16
#include "kernels.h"
#undef KERNEL_WIDTH
#pragma GCC pop_options
}  // namespace kernels_avx512
#else
// Never selected: the CPU checks below are false off x86.
namespace kernels_avx2 = kernels_generic;
namespace kernels_avx512 = kernels_generic;
#endif

namespace {

// Floats after each padded plane of the LGC kernel's window: the 1x1 and 3x3 kernels
// work on whole chunks of positions (at most 192), so the last chunk reads and writes
// past the last output; the 3x3 taps reach 2 * (w + 1) + 1 positions further.
constexpr int64_t kTail = 2 + 192;
// A multiple of every chunk of positions (8 floats x 3, 4, 6 or 12 vectors; 16 floats
// x 2, 4, 6 or 12 vectors: see with_block).
constexpr int64_t kChunkLcm = 192;
// The LGC kernel's band of rows: at least this many output positions and, if that is
// more, as many rows as keep its window of 1x1 outputs within kWindowFloats.
constexpr int64_t kBandPositions = 64;
constexpr int64_t kWindowFloats = 131072;
// Floats of the SFR kernel's tile of new channels (kept in the L2 cache).
constexpr int64_t kPackFloats = 32768;
// Spatial positions per task of the SFR kernel: at most this many (and a tile of the
// new channels of at most kPackFloats), as many tasks as keep every thread busy.
constexpr int64_t kSfrTile = 1024;

// n rounded up to a multiple of m.
int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// [begin, end) split into tasks of at most `most` positions (a multiple of 16), their
// count a multiple of the thread count so that every thread gets the same share.
int64_t balanced_tile(int64_t n, int64_t most) {
  TORCH_CHECK(n > 0 && most > 0, "balanced_tile: ", n, " positions in tasks of at most ",
              most, " (both must be positive)");
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t tasks = (n + most - 1) / most;
  const int64_t even = (tasks + threads - 1) / threads * threads;
  return std::max<int64_t>(16, ((n + even - 1) / even + 15) / 16 * 16);
}

// The instruction sets the kernels are compiled for, in order of preference.
enum Isa : int { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };
const char* const kIsaNames[] = {"generic", "avx2", "avx512"};

// The best instruction set this CPU runs.
int cpu_best_isa() {
#if defined(__x86_64__) || defined(__i386__)
  static const int best = [] {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
      return static_cast<int>(kAvx512);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return static_cast<int>(kAvx2);
    return static_cast<int>(kGeneric);
  }();
  return best;
#else
  return kGeneric;
#endif
}

// Which kernels run: the best ones this CPU has, unless set lower (set_isa).
std::atomic<int> isa_on{cpu_best_isa()};

int current_isa() { return isa_on.load(std::memory_order_relaxed); }

// The kernel `name` of the instruction set in use (a function of every namespace).
#define PICK(isa, ...)                                     \
  ((isa) == kAvx512 ? &kernels_avx512::__VA_ARGS__       \
   : (isa) == kAvx2 ? &kernels_avx2::__VA_ARGS__         \
                    : &kernels_generic::__VA_ARGS__)

// Floats per vector of the instruction set's kernels.
int64_t vector_width(int isa) { return isa == kAvx512 ? 16 : 8; }

// Per-thread scratch memory reused across calls: at detection sizes a fresh allocation
// per call would be page-faulted in every time.
struct Workspace {
  std::vector<float> slots[4];
  float* get(int slot, int64_t n) {
    if (static_cast<int64_t>(slots[slot].size()) < n) {
      slots[slot] = std::vector<float>();
      slots[slot].resize(n);
    }
    return slots[slot].data();
  }
};
thread_local Workspace workspace;

template <typename F>
void with_act(int64_t act, const char* what, F&& f) {
  switch (act) {
    case 0: return f(std::integral_constant<int, 0>());
    case 1: return f(std::integral_constant<int, 1>());
    case 2: return f(std::integral_constant<int, 2>());
    default:
      TORCH_CHECK(false, what, ": activation code must be 0 (identity), 1 (ReLU) or ",
                  "2 (hard-swish), got ", act);
  }
}

// Register blocking of the 1x1 and 3x3 kernels: OB outputs x XV vectors of positions.
// 8-float vectors (16 AVX2 registers): OB = 4, 2 or 1 (the most that divides
// `outputs`), 12 accumulators (the 1x1 kernel keeps its XV inputs in registers, the
// 3x3 kernel reads each from memory per output when OB is 1). 16-float vectors (32
// AVX-512 registers): OB = 8 with two vectors (16 accumulators; chunks of 32 positions
// waste little on the 7x7 and 14x14 maps of the last blocks), else 4 x 4, 2 x 6 or
// 1 x 12 (16, 12 or 12 accumulators: fewer left the FMA units waiting on the 28x28 to
// 112x112 maps of the first blocks, whose groups have 1 to 4 outputs).
template <typename F>
void with_block(int64_t outputs, bool conv3x3, bool wide, F&& f) {
  using std::integral_constant;
  if (wide) {
    if (outputs % 8 == 0) return f(integral_constant<int, 8>(), integral_constant<int, 2>());
    if (outputs % 4 == 0) return f(integral_constant<int, 4>(), integral_constant<int, 4>());
    if (outputs % 2 == 0) return f(integral_constant<int, 2>(), integral_constant<int, 6>());
    return f(integral_constant<int, 1>(), integral_constant<int, 12>());
  }
  if (outputs % 4 == 0) return f(integral_constant<int, 4>(), integral_constant<int, 3>());
  if (outputs % 2 == 0) {
    if (conv3x3) return f(integral_constant<int, 2>(), integral_constant<int, 6>());
    return f(integral_constant<int, 2>(), integral_constant<int, 4>());
  }
  if (conv3x3) return f(integral_constant<int, 1>(), integral_constant<int, 12>());
  f(integral_constant<int, 1>(), integral_constant<int, 6>());
}

// `t` (named `name`, or `name part` when part is given: the messages are built only on
// failure) is a contiguous float32 CPU tensor of `dim` dims.
void check_float(const at::Tensor& t, const char* op, const char* name, int64_t dim,
                 const char* part = nullptr) {
  const char* space = part != nullptr ? " " : "";
  part = part != nullptr ? part : "";
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(),
              op, ": ", name, space, part, " must be a contiguous float32 CPU tensor, got ",
              t.scalar_type(), " on ", t.device(), t.is_contiguous() ? "" : " (not contiguous)");
  TORCH_CHECK(t.dim() == dim, op, ": ", name, space, part, " must have ", dim, " dims, got ",
              t.sizes());
}

void check_index(const at::Tensor& index, int64_t limit, const char* op) {
  TORCH_CHECK(index.device().is_cpu() && index.scalar_type() == at::kLong &&
                  index.is_contiguous() && index.dim() == 1,
              op, ": index must be a contiguous 1-d int64 CPU tensor");
  const int64_t* idx = index.data_ptr<int64_t>();
  for (int64_t j = 0; j < index.numel(); ++j)
    TORCH_CHECK(idx[j] >= 0 && idx[j] < limit, op, ": index ", idx[j],
                " is outside the layer's ", limit, " input channels");
}

void check_buffer(const at::Tensor& buf, int64_t channels, int64_t growth, const char* op) {
  check_float(buf, op, "buf", 4);
  TORCH_CHECK(channels > 0 && growth > 0 && channels + growth <= buf.size(1), op,
              ": channels ", channels, " + growth ", growth, " exceed the buffer's ",
              buf.size(1), " channels");
}

void check_weight(const at::Tensor& weight, const char* op, const char* name, int64_t k) {
  check_float(weight, op, name, 4);
  TORCH_CHECK(weight.size(0) > 0 && weight.size(1) > 0 && weight.size(2) == k &&
                  weight.size(3) == k,
              op, ": ", name, " must be a non-empty ", k, "x", k, " conv weight, got ",
              weight.sizes());
}

void check_groups(int64_t groups, int64_t channels, const char* op, const char* what) {
  TORCH_CHECK(groups > 0 && channels % groups == 0, op, ": groups ", groups,
              " must be positive and divide the ", channels, " ", what);
}

// An eval-mode BatchNorm of `channels` channels as per-channel scale and shift, from its
// tensors (weight, bias, running_mean, running_var) and eps, computed as torch's CPU
// batch_norm does: scale = weight / sqrt(var + eps), shift = bias - mean * scale.
struct ChannelAffine {
  std::vector<float> scale, shift;
};

ChannelAffine eval_batch_norm(at::TensorList norm, double eps,
                              int64_t channels, const char* op, const char* name) {
  static const char* const parts[] = {"weight", "bias", "running_mean", "running_var"};
  TORCH_CHECK(norm.size() == 4, op, ": ", name, " must be 4 tensors (weight, bias, ",
              "running_mean, running_var), got ", norm.size());
  for (int i = 0; i < 4; ++i) {
    check_float(norm[i], op, name, 1, parts[i]);
    TORCH_CHECK(norm[i].numel() == channels, op, ": ", name, " ", parts[i], " must have ",
                channels, " entries, got ", norm[i].numel());
  }
  const float* weight = norm[0].data_ptr<float>();
  const float* bias = norm[1].data_ptr<float>();
  const float* mean = norm[2].data_ptr<float>();
  const float* var = norm[3].data_ptr<float>();
  const float e = static_cast<float>(eps);
  ChannelAffine out{std::vector<float>(channels), std::vector<float>(channels)};
  for (int64_t c = 0; c < channels; ++c) {
    const float invstd = 1.f / std::sqrt(var[c] + e);
    out.scale[c] = invstd * weight[c];
    out.shift[c] = bias[c] - mean[c] * out.scale[c];
  }
  return out;
}

}  // namespace

// buf: the dense block's (N, C, H, W) buffer; the layer reads its first `channels`
// channels and writes the next growth = conv_weight.size(0).
//   index, norm, eps, act: the LGC's input channels, BN and activation;
//   weight, groups: its grouped 1x1 conv, (groups * out_per_group, in_per_group, 1, 1);
//   norm_2, eps_2, act_2: conv_2's BN and activation (over the shuffled 1x1 outputs);
//   conv_weight: conv_2's grouped 3x3 conv (stride 1, padding 1, `groups` groups).
void lgc_conv_(const at::Tensor& buf, int64_t channels, const at::Tensor& index,
               at::TensorList norm, double eps, int64_t act,
               const at::Tensor& weight, int64_t groups,
               at::TensorList norm_2, double eps_2, int64_t act_2,
               const at::Tensor& conv_weight) {
  constexpr const char* op = "lgc_conv_";
  check_weight(weight, op, "weight", 1);
  check_weight(conv_weight, op, "conv_weight", 3);
  const int64_t c4 = weight.size(0), pi = weight.size(1);
  check_groups(groups, c4, op, "1x1 conv outputs");
  const int64_t po = c4 / groups, nsel = index.numel();
  const int64_t growth = conv_weight.size(0), cin = conv_weight.size(1);
  check_buffer(buf, channels, growth, op);
  check_index(index, channels, op);
  TORCH_CHECK(nsel == groups * pi, op, ": index has ", nsel, " entries, the 1x1 conv ",
              "reads groups * in_per_group = ", groups * pi);
  const ChannelAffine bn = eval_batch_norm(norm, eps, nsel, op, "norm");
  const ChannelAffine bn_2 = eval_batch_norm(norm_2, eps_2, c4, op, "norm_2");
  TORCH_CHECK(growth % groups == 0 && cin * groups == c4, op, ": conv_weight ",
              conv_weight.sizes(), " is not a 3x3 conv with ", groups, " groups over ", c4,
              " channels");
  with_act(act, op, [](auto) {});
  with_act(act_2, op, [](auto) {});
  const int64_t n = buf.size(0), c_all = buf.size(1), h = buf.size(2), w = buf.size(3);
  if (n == 0 || h == 0 || w == 0) return;  // nothing to write
  // conv_2's BN in the order of the 1x1 conv's filters: filter k of group g is channel
  // k * groups + g after the shuffle.
  std::vector<float> scale_2(c4), shift_2(c4);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t k = 0; k < po; ++k) {
      scale_2[g * po + k] = bn_2.scale[k * groups + g];
      shift_2[g * po + k] = bn_2.shift[k * groups + g];
    }

  // The kernels of this call: gather + BN + act, 1x1 conv (+ BN_2 + act_2), 3x3 conv.
  const int isa = current_isa();
  const int64_t width = vector_width(isa);
  using PackFn = void (*)(float*, const float*, int64_t, int64_t, int64_t, float, float,
                          const float*);
  using GemmFn = void (*)(const float*, int64_t, int64_t, const float*, const float*,
                          const float*, int64_t, float*, int64_t, int64_t);
  using ConvFn = void (*)(const float*, int64_t, int64_t, int64_t, const float*, int64_t,
                          float*, int64_t, int64_t, int64_t);
  PackFn pack = nullptr;
  GemmFn gemm = nullptr;
  ConvFn conv = nullptr;
  auto unpad = PICK(isa, unpad_rows);
  int64_t gemm_quantum = 0, conv_quantum = 0;
  with_act(act, op, [&](auto a) {
    pack = PICK(isa, pack_rows<decltype(a)::value>);
  });
  with_block(po, false, width == 16, [&](auto ob, auto xv) {
    constexpr int OB = decltype(ob)::value, XV = decltype(xv)::value;
    gemm_quantum = PICK(isa, positions_quantum<OB, XV>)();
    with_act(act_2, op, [&](auto a) {
      gemm = PICK(isa, pointwise_group<OB, XV, decltype(a)::value>);
    });
  });
  with_block(growth / groups, true, width == 16, [&](auto ob, auto xv) {
    constexpr int OB = decltype(ob)::value, XV = decltype(xv)::value;
    conv_quantum = PICK(isa, positions_quantum<OB, XV>)();
    conv = PICK(isa, conv3x3_group<OB, XV>);
  });

  const int64_t hw = h * w, wp = w + 1, oper = growth / groups;
  // Each task streams over a range of rows, `band` rows at a time. A window holds
  // band + 2 rows of the 1x1 conv's c4 output channels: the band's rows and one row
  // above and below, the 3x3 conv's input. Each channel's plane is a 0, then rows of
  // w outputs and a 0 (wp = w + 1 floats): one zero column is the right padding of a
  // row and the left padding of the next. The window stays in the cache: the 1x1
  // conv's output never goes to memory.
  const int64_t band = std::min(h, std::max<int64_t>((kBandPositions + wp - 1) / wp,
                                                      kWindowFloats / (c4 * wp) - 2));
  const int64_t win_plane = 1 + (band + 2) * wp + kTail;
  const int64_t out_stride = round_up(band * wp, kChunkLcm);
  // One task per thread, even where one band would hold the whole map (the 28x28 to
  // 7x7 maps of the last blocks): each task recomputes the 1x1 conv of the row above
  // and below its rows, less than the time a second thread saves.
  const int64_t tasks = std::min<int64_t>(at::get_num_threads(), h);
  const int64_t* idx = index.data_ptr<int64_t>();
  const float* sc = bn.scale.data();
  const float* sh = bn.shift.data();
  const float* mw = weight.data_ptr<float>();
  const float* cw = conv_weight.data_ptr<float>();

  // Rows may be read in whole vectors up to the end of the buffer.
  const float* buf_end = buf.data_ptr<float>() + buf.numel();
  for (int64_t b = 0; b < n; ++b) {
    float* img = buf.data_ptr<float>() + b * c_all * hw;
    at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
      float* win = workspace.get(1, c4 * win_plane);
      float* out = workspace.get(2, growth * out_stride);
      // Image rows [row, row + rows) into window rows slot, slot + 1, ...: per group,
      // act(BN(x[index])) packed into a tile, then the 1x1 conv + BN_2 + act_2 over the
      // tile into the window row of each filter's shuffled channel (filter k of group g
      // is channel k * groups + g). Rows outside the image and the padding columns
      // become 0.
      auto conv1x1_rows = [&](int64_t slot, int64_t row, int64_t rows) {
        const int64_t lo = std::max<int64_t>(row, 0), hi = std::min(h, row + rows);
        if (lo < hi) {
          // The 1x1 conv over the padded rows (its output lands in the window as it is)
          // or, where that computes many more positions (narrow maps: a padding column
          // per row of w, and the rounding to whole blocks), over the dense rows into
          // `dense`, then copied into the window rows (about one vector copy per vector
          // of positions, against pi multiply-adds per position saved).
          const int64_t padded = round_up((hi - lo) * wp, gemm_quantum);
          const int64_t packed = round_up((hi - lo) * w, gemm_quantum);
          const bool unpadded = (padded - packed) * pi > packed;
          const int64_t len = unpadded ? packed : padded;
          // (+ 16: the last row's vector may write that far past a plane; see pack_rows)
          float* tile = workspace.get(0, pi * len + 16);
          float* dense = unpadded ? workspace.get(3, po * len + 16) : nullptr;
          float* dst = win + 1 + (slot + lo - row) * wp;
          // Unpadded, the rows are packed as one row of (hi - lo) * w floats (the zero
          // pack_rows writes after it falls in the rounding up to len, else on the next
          // tile row, packed after it, or in the + 16).
          const int64_t tile_rows = unpadded ? 1 : hi - lo;
          const int64_t tile_w = unpadded ? (hi - lo) * w : w;
          for (int64_t g = 0; g < groups; ++g) {
            for (int64_t t = 0; t < pi; ++t) {
              const int64_t j = g * pi + t;
              pack(tile + t * len, img + idx[j] * hw + lo * w, tile_rows, tile_w, len, sc[j],
                   sh[j], buf_end);
            }
            gemm(tile, len, pi, mw + g * po * pi, scale_2.data() + g * po,
                 shift_2.data() + g * po, po, unpadded ? dense : dst + g * win_plane,
                 unpadded ? len : groups * win_plane, len);
            if (unpadded)
              for (int64_t k = 0; k < po; ++k)
                unpad(dst + (k * groups + g) * win_plane, dense + k * len, hi - lo, w);
          }
        }
        for (int64_t c = 0; c < c4; ++c) {
          win[c * win_plane] = 0.f;
          for (int64_t r = 0; r < rows; ++r) {
            float* line = win + c * win_plane + 1 + (slot + r) * wp;
            if (row + r < lo || row + r >= hi) {
              std::fill(line, line + wp, 0.f);
            } else {
              line[w] = 0.f;
            }
          }
        }
      };
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t begin = task * h / tasks, end = (task + 1) * h / tasks;
        for (int64_t r0 = begin; r0 < end; r0 += band) {
          const int64_t rows = std::min(band, end - r0);
          if (r0 == begin) {  // the whole window: rows r0 - 1 ... r0 + rows
            conv1x1_rows(0, r0 - 1, rows + 2);
          } else {  // the previous band's last two rows move to the top
            for (int64_t c = 0; c < c4; ++c)
              std::memmove(win + c * win_plane + 1, win + c * win_plane + 1 + band * wp,
                           2 * wp * sizeof(float));
            conv1x1_rows(2, r0 + 1, rows);
          }
          // The grouped 3x3 conv over the window, per group: output row r0 + j is
          // centred on window row j + 1.
          const int64_t q = round_up(rows * wp, conv_quantum);
          for (int64_t g = 0; g < groups; ++g)
            conv(win + g * cin * win_plane, win_plane, cin, wp, cw + g * oper * cin * 9, oper,
                 out + g * oper * out_stride, out_stride, 0, q);
          // The w valid positions of each row into the buffer's new channels.
          float* dst = img + channels * hw + r0 * w;
          for (int64_t o = 0; o < growth; ++o)
            for (int64_t j = 0; j < rows; ++j)
              std::memcpy(dst + o * hw + j * w, out + o * out_stride + j * wp, w * sizeof(float));
        }
      }
    });
  }
}

// buf: as for lgc_conv_; the layer's `growth` new channels follow its `channels` old
// ones. norm, eps, act: the SFR's BN and activation over the new channels; weight,
// groups: its grouped 1x1 conv, (groups * out_per_group, growth / groups, 1, 1), whose
// output j adds into old channel index[j].
void sfr_(const at::Tensor& buf, int64_t channels, int64_t growth,
          at::TensorList norm, double eps, int64_t act,
          const at::Tensor& weight, int64_t groups, const at::Tensor& index) {
  constexpr const char* op = "sfr_";
  check_buffer(buf, channels, growth, op);
  check_weight(weight, op, "weight", 1);
  check_index(index, channels, op);
  check_groups(groups, growth, op, "new channels");
  check_groups(groups, weight.size(0), op, "1x1 conv outputs");
  const int64_t pj = weight.size(0) / groups, pm = weight.size(1);
  const int64_t nre = index.numel();
  TORCH_CHECK(groups * pm == growth && weight.size(0) == nre, op, ": weight ",
              weight.sizes(), " with ", groups, " groups does not map ", growth,
              " new channels to ", nre, " indexed channels");
  const ChannelAffine bn = eval_batch_norm(norm, eps, growth, op, "norm");
  with_act(act, op, [](auto) {});
  if (buf.numel() == 0) return;  // nothing to update

  const int isa = current_isa();
  const int64_t n = buf.size(0), c_all = buf.size(1), hw = buf.size(2) * buf.size(3);
  const int64_t* idx = index.data_ptr<int64_t>();
  const float* sc = bn.scale.data();
  const float* sh = bn.shift.data();
  const float* mw = weight.data_ptr<float>();
  auto axpy4 = PICK(isa, axpy_rows<4>);
  auto axpy1 = PICK(isa, axpy_rows<1>);
  const int64_t tile =
      balanced_tile(hw, std::max<int64_t>(1, std::min(kSfrTile, kPackFloats / growth)));
  for (int64_t b = 0; b < n; ++b) {
    float* img = buf.data_ptr<float>() + b * c_all * hw;
    // Per task (a range of positions): u = act(BN(new channels)) into a thread-local
    // tile, then group g reads u's channels g, g + groups, ... and its output j (of
    // group j / pj) adds into old channel index[j]. Tasks split positions, never
    // channels, so repeated indices accumulate without races.
    with_act(act, op, [&](auto a) {
      auto row = PICK(isa, affine_act_row<decltype(a)::value>);
      at::parallel_for(0, (hw + tile - 1) / tile, 1, [&](int64_t t0, int64_t t1) {
        float* u = workspace.get(0, growth * tile);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t p0 = t * tile, len = std::min(tile, hw - p0);
          for (int64_t c = 0; c < growth; ++c)
            row(u + c * len, img + (channels + c) * hw + p0, len, sc[c], sh[c]);
          for (int64_t j = 0; j < nre;) {  // outputs of one group, four at a time
            const int64_t g = j / pj, block = std::min<int64_t>(4, (g + 1) * pj - j);
            float* rows[4];
            for (int64_t o = 0; o < block; ++o) rows[o] = img + idx[j + o] * hw + p0;
            const float* src = u + g * len;
            bool distinct = block == 4;  // a repeated row would lose an update in a block
            for (int64_t a = 0; distinct && a < 4; ++a)
              for (int64_t b2 = a + 1; b2 < 4; ++b2) distinct = distinct && rows[a] != rows[b2];
            if (distinct) {
              axpy4(rows, src, groups * len, mw + j * pm, pm, len);
            } else {
              for (int64_t o = 0; o < block; ++o)
                axpy1(rows + o, src, groups * len, mw + (j + o) * pm, pm, len);
            }
            j += block;
          }
        }
      });
    });
  }
}

void se_(const at::Tensor& buf, int64_t channels, int64_t growth, const at::Tensor& w1,
         const c10::optional<at::Tensor>& b1, const at::Tensor& w2,
         const c10::optional<at::Tensor>& b2, int64_t gate) {
  constexpr const char* op = "se_";
  check_buffer(buf, channels, growth, op);
  check_float(w1, op, "w1", 2);
  check_float(w2, op, "w2", 2);
  const int64_t hidden = w1.size(0);
  TORCH_CHECK(w1.size(1) == growth && w2.size(0) == growth && w2.size(1) == hidden, op,
              ": w1 ", w1.sizes(), " and w2 ", w2.sizes(), " are not a squeeze-excite of ",
              growth, " channels");
  const float* bias1 = nullptr;
  const float* bias2 = nullptr;
  if (b1.has_value()) {
    check_float(*b1, op, "b1", 1);
    TORCH_CHECK(b1->numel() == hidden, op, ": b1 must have ", hidden, " entries");
    bias1 = b1->data_ptr<float>();
  }
  if (b2.has_value()) {
    check_float(*b2, op, "b2", 1);
    TORCH_CHECK(b2->numel() == growth, op, ": b2 must have ", growth, " entries");
    bias2 = b2->data_ptr<float>();
  }
  TORCH_CHECK(gate == 0 || gate == 1, op, ": gate code must be 0 (sigmoid) or 1 ",
              "(hard-sigmoid), got ", gate);
  const int64_t n = buf.size(0), c_all = buf.size(1), hw = buf.size(2) * buf.size(3);
  if (n == 0 || hw == 0) return;  // nothing to scale
  const float* pw1 = w1.data_ptr<float>();
  const float* pw2 = w2.data_ptr<float>();
  const int isa = current_isa();
  auto dot = PICK(isa, dot_row);
  auto scale_by = PICK(isa, scale_row);
  std::vector<float> pooled(growth), mid(hidden), scale(growth);
  for (int64_t b = 0; b < n; ++b) {
    float* x = buf.data_ptr<float>() + (b * c_all + channels) * hw;
    at::parallel_for(0, growth, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        pooled[c] = dot(x + c * hw, nullptr, hw) / static_cast<float>(hw);
    });
    for (int64_t j = 0; j < hidden; ++j) {
      const float acc = (bias1 ? bias1[j] : 0.f) + dot(pw1 + j * growth, pooled.data(), growth);
      mid[j] = acc < 0.f ? 0.f : acc;  // ReLU; NaN propagates as in torch
    }
    for (int64_t c = 0; c < growth; ++c) {
      const float acc = (bias2 ? bias2[c] : 0.f) + dot(pw2 + c * hidden, mid.data(), hidden);
      scale[c] = gate == 0 ? 1.f / (1.f + std::exp(-acc))
                           : std::min(std::max(acc + 3.f, 0.f), 6.f) / 6.f;
    }
    at::parallel_for(0, growth, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) scale_by(x + c * hw, hw, scale[c]);
    });
  }
}

// out (M, N) = x (M, K) @ weight (N, K)^T + bias (N): a Linear layer for small M (a
// classifier head at inference), the weight streamed once.
void linear_(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight,
             const c10::optional<at::Tensor>& bias) {
  constexpr const char* op = "linear_";
  check_float(out, op, "out", 2);
  check_float(x, op, "x", 2);
  check_float(weight, op, "weight", 2);
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  TORCH_CHECK(weight.size(1) == k && out.size(0) == m && out.size(1) == n, op, ": x ",
              x.sizes(), ", weight ", weight.sizes(), " and out ", out.sizes(),
              " are not (M, K), (N, K) and (M, N)");
  const float* b = nullptr;
  if (bias.has_value()) {
    check_float(*bias, op, "bias", 1);
    TORCH_CHECK(bias->numel() == n, op, ": bias must have ", n, " entries, got ",
                bias->numel());
    b = bias->data_ptr<float>();
    at::assert_no_overlap(out, *bias);
  }
  at::assert_no_overlap(out, x);  // out is written while x and weight are read
  at::assert_no_overlap(out, weight);
  if (out.numel() == 0) return;
  auto rows = PICK(current_isa(), linear_rows);
  float* y = out.data_ptr<float>();
  const float* xs = x.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  at::parallel_for(0, n, 64, [&](int64_t o0, int64_t o1) {
    rows(y, xs, m, w, b, k, n, o0, o1);
  });
}

void avg_pool2x2_(const at::Tensor& out, const at::Tensor& x) {
  constexpr const char* op = "avg_pool2x2_";
  check_float(x, op, "x", 4);
  TORCH_CHECK(out.device().is_cpu() && out.scalar_type() == at::kFloat && out.dim() == 4, op,
              ": out must be a 4-d float32 CPU tensor, got ", out.scalar_type(), " on ",
              out.device(), " with ", out.dim(), " dims");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t ho = h / 2, wo = w / 2;
  TORCH_CHECK(out.size(0) == n && out.size(1) >= c && out.size(2) == ho && out.size(3) == wo,
              op, ": out must be (", n, ", C >= ", c, ", ", ho, ", ", wo, ") for x ",
              x.sizes(), ", got ", out.sizes());
  if (out.numel() == 0) return;  // nothing to write (an empty tensor's strides are moot)
  TORCH_CHECK(out.stride(3) == 1 && out.stride(2) == wo && out.stride(1) == ho * wo, op,
              ": out's planes must be contiguous (e.g. a channel slice of an NCHW buffer), "
              "got strides ", out.strides());
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t nstride = out.stride(0);
  // (top-left + bottom-left) + (top-right + bottom-right), then / 4: the same sums as
  // the PyTorch path of mmsfr.models.layers.avg_pool2x2.
  at::parallel_for(0, n * c, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* plane = src + p * h * w;
      float* o = dst + p / c * nstride + p % c * ho * wo;
      for (int64_t r = 0; r < ho; ++r) {
        const float* top = plane + 2 * r * w;
        const float* bottom = top + w;
        float* row = o + r * wo;
        for (int64_t x0 = 0; x0 < wo; ++x0)
          row[x0] = ((top[2 * x0] + bottom[2 * x0]) + (top[2 * x0 + 1] + bottom[2 * x0 + 1])) * 0.25f;
      }
    }
  });
}

// The instruction set the kernels run: "avx512", "avx2" or "generic".
std::string isa() { return kIsaNames[current_isa()]; }

// How many threads the kernels' at::parallel_for runs `tasks` tasks on (1 when the
// extension was compiled without the OpenMP that torch's parallel_for needs).
int64_t parallel_threads(int64_t tasks) {
  TORCH_CHECK(tasks > 0, "parallel_threads: tasks must be positive, got ", tasks);
  std::vector<std::atomic<int>> seen(at::get_num_threads());
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    seen[at::get_thread_num()].store(1, std::memory_order_relaxed);
  });
  int64_t used = 0;
  for (auto& s : seen) used += s.load();
  return used;
}

// Run the kernels of instruction set `name` (one this CPU has); returns the previous.
std::string set_isa(const std::string& name) {
  int level = -1;
  for (int i = 0; i < 3; ++i)
    if (name == kIsaNames[i]) level = i;
  TORCH_CHECK(level >= 0, "set_isa: instruction set must be 'avx512', 'avx2' or ",
              "'generic', got '", name, "'");
  TORCH_CHECK(level <= cpu_best_isa(), "set_isa: this CPU cannot run the '", name,
              "' kernels; the best it runs is '", kIsaNames[cpu_best_isa()], "'");
  return kIsaNames[isa_on.exchange(level)];
}

// The best instruction set this CPU runs.
std::string best_isa() { return kIsaNames[cpu_best_isa()]; }

TORCH_LIBRARY_IMPL(mmsfr, CPU, m) {
  m.impl("lgc_conv_", &lgc_conv_);
  m.impl("sfr_", &sfr_);
  m.impl("se_", &se_);
  m.impl("avg_pool2x2_", &avg_pool2x2_);
  m.impl("linear_", &linear_);
}

// Not tensor operators: registered without a dispatch key (they run on any call).
TORCH_LIBRARY_FRAGMENT(mmsfr, m) {
  m.def("isa() -> str", &isa);
  m.def("best_isa() -> str", &best_isa);
  m.def("parallel_threads(int tasks) -> int", &parallel_threads);
  m.def("set_isa(str name) -> str", &set_isa);
}
