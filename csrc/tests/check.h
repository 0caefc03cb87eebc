// A minimal test harness for the engine's C++ unit tests (ctest): CHECK records a failure with
// file and line and the test goes on; main returns non-zero when anything failed.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace nm::test {

inline int& failures() {
  static int n = 0;
  return n;
}

inline void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what.c_str());
  ++failures();
}

// Runs fn and reports whether it threw an exception of type E (anything else is a failure).
template <class E, class F>
bool throws(F&& fn) {
  try {
    fn();
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

}  // namespace nm::test

#define CHECK(cond) \
  do { if (!(cond)) ::nm::test::fail(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_NEAR(a, b, tol)                                                                  \
  do {                                                                                         \
    const double nm_a_ = (a), nm_b_ = (b);                                                     \
    if (!(std::abs(nm_a_ - nm_b_) <= (tol)))                                                   \
      ::nm::test::fail(__FILE__, __LINE__, std::string(#a " = ") + std::to_string(nm_a_) +    \
                                               ", " #b " = " + std::to_string(nm_b_));         \
  } while (0)
#define TEST_MAIN_RESULT() (::nm::test::failures() ? (std::fprintf(stderr, "%d failed\n", ::nm::test::failures()), 1) : 0)
