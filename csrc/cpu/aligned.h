// Vectors whose storage starts on a 64-byte boundary (a cache line): the executor's arenas,
// so the rows of a product's C start on line boundaries wherever the allocator puts them and
// the column cuts of cpu/gemm.cpp share no line between threads.
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace nm::cpu {

template <class T>
struct LineAllocator {
  using value_type = T;
  LineAllocator() = default;
  template <class U> LineAllocator(const LineAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, std::align_val_t(64)); }
  template <class U> bool operator==(const LineAllocator<U>&) const noexcept { return true; }
  template <class U> bool operator!=(const LineAllocator<U>&) const noexcept { return false; }
};

template <class T>
using LineVector = std::vector<T, LineAllocator<T>>;

}  // namespace nm::cpu
