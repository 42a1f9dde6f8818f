#pragma once
// exp(x) for the router (softmax / sigmoid of router logits) with the same bits on the host and on
// a GPU: double arithmetic written as explicit fma (no contraction the compiler could choose), then
// one rounding to float. The CPU backend's route_topk and the CUDA routing kernel both use it, so
// both choose the same experts with the same weights on equal logits. Accuracy: within about
// 1e-16 relative before the rounding to float (degree-12 Taylor polynomial on |r| <= ln2 / 2).
#include <cmath>

#if defined(__CUDACC__)
#define FP4KIT_ROUTE_HD __host__ __device__
#else
#define FP4KIT_ROUTE_HD
#endif

namespace fp4kit::engine {

FP4KIT_ROUTE_HD inline float route_exp(float xf) {
  const double x = xf;
  if (!(x == x)) return xf;             // NaN
  if (x > 89.0) return INFINITY;        // above float's largest exp
  if (x < -104.0) return 0.0f;          // below half of float's smallest subnormal
  constexpr double kInvLn2 = 1.4426950408889634;       // 1 / ln 2
  constexpr double kLn2Hi = 0.6931471805599453;        // ln 2, double nearest
  constexpr double kLn2Lo = 2.3190468138462996e-17;    // ln 2 - kLn2Hi
#if defined(__CUDA_ARCH__)
  const double n = rint(x * kInvLn2);
  double r = fma(-n, kLn2Hi, x);
  r = fma(-n, kLn2Lo, r);
#else
  const double n = std::nearbyint(x * kInvLn2);
  double r = std::fma(-n, kLn2Hi, x);
  r = std::fma(-n, kLn2Lo, r);
#endif
  // e^r = sum r^i / i!, Horner from i = 12 down.
  constexpr double c[13] = {1.0,
                            1.0,
                            1.0 / 2,
                            1.0 / 6,
                            1.0 / 24,
                            1.0 / 120,
                            1.0 / 720,
                            1.0 / 5040,
                            1.0 / 40320,
                            1.0 / 362880,
                            1.0 / 3628800,
                            1.0 / 39916800,
                            1.0 / 479001600};
  double p = c[12];
  for (int i = 11; i >= 0; --i) {
#if defined(__CUDA_ARCH__)
    p = fma(p, r, c[i]);
#else
    p = std::fma(p, r, c[i]);
#endif
  }
  // p * 2^n: exact (n in [-151, 129], the result a normal double).
  const int e = static_cast<int>(n);
#if defined(__CUDA_ARCH__)
  return static_cast<float>(ldexp(p, e));
#else
  return static_cast<float>(std::ldexp(p, e));
#endif
}

}  // namespace fp4kit::engine
