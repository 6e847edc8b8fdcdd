// Inner loops of mmsfr's fused dense-layer kernels (float32, raw row pointers).
//
// dense_layer.cpp includes this file three times, each time inside its own namespace
// and with its own KERNEL_WIDTH (floats per vector): compiled for AVX-512 (16), for
// AVX2 + FMA (8) and for the baseline instruction set (8); it picks one at run time.
// The vectors are GCC/Clang vector extensions, so the same source compiles to zmm or
// ymm registers, or to pairs of SSE registers.

#ifndef KERNEL_WIDTH
#error "define KERNEL_WIDTH (floats per vector) before including kernels.h"
#endif

// Floats per vector of this compilation.
constexpr int VW = KERNEL_WIDTH;

#ifndef UNROLL
// Fully unrolls the loop it precedes: over a kernel's registers (outputs x vectors of
// positions), whose count is a template argument. Unrolled that early, GCC keeps an
// array of accumulators in registers; otherwise it keeps them on the stack around the
// loops that use them, which took about 2/3 of the time of a 1x1 block with 2 inputs.
#define UNROLL _Pragma("GCC unroll 16")
#endif

typedef float vecw __attribute__((vector_size(4 * KERNEL_WIDTH), aligned(4), may_alias));

static inline vecw loadw(const float* p) { return *reinterpret_cast<const vecw*>(p); }
static inline void storew(float* p, vecw v) { *reinterpret_cast<vecw*>(p) = v; }
// v in every lane. (Written as v - 0, which the compiler folds to a broadcast: v + 0 is
// not v for v = -0, so `vecw{} + v` costs a scalar add before each broadcast.)
static inline vecw splatw(float v) { return v - vecw{}; }

// Activation codes: 0 identity, 1 ReLU, 2 hard-swish (x * relu6(x + 3) / 6; the
// division is a multiplication by 1 / 6, which differs from torch's by at most an ulp).
// NaN propagates as in torch: ReLU keeps it (only values below 0 become 0), and the
// clamps of hard-swish pass it on.
template <int ACT>
static inline float activate(float v) {
  if (ACT == 1) return v < 0.f ? 0.f : v;
  if (ACT == 2) {
    float t = v + 3.f;
    t = t < 0.f ? 0.f : (t > 6.f ? 6.f : t);
    return v * t * (1.f / 6.f);
  }
  return v;
}

template <int ACT>
static inline vecw activatew(vecw v) {
  if (ACT == 1) return v < 0.f ? splatw(0.f) : v;
  if (ACT == 2) {
    vecw t = v + 3.f;
    t = t < 0.f ? splatw(0.f) : t;
    t = t > 6.f ? splatw(6.f) : t;
    return v * t * (1.f / 6.f);
  }
  return v;
}

// dst[p] = act(src[p] * a + b) for p < n.
template <int ACT>
static void affine_act_row(float* dst, const float* src, int64_t n, float a, float b) {
  for (int64_t p = 0; p < n; ++p) dst[p] = activate<ACT>(src[p] * a + b);
}

// dst[p] = act(src[p] * a + b) for p < n, in whole vectors: the last one may read past
// src + n (never at or past `limit`, else the rest goes one float at a time) and then
// writes up to VW - 1 floats past dst + n.
template <int ACT>
static inline void act_span(float* dst, const float* src, int64_t n, float a, float b,
                            const float* limit) {
  int64_t x = 0;
  for (; x + VW <= n; x += VW) storew(dst + x, activatew<ACT>(loadw(src + x) * a + b));
  if (x < n) {
    if (src + x + VW <= limit) {
      storew(dst + x, activatew<ACT>(loadw(src + x) * a + b));
    } else {
      for (; x < n; ++x) dst[x] = activate<ACT>(src[x] * a + b);
    }
  }
}

// `rows` rows of a dense plane (w floats each, from src) as rows of w + 1 floats in
// dst: act(src * a + b), then a 0 (a 3x3 conv's padding column: the right one of its
// row and the left one of the next); dst[rows * (w + 1), n) is zeroed. A row's last
// vector (act_span) may write past it into the padding and the next row, which that
// row then overwrites; the last row's spill stays below
// dst + max(n, rows * (w + 1) + VW).
template <int ACT>
static void pack_rows(float* dst, const float* src, int64_t rows, int64_t w, int64_t n,
                      float a, float b, const float* limit) {
  const int64_t wp = w + 1;
  for (int64_t r = 0; r < rows; ++r) {
    act_span<ACT>(dst + r * wp, src + r * w, w, a, b, limit);
    dst[r * wp + w] = 0.f;
  }
  for (int64_t q = rows * wp; q < n; ++q) dst[q] = 0.f;
}

