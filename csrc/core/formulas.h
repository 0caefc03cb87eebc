// The formulas, written once: every activation and its derivative, every loss term and its
// gradient, every merge and every optimizer update, as scalar functions compiled for the host
// and (under nvcc) for the device. The CPU reference ops (cpu/ops.h), the vectorised float loops
// (cpu/simd.cpp) and the CUDA kernels (cuda/elementwise.cu, cuda/loss.cu) all call these, so the
// backends cannot drift apart. Elementary functions come from a math policy M (StdMath here:
// <cmath> on the host, CUDA's libdevice on the device; simd.cpp passes its branch-free
// polynomial versions so its loops still vectorise).
//
// Switches over the op enums list every enumerator and have no `default:`; the build uses
// -Werror=switch, so a new op that is missing anywhere fails to compile.
#pragma once
#include <cmath>
#include <type_traits>

#include "ir.h"

#if defined(__CUDACC__)
#define NM_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define NM_HD inline __attribute__((always_inline))  // into the vectorised clones of simd.cpp
#else
#define NM_HD inline
#endif

namespace nm::fm {

constexpr double kSeluLambda = 1.0507009873554805, kSeluAlpha = 1.6732632423543772;
constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluK = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476, kInvSqrt2Pi = 0.3989422804014327;

// <cmath> on the host, the CUDA math library on the device. erfc_gauss: erfc(x) and e^(-x^2)
// together (a fast policy shares the exponential; GELU-erf's derivative needs both).
struct StdMath {
#if defined(__CUDA_ARCH__)
  template <class T> static __device__ T exp(T x) { return ::exp(x); }
  template <class T> static __device__ T expm1(T x) { return ::expm1(x); }
  template <class T> static __device__ T tanh(T x) { return ::tanh(x); }
  template <class T> static __device__ T erfc(T x) { return ::erfc(x); }
  template <class T> static __device__ T log(T x) { return ::log(x); }
  template <class T> static __device__ T sqrt(T x) { return ::sqrt(x); }
  template <class T> static __device__ void erfc_gauss(T x, T& e, T& g) { e = ::erfc(x), g = ::exp(-x * x); }
#else
  template <class T> static T exp(T x) { return std::exp(x); }
  template <class T> static T expm1(T x) { return std::expm1(x); }
  template <class T> static T tanh(T x) { return std::tanh(x); }
  template <class T> static T erfc(T x) { return std::erfc(x); }
  template <class T> static T log(T x) { return std::log(x); }
  template <class T> static T sqrt(T x) { return std::sqrt(x); }
  template <class T> static void erfc_gauss(T x, T& e, T& g) { e = std::erfc(x), g = std::exp(-x * x); }
#endif
  // 1 / (1 + e^-z) without overflow for either sign
  template <class T> NM_HD static T sigmoid(T z) {
    return z >= T(0) ? T(1) / (T(1) + exp(-z)) : exp(z) / (T(1) + exp(z));
  }
};

template <Act A>
using ActTag = std::integral_constant<Act, A>;

// f(z) for an elementwise activation A (softmax is a row operation: the identity here; see
// the row code that calls these). alpha is the learned PReLU slope, p the activation parameter.
template <Act A, class M = StdMath, class T>
NM_HD T act(T p, T alpha, T z) {
  if constexpr (A == Act::Sigmoid) return M::sigmoid(z);
  else if constexpr (A == Act::Tanh) return M::tanh(z);
  else if constexpr (A == Act::Relu) return z > T(0) ? z : T(0);
  else if constexpr (A == Act::Linear || A == Act::Softmax || A == Act::kCount) return z;
  else if constexpr (A == Act::BinaryStep) return z >= T(0) ? T(1) : T(0);
  else if constexpr (A == Act::ReluLeaky) return z > T(0) ? z : p * z;
  else if constexpr (A == Act::ReluParametric) return z > T(0) ? z : alpha * z;
  else if constexpr (A == Act::Elu) return z > T(0) ? z : p * M::expm1(z < T(0) ? z : T(0));
  else if constexpr (A == Act::Selu)
    return T(kSeluLambda) * (z > T(0) ? z : T(kSeluAlpha) * M::expm1(z < T(0) ? z : T(0)));
  else if constexpr (A == Act::Swish) return z * M::sigmoid(p * z);
  else if constexpr (A == Act::Gelu)  // 0.5 z (1 + tanh u) = z sigmoid(2u): no cancellation
    return z * M::sigmoid(T(2) * T(kGeluC) * (z + T(kGeluK) * z * z * z));
  else  // GeluErf: z Phi(z), Phi through erfc (exact in the left tail)
    return T(0.5) * z * M::erfc(-z * T(kInvSqrt2));
}

// f'(z), given z and a = f(z).
template <Act A, class M = StdMath, class T>
NM_HD T deriv(T p, T alpha, T z, T a) {
  if constexpr (A == Act::Sigmoid) return a * (T(1) - a);
  else if constexpr (A == Act::Tanh) return T(1) - a * a;
  else if constexpr (A == Act::Relu) return z > T(0) ? T(1) : T(0);
  else if constexpr (A == Act::Linear || A == Act::Softmax || A == Act::kCount) return T(1);
  else if constexpr (A == Act::BinaryStep) return T(0);
  else if constexpr (A == Act::ReluLeaky) return z > T(0) ? T(1) : p;
  else if constexpr (A == Act::ReluParametric) return z > T(0) ? T(1) : alpha;
  else if constexpr (A == Act::Elu) return z > T(0) ? T(1) : p * M::exp(z < T(0) ? z : T(0));
  else if constexpr (A == Act::Selu)
    return T(kSeluLambda) * (z > T(0) ? T(1) : T(kSeluAlpha) * M::exp(z < T(0) ? z : T(0)));
  else if constexpr (A == Act::Swish) {
    const T s = M::sigmoid(p * z);
    return s + p * z * s * (T(1) - s);
  } else if constexpr (A == Act::Gelu) {  // s = sigmoid(2u); 1 - tanh^2 u = 4 s (1 - s)
    const T s = M::sigmoid(T(2) * T(kGeluC) * (z + T(kGeluK) * z * z * z));
    return s + T(2) * z * s * (T(1) - s) * T(kGeluC) * (T(1) + T(3 * kGeluK) * z * z);
  } else {  // GeluErf: Phi(z) + z phi(z), phi(z) = e^(-u^2) / sqrt(2 pi) at u = -z / sqrt(2)
    T e, g;
    M::erfc_gauss(-z * T(kInvSqrt2), e, g);
    return T(0.5) * e + z * T(kInvSqrt2Pi) * g;
  }
}

// f(z) and f'(z) together, with one evaluation of what they share (the sigmoid of GELU and
// Swish, GELU-erf's erfc); the same formulas as act and deriv.
template <Act A, class M = StdMath, class T>
NM_HD void act_deriv(T p, T alpha, T z, T& a, T& d) {
  if constexpr (A == Act::Gelu) {
    // the operations of act and deriv in their order: the same bits
    const T s = M::sigmoid(T(2) * T(kGeluC) * (z + T(kGeluK) * z * z * z));
    a = z * s;
    d = s + T(2) * z * s * (T(1) - s) * T(kGeluC) * (T(1) + T(3 * kGeluK) * z * z);
  } else if constexpr (A == Act::Swish) {
    const T s = M::sigmoid(p * z);
    a = z * s;
    d = s + p * z * s * (T(1) - s);
  } else if constexpr (A == Act::GeluErf) {  // erfc and e^(-z^2/2) share one exponential
    T e, g;
    M::erfc_gauss(-z * T(kInvSqrt2), e, g);
    a = T(0.5) * z * e;
    d = T(0.5) * e + z * T(kInvSqrt2Pi) * g;
  } else {
    a = act<A, M>(p, alpha, z);
    d = deriv<A, M>(p, alpha, z, a);
  }
}

// Every activation, once: the dispatchers below expand it (a missing enumerator fails the
// build through -Werror=switch).
#define NM_ACT_CASE(a, name) case Act::a: return fn(ActTag<Act::a>{});

// Calls fn(ActTag<f>{}) with the activation as a compile-time constant: loops written inside fn
// get one specialised (vectorisable) body per activation. with_act runs on host and device;
// with_act_host takes host-only callables (kernel launchers).
template <class Fn>
NM_HD decltype(auto) with_act(Act f, Fn&& fn) {
  switch (f) {
    NM_ACTIVATIONS(NM_ACT_CASE)
    case Act::kCount: break;
  }
  return fn(ActTag<Act::kCount>{});  // not an activation: the identity
}
template <class Fn>
inline decltype(auto) with_act_host(Act f, Fn&& fn) {
  switch (f) {
    NM_ACTIVATIONS(NM_ACT_CASE)
    case Act::kCount: break;
  }
  return fn(ActTag<Act::kCount>{});
}
#undef NM_ACT_CASE

template <class M = StdMath, class T>
NM_HD T act(Act f, T p, T alpha, T z) {
  return with_act(f, [&](auto tag) { return act<decltype(tag)::value, M>(p, alpha, z); });
}
template <class M = StdMath, class T>
NM_HD T deriv(Act f, T p, T alpha, T z, T a) {
  return with_act(f, [&](auto tag) { return deriv<decltype(tag)::value, M>(p, alpha, z, a); });
}

// ------------------------------------------------------------------------------------ losses
// A row's loss is the sum of terms over its n entries (cross-entropy) or their mean (the rest).
NM_HD bool loss_sums(Loss l) { return l == Loss::CrossEntropy; }

template <class M = StdMath, class T>
NM_HD T loss_term(Loss l, T p, T r, T e) {
  const T x = r - e, ax = x < T(0) ? -x : x;
  switch (l) {
    case Loss::Mse: return x * x;
    case Loss::Mae: return ax;
    case Loss::Mape: {
      const T ae = e < T(0) ? -e : e;
      return ax / (ae > T(1e-8) ? ae : T(1e-8));
    }
    case Loss::Huber: return ax <= p ? T(0.5) * x * x : p * (ax - T(0.5) * p);
    case Loss::HuberModified: {
      const T y = e * r, h = T(1) - y > T(0) ? T(1) - y : T(0);
      return y >= T(-1) ? h * h : T(-4) * y;
    }
    // The clamps are written so that a NaN r falls through to the result (a comparison with
    // NaN is false): a NaN prediction must give a NaN loss, which train() refuses before any
    // update (with `r > eps ? r : eps` a NaN softmax row had given a finite loss, and the fused
    // SGD path then wrote NaN into the weights).
    case Loss::CrossEntropy: return -e * M::log(r < T(1e-12) ? T(1e-12) : r);
    case Loss::Hinge: return T(1) - e * r < T(0) ? T(0) : T(1) - e * r;
    case Loss::kCount: break;
  }
  return T(0);
}

// d(term)/dr
template <class T>
NM_HD T loss_grad(Loss l, T p, T r, T e) {
  const T x = r - e, ax = x < T(0) ? -x : x;
  const T sgn = T((x > T(0)) - (x < T(0)));
  switch (l) {
    case Loss::Mse: return T(2) * x;
    case Loss::Mae: return sgn;
    case Loss::Mape: {
      const T ae = e < T(0) ? -e : e;
      return sgn / (ae > T(1e-8) ? ae : T(1e-8));
    }
    case Loss::Huber: return ax <= p ? x : p * sgn;
    case Loss::HuberModified: {
      const T y = e * r, h = T(1) - y > T(0) ? T(1) - y : T(0);
      return y >= T(-1) ? T(-2) * h * e : T(-4) * e;
    }
    case Loss::CrossEntropy: return r <= T(1e-12) ? T(0) : -e / r;  // NaN r: NaN (above)
    case Loss::Hinge: return T(1) - e * r > T(0) ? -e : T(0);
    case Loss::kCount: break;
  }
  return T(0);
}

// Softmax output with cross-entropy, fused: dL/dz_i = scale (a_i sum(e) - e_i), exact for any e.
template <class T>
NM_HD T softmax_xent_grad(T a, T e, T sum_e, T scale) { return scale * (a * sum_e - e); }

// ------------------------------------------------------------------------------------ merges
template <class T>
NM_HD T merge(MergeOp op, T u, T v) {
  switch (op) {
    case MergeOp::Additive: return u + v;
    case MergeOp::Multiplicative: return u * v;
    case MergeOp::Average: return T(0.5) * (u + v);
    case MergeOp::kCount: break;
  }
  return T(0);
}
// dy/du (pass v) and dy/dv (pass u, swapped): the merge is symmetric in its inputs
template <class T>
NM_HD T merge_partial(MergeOp op, T other) {
  switch (op) {
    case MergeOp::Additive: return T(1);
    case MergeOp::Multiplicative: return other;
    case MergeOp::Average: return T(0.5);
    case MergeOp::kCount: break;
  }
  return T(0);
}

// ------------------------------------------------------------------------------------ optimizers
// One parameter's update (torch.optim semantics; docs/engine.md). rate is the scheduled rate.
template <class T>
NM_HD void sgd(T& p, T g, T rate, T wd) { p -= rate * (g + wd * p); }

template <class T>
NM_HD void momentum(T& p, T g, T& m, T rate, T wd, T mu, bool first) {
  const T d = g + wd * p;
  m = first ? d : mu * m + d;
  p -= rate * m;
}

// step = rate / (1 - b1^t), sbc2 = sqrt(1 - b2^t); decoupled (AdamW): p *= 1 - rate wd first.
template <class M = StdMath, class T>
NM_HD void adam(T& p, T g, T& m, T& v, T rate, T wd, T b1, T b2, T eps, T step, T sbc2,
                bool decoupled) {
  if (decoupled) p *= T(1) - rate * wd;
  const T d = decoupled ? g : g + wd * p;
  m = b1 * m + (T(1) - b1) * d;
  v = b2 * v + (T(1) - b2) * d * d;
  p -= step * m / (M::sqrt(v) / sbc2 + eps);
}

// Global-norm clipping coefficient from the sum of squared gradients (clip_grad_norm_).
template <class M = StdMath, class T>
NM_HD T clip_coef(T sum_sq, T clip) {
  const T c = clip / (M::sqrt(sum_sq) + T(1e-6));
  return c < T(1) ? c : T(1);
}

}  // namespace nm::fm