// `rows` rows of w floats (dense, from src) into rows of w + 1 floats at dst (a padded
// plane's, whose padding column the caller then zeroes). Whole vectors: each row's
// last one reads up to VW - 1 floats past it and writes as far past it, into the
// padding and the next row, which that row then overwrites.
static void unpad_rows(float* dst, const float* src, int64_t rows, int64_t w) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t x = 0; x < w; x += VW) storew(dst + r * (w + 1) + x, loadw(src + r * w + x));
}

// OB outputs x VW * XV positions of a 1x1 conv followed by a per-output affine map (an
// eval-mode BN) and an activation:
// out[o][q] = act((sum_t w[o * cin + t] * in[t * istride + q]) * a[o] + b[o]); output o
// is `ostride` floats after output o - 1.
// (Out of line: inlined into over_positions' loop, GCC spills the accumulators.)
template <int OB, int XV, int ACT>
__attribute__((noinline)) static void pointwise_block(
    const float* in, int64_t istride, int64_t cin, const float* w, const float* a,
    const float* b, float* out, int64_t ostride, int64_t q0) {
  vecw acc[OB][XV];
  UNROLL for (int o = 0; o < OB; ++o)
    UNROLL for (int v = 0; v < XV; ++v) acc[o][v] = splatw(0.f);
  for (int64_t t = 0; t < cin; ++t) {
    const float* s = in + t * istride + q0;
    vecw src[XV];
    UNROLL for (int v = 0; v < XV; ++v) src[v] = loadw(s + VW * v);
    UNROLL for (int o = 0; o < OB; ++o) {
      const vecw wv = splatw(w[o * cin + t]);
      UNROLL for (int v = 0; v < XV; ++v) acc[o][v] += wv * src[v];
    }
  }
  UNROLL for (int o = 0; o < OB; ++o) {
    const vecw av = splatw(a[o]), bv = splatw(b[o]);
    UNROLL for (int v = 0; v < XV; ++v)
      storew(out + o * ostride + q0 + VW * v, activatew<ACT>(acc[o][v] * av + bv));
  }
}

// Whether the kernels blocked OB outputs x XV vectors finish a range of positions
// with blocks of two vectors and one (so ranges are a multiple of VW), or round it up
// to whole blocks of VW * XV positions. Those smaller blocks keep OB * 2 and OB
// accumulators: with OB >= 4 that still keeps most of the FMA units busy, and costs
// less than computing up to XV - 1 vectors of padding (e.g. 8 of the 72 positions a
// 7x7 map's 63 padded ones are rounded to); with fewer outputs it would not.
template <int OB, int XV>
constexpr bool kTails = OB >= 4 && XV > 1;

// Positions of a range as a kernel blocked OB x XV takes them: VW, or VW * XV
// (kTails).
template <int OB, int XV>
constexpr int64_t positions_quantum() { return kTails<OB, XV> ? VW : VW * XV; }

// blocks(q0, xv) over positions [q_begin, q_end), a multiple of positions_quantum<OB,
// XV>(): blocks of xv = XV vectors, then (kTails) the rest in blocks of 2 and 1; xv is a
// std::integral_constant. A block of one vector takes about as long as one of two (its
// OB accumulators wait on the FMA latency), so with XV = 3 a single vector left over
// joins the last block of 3 as two blocks of 2.
template <int OB, int XV, typename F>
static inline void over_positions(int64_t q_begin, int64_t q_end, F&& blocks) {
  int64_t q0 = q_begin;
  int64_t full = (q_end - q_begin) / (VW * XV);
  if constexpr (kTails<OB, XV> && XV == 3)
    if (full > 0 && (q_end - q_begin) % (VW * XV) == VW) --full;
  for (; full > 0; --full, q0 += VW * XV) blocks(q0, std::integral_constant<int, XV>());
  if constexpr (kTails<OB, XV>) {
    if constexpr (XV > 2)
      for (; q0 + VW * 2 <= q_end; q0 += VW * 2) blocks(q0, std::integral_constant<int, 2>());
    for (; q0 < q_end; q0 += VW) blocks(q0, std::integral_constant<int, 1>());
  }
}

// All `cout` outputs (a multiple of OB) of a 1x1 conv + affine + act over positions
// [0, n), a multiple of positions_quantum<OB, XV>(), of `cin` input rows `istride`
// floats apart.
template <int OB, int XV, int ACT>
static void pointwise_group(const float* in, int64_t istride, int64_t cin, const float* w,
                            const float* a, const float* b, int64_t cout, float* out,
                            int64_t ostride, int64_t n) {
  over_positions<OB, XV>(0, n, [&](int64_t q0, auto xv) {
    for (int64_t o = 0; o + OB <= cout; o += OB)
      pointwise_block<OB, decltype(xv)::value, ACT>(in, istride, cin, w + o * cin, a + o,
                                                    b + o, out + o * ostride, ostride, q0);
  });
}

// OB outputs x VW * XV flat positions of a 3x3, stride-1 convolution over zero-padded
// planes whose rows are wp floats apart, accumulated in registers:
// out[o][q] = sum_t,ky,kx w[o][t][ky][kx] * in[t * plane + q + ky * wp + kx]. With the
// planes laid out as lgc_conv_'s window (a 0, then rows of w inputs and a 0), flat
// position q = r * wp + x is output (r, x); the position per row with x = w is
// computed and discarded by the caller.
//   in: `cin` padded planes, `plane` floats apart; w: (OB, cin, 9) weights, `wstride`
//   floats per output; out: OB rows, `ostride` floats apart.
// (Out of line, as pointwise_block.)
template <int OB, int XV>
__attribute__((noinline)) static void conv3x3_block(
    const float* in, int64_t plane, int64_t cin, int64_t wp, const float* w,
    int64_t wstride, float* out, int64_t ostride, int64_t q0) {
  vecw acc[OB][XV];
  UNROLL for (int o = 0; o < OB; ++o)
    UNROLL for (int v = 0; v < XV; ++v) acc[o][v] = splatw(0.f);
  for (int64_t t = 0; t < cin; ++t) {
    const float* row = in + t * plane + q0;
    const float* wt = w + t * 9;
    for (int ky = 0; ky < 3; ++ky) {
      for (int kx = 0; kx < 3; ++kx) {
        const float* s = row + ky * wp + kx;
        vecw src[XV];
        UNROLL for (int v = 0; v < XV; ++v) src[v] = loadw(s + VW * v);
        UNROLL for (int o = 0; o < OB; ++o) {
          const vecw wv = splatw(wt[o * wstride + ky * 3 + kx]);
          UNROLL for (int v = 0; v < XV; ++v) acc[o][v] += wv * src[v];
        }
      }
    }
  }
  UNROLL for (int o = 0; o < OB; ++o)
    UNROLL for (int v = 0; v < XV; ++v) storew(out + o * ostride + q0 + VW * v, acc[o][v]);
}

// All `cout` outputs of one group over flat positions [q_begin, q_end), a multiple
// of positions_quantum<OB, XV>() (cout is a multiple of OB).
template <int OB, int XV>
static void conv3x3_group(const float* in, int64_t plane, int64_t cin, int64_t wp,
                          const float* w, int64_t cout, float* out, int64_t ostride,
                          int64_t q_begin, int64_t q_end) {
  const int64_t wstride = cin * 9;
  over_positions<OB, XV>(q_begin, q_end, [&](int64_t q0, auto xv) {
    for (int64_t o = 0; o + OB <= cout; o += OB)
      conv3x3_block<OB, decltype(xv)::value>(in, plane, cin, wp, w + o * wstride, wstride,
                                             out + o * ostride, ostride, q0);
  });
}

// f(std::integral_constant<int, k>()) for k in [1, MAX] (a run-time count of vectors
// as a template argument).
template <int MAX, typename F>
static inline void with_count(int64_t k, F&& f) {
  if constexpr (MAX > 1)
    if (k < MAX) return with_count<MAX - 1>(k, f);
  f(std::integral_constant<int, MAX>());
}

// For OB outputs o: dst[o][p] += sum_t w[o * cin + t] * src[t * sstride + p] over XV
// vectors of positions, at p0, p0 + VW, ..., the last one at `last` (dst[o]: the row of
// output o). Every vector is loaded before any is stored, and they are stored in order.
template <int OB, int XV>
static inline void axpy_block(float* const* dst, const float* src, int64_t sstride,
                              const float* w, int64_t cin, int64_t p0, int64_t last) {
  int64_t at[XV];
  UNROLL for (int v = 0; v < XV; ++v) at[v] = v + 1 < XV ? p0 + VW * v : last;
  vecw acc[OB][XV];
  UNROLL for (int o = 0; o < OB; ++o)
    UNROLL for (int v = 0; v < XV; ++v) acc[o][v] = loadw(dst[o] + at[v]);
  for (int64_t t = 0; t < cin; ++t) {
    vecw s[XV];
    UNROLL for (int v = 0; v < XV; ++v) s[v] = loadw(src + t * sstride + at[v]);
    UNROLL for (int o = 0; o < OB; ++o) {
      const vecw wv = splatw(w[o * cin + t]);
      UNROLL for (int v = 0; v < XV; ++v) acc[o][v] += wv * s[v];
    }
  }
  UNROLL for (int o = 0; o < OB; ++o)
    UNROLL for (int v = 0; v < XV; ++v) storew(dst[o] + at[v], acc[o][v]);
}

// The SFR's update of OB distinct rows: dst[o][p] += sum_t w[o * cin + t] *
// src[t * sstride + p] for p < n, in vectors of 16 positions (two 8-float vectors or one
// 16-float vector: the SFR kernel's tiles are multiples of 16), then single vectors.
// Positions past the last whole vector (n >= VW) are those of one more vector, ending
// at n, in the last block: it loads the positions it shares with the block's other
// vectors before they are updated and stores the same sums after them. (One by one, the
// last positions' OB sums of cin products waited on the latency of each add.)
template <int OB>
static void axpy_rows(float* const* dst, const float* src, int64_t sstride, const float* w,
                      int64_t cin, int64_t n) {
  constexpr int XV = 16 / VW;
  // (Local copies: the compiler then knows that the rows' stores leave them alone.)
  float* rows[OB];
  UNROLL for (int o = 0; o < OB; ++o) rows[o] = dst[o];
  const int64_t whole = n / VW * VW;
  if (whole < n && n >= VW) {
    // Blocks of XV vectors, then the 1 to XV left and the one ending at n.
    int64_t p = 0;
    for (; whole - p > VW * XV; p += VW * XV)
      axpy_block<OB, XV>(rows, src, sstride, w, cin, p, p + VW * (XV - 1));
    with_count<XV>((whole - p) / VW, [&](auto k) {
      axpy_block<OB, decltype(k)::value + 1>(rows, src, sstride, w, cin, p, n - VW);
    });
    return;
  }
  int64_t p = 0;
  for (; p + VW * XV <= whole; p += VW * XV)
    axpy_block<OB, XV>(rows, src, sstride, w, cin, p, p + VW * (XV - 1));
  for (; p < whole; p += VW) axpy_block<OB, 1>(rows, src, sstride, w, cin, p, p);
  for (; p < n; ++p)
    UNROLL for (int o = 0; o < OB; ++o) {
      float acc = rows[o][p];
      for (int64_t t = 0; t < cin; ++t) acc += w[o * cin + t] * src[t * sstride + p];
      rows[o][p] = acc;
    }
}

// The sum of x[p] * (y ? y[p] : 1) for p < n: VW * 4 partial sums in vectors, then
// the rest one by one (the squeeze-excite's global mean and its matrix-vector products;
// a single float running sum would wait on each add's latency).
static float dot_row(const float* x, const float* y, int64_t n) {
  vecw acc[4];
  UNROLL for (int v = 0; v < 4; ++v) acc[v] = splatw(0.f);
  int64_t p = 0;
  if (y != nullptr) {
    for (; p + 4 * VW <= n; p += 4 * VW)
      UNROLL for (int v = 0; v < 4; ++v)
        acc[v] += loadw(x + p + VW * v) * loadw(y + p + VW * v);
    for (; p + VW <= n; p += VW) acc[0] += loadw(x + p) * loadw(y + p);
  } else {
    for (; p + 4 * VW <= n; p += 4 * VW)
      UNROLL for (int v = 0; v < 4; ++v) acc[v] += loadw(x + p + VW * v);
    for (; p + VW <= n; p += VW) acc[0] += loadw(x + p);
  }
  const vecw s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  float total = 0.f;
  for (int i = 0; i < VW; ++i) total += s[i];
  for (; p < n; ++p) total += y != nullptr ? x[p] * y[p] : x[p];
  return total;
}

// x[p] *= a for p < n.
static void scale_row(float* x, int64_t n, float a) {
  int64_t p = 0;
  for (; p + VW <= n; p += VW) storew(x + p, loadw(x + p) * a);
  for (; p < n; ++p) x[p] *= a;
}

// out[m * n + o] = (bias ? bias[o] : 0) + sum_t w[o * k + t] * x[m * k + t] for the
// outputs o in [o0, o1) of `rows` input rows: a fully connected layer, each weight row
// read once from memory for all the input rows (which stay in the cache).
static void linear_rows(float* out, const float* x, int64_t rows, const float* w,
                        const float* bias, int64_t k, int64_t n, int64_t o0, int64_t o1) {
  for (int64_t o = o0; o < o1; ++o) {
    const float b = bias != nullptr ? bias[o] : 0.f;
    for (int64_t m = 0; m < rows; ++m) out[m * n + o] = b + dot_row(w + o * k, x + m * k, k);
  }
}
